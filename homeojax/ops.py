"""Pure homeostatic-sparsity ops: thresholds, kWTA, boosting, Smart Inhibition, duty cycles.

No Flax here. Every op takes activations `x` with the feature axis last and any leading
shape, and an optional boolean `valid` mask broadcastable to `x.shape` (use
`valid[..., None]` for a per-vector padding mask). Invalid entries never win and never
enter statistics. The definitions follow the project's mechanism spec
(`shared/docs/homeostasis.md`; summarised in README.md).
"""

from __future__ import annotations

import math
import statistics
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

from homeojax import prng

Array = jax.Array
Method = Literal["exact", "top_k", "statistical"]
By = Literal["value", "magnitude"]
Transmit = Literal["boosted", "raw"]
Sampling = Literal["bernoulli", "exact_k"]
Scaling = Literal["unbiased", "uniform"]

METHODS = ("exact", "top_k", "statistical")
BY = ("value", "magnitude")
TRANSMIT = ("boosted", "raw")
SAMPLING = ("bernoulli", "exact_k")
SCALING = ("unbiased", "uniform")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
  """Raises ValueError unless `value` is one of `choices`."""
  if value not in choices:
    raise ValueError(f"{name}={value!r} is not one of {choices}")


def check_range(name: str, value: float, low: float, high: float = math.inf,
                low_open: bool = False, high_open: bool = False) -> None:
  """Raises ValueError unless `low <= value <= high` (strict where `*_open`)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f"{name}={value!r} must be a number")
  too_low = value <= low if low_open else value < low
  too_high = value >= high if high_open else value > high
  if math.isnan(value) or too_low or too_high:
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    raise ValueError(f"{name}={value!r} is outside {interval}")


def num_winners(n: int, sparsity: float, name: str = "sparsity") -> int:
  """k = max(1, round((1 - sparsity) * n)), the number of winners among n features."""
  check_range(name, sparsity, 0.0, 1.0, low_open=True, high_open=True)
  return max(1, math.floor((1.0 - sparsity) * n + 0.5))


def _check_k(k: int, n: int) -> None:
  if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
    raise ValueError(f"k={k!r} must be an integer in [1, n={n}]")


def _valid_mask(valid: Array | None, shape: tuple[int, ...]) -> Array | None:
  if valid is None:
    return None
  try:
    return jnp.broadcast_to(jnp.asarray(valid, bool), shape)
  except ValueError:
    raise ValueError(
        f"valid has shape {jnp.shape(valid)}, not broadcastable to x.shape={shape}; "
        "use valid[..., None] for a per-vector mask") from None


def winners_per_vector(valid: Array, sparsity: float) -> Array:
  """Per-vector k, `max(1, round((1 - sparsity) * n_valid))`, shaped `[..., 1]`."""
  n_valid = jnp.sum(valid, axis=-1, keepdims=True)
  return jnp.maximum(1, jnp.floor((1.0 - sparsity) * n_valid + 0.5)).astype(jnp.int32)


def _sortable_key(x: Array) -> Array:
  """uint32 keys ordered as the float32 values are (-0.0 just below +0.0)."""
  u = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  return jnp.where(u >> 31 == 1, ~u, u | jnp.uint32(0x80000000))


def _from_sortable_key(key: Array) -> Array:
  u = jnp.where(key >> 31 == 1, key ^ jnp.uint32(0x80000000), ~key)
  return lax.bitcast_convert_type(u, jnp.float32)


def _radix_select(scores: Array, k: int | Array) -> Array:
  """The exact k-th largest value of each vector, its key found from the top bit down.

  Vectors of up to 1023 features take 16 passes of two bits: the counts of the keys at or
  above the three candidate prefixes are packed in bit fields of one uint32 and summed
  together. Longer vectors take 32 passes of one bit.
  """
  width = scores.shape[-1].bit_length()  # Bits of a field, enough for a count up to n.
  bits = 2 if 3 * width <= 32 else 1
  candidates = range(1, 2**bits)
  key = _sortable_key(scores)

  def set_bits(i, t):
    shift = (32 - bits * (i + 1)).astype(jnp.uint32)
    packed = sum((key >= (t | jnp.uint32(j) << shift)).astype(jnp.uint32) << (width * (j - 1))
                 for j in candidates)
    counts = jnp.sum(packed, axis=-1, keepdims=True, dtype=jnp.uint32)
    enough = [((counts >> (width * (j - 1))) & (2**width - 1)).astype(jnp.int32) >= k
              for j in candidates]  # Monotone in j: the number true is the chosen digit.
    return t | sum(e.astype(jnp.uint32) for e in enough) << shift

  t = lax.fori_loop(0, 32 // bits, set_bits, jnp.zeros(scores.shape[:-1] + (1,), jnp.uint32))
  return _from_sortable_key(t).astype(scores.dtype)


def threshold(scores: Array, k: int | Array, method: Method = "exact",
              valid: Array | None = None, k_max: int | None = None) -> Array:
  """The k-th largest score of each vector (shape `[..., 1]`), exact or estimated.

  `k` is an int, or an int array broadcastable to `[..., 1]` (a k per vector, e.g. from
  `winners_per_vector`; `top_k` then needs its static bound `k_max`).
  - `exact`: a radix select on the float bits, 16 linear counting passes (32 for n > 1023)
    and no sort (about 19x faster than `lax.top_k` on CPU at 64x32x128, k=90);
  - `top_k`: `lax.top_k`, the same value;
  - `statistical`: a linear-time estimate, `mean + std * Phi^-1(1 - k/n)` over the valid
    entries, exact in expectation for Gaussian scores.
  With fewer than k valid entries, every valid entry passes.
  """
  n = scores.shape[-1]
  per_vector = not isinstance(k, int)
  if per_vector and k_max is None and method == "top_k":
    raise ValueError("a per-vector k needs its static bound k_max with method='top_k'")
  if per_vector:
    if k_max is not None:
      _check_k(k_max, n)
  else:
    _check_k(k, n)
  check_choice("method", method, METHODS)
  if method in ("exact", "top_k") and valid is not None:
    scores = jnp.where(valid, scores, -jnp.inf)
  if method == "exact":
    return _radix_select(scores, k)
  if method == "top_k":
    top = lax.top_k(scores, k_max if per_vector else k)[0]
    if not per_vector:
      return top[..., k - 1:k]
    index = jnp.clip(jnp.broadcast_to(k, top.shape[:-1] + (1,)) - 1, 0, k_max - 1)
    return jnp.take_along_axis(top, index, axis=-1)
  s32 = scores.astype(jnp.float32)
  if valid is None:
    count = n
    mean = jnp.mean(s32, axis=-1, keepdims=True)
    var = jnp.var(s32, axis=-1, keepdims=True)
  else:
    count = jnp.maximum(jnp.sum(valid, axis=-1, keepdims=True), 1)
    mean = jnp.sum(jnp.where(valid, s32, 0.0), axis=-1, keepdims=True) / count
    var = jnp.sum(jnp.where(valid, (s32 - mean) ** 2, 0.0), axis=-1, keepdims=True) / count
  if per_vector or valid is not None:
    share = jnp.clip(k / count, 0.0, 1.0)
    z = jnp.where(share < 1.0, jax.scipy.special.ndtri(1.0 - share), -jnp.inf)
  elif k == n:
    z = -math.inf
  else:
    z = statistics.NormalDist().inv_cdf(1.0 - k / n)
  return (mean + jnp.sqrt(var) * z).astype(scores.dtype)


def kwta(x: Array, k: int | Array, *, method: Method = "exact", by: By = "value",
         valid: Array | None = None, k_max: int | None = None) -> tuple[Array, Array]:
  """k-winners-take-all along the last axis: returns `(x * mask, mask)`.

  `mask` is True where the score (`x`, or `|x|` with `by="magnitude"`) is at least the
  k-th largest of its vector. The gradient is the mask: it flows to winners only, and
  not through the selection. With `exact` or `top_k`, ties at the threshold may give
  more than k winners; `statistical` keeps about k (see `threshold`).
  """
  check_choice("by", by, BY)
  # A per-vector mask (`[..., 1]`) drops whole vectors, whose threshold is never used.
  per_feature = valid is not None and jnp.shape(valid)[-1] != 1
  valid = _valid_mask(valid, x.shape)
  scores = lax.stop_gradient(x if by == "value" else jnp.abs(x))
  mask = scores >= threshold(scores, k, method, valid if per_feature else None, k_max)
  if valid is not None:
    mask = mask & valid
  return jnp.where(mask, x, jnp.zeros((), x.dtype)), mask


def boost_factors(duty: Array, target: float, beta: float, b_max: float = 10.0) -> Array:
  """b = exp(beta * (target - duty)) clipped to [1/b_max, b_max]; never overflows."""
  if isinstance(beta, (int, float)):
    check_range("beta", beta, 0.0)
  if isinstance(b_max, (int, float)):
    check_range("b_max", b_max, 1.0)
  log_b_max = math.log(b_max) if isinstance(b_max, (int, float)) else jnp.log(b_max)
  exponent = beta * (target - jnp.asarray(duty, jnp.float32))
  return jnp.exp(jnp.clip(exponent, -log_b_max, log_b_max))


def rfb_kwta(x: Array, duty: Array, k: int | Array, *, beta: float, b_max: float = 10.0,
             transmit: Transmit = "boosted", method: Method = "exact", by: By = "value",
             valid: Array | None = None, k_max: int | None = None,
             target: float | None = None) -> tuple[Array, Array]:
  """Rare-features-boosting kWTA: winners of `x * b`, with `b = boost_factors(duty)`.

  `duty` is broadcastable to `x.shape` (usually `[n]`). Returns `(y, mask)` with
  `y = x * b * mask` (`transmit="boosted"`) or `y = x * mask` (`"raw"`). The boost is a
  constant for the gradient. The boost's `target` duty defaults to `k / n` (`k_max / n`
  with a per-vector k).
  """
  check_choice("transmit", transmit, TRANSMIT)
  n = x.shape[-1]
  if target is None:
    if not isinstance(k, int) and k_max is None:
      raise ValueError("a per-vector k needs k_max (or an explicit target) for the boost's "
                       "target duty")
    k_static = k if isinstance(k, int) else k_max
    _check_k(k_static, n)
    target = k_static / n
  b = lax.stop_gradient(boost_factors(duty, target, beta, b_max)).astype(x.dtype)
  boosted, mask = kwta(x * b, k, method=method, by=by, valid=valid, k_max=k_max)
  if transmit == "boosted":
    return boosted, mask
  return jnp.where(mask, x, jnp.zeros((), x.dtype)), mask


def smart_inhibition(x: Array, duty: Array, key: Array, sparsity: float, *, beta: float,
                     b_max: float = 10.0, target: float | Array | None = None,
                     sampling: Sampling = "bernoulli", scaling: Scaling = "unbiased",
                     valid: Array | None = None) -> tuple[Array, Array]:
  """A dropout-like random mask that favours rarely active features: `(y, mask)`.

  Feature i has preference `w_i = boost_factors(duty)_i` (target default `k / n`) and keep
  probability `p_i` from `keep_probabilities`. `bernoulli` keeps each feature
  independently; `exact_k` keeps exactly k = round((1 - s) * n_valid) per vector
  (`systematic_sample`). `scaling="unbiased"` returns `x * mask / p`, so E[y] = x;
  `"uniform"` (version 1) returns `x * mask / (1 - s)`.
  """
  check_choice("sampling", sampling, SAMPLING)
  check_choice("scaling", scaling, SCALING)
  n = x.shape[-1]
  target = num_winners(n, sparsity) / n if target is None else target
  w = lax.stop_gradient(boost_factors(duty, target, beta, b_max))
  valid_x = _valid_mask(valid, x.shape)
  p = keep_probabilities(w, sparsity, valid, sampling=sampling, scaling=scaling)
  if sampling == "bernoulli":
    mask = prng.bernoulli(key, p, x.shape)
  else:
    mask = systematic_sample(key, p, x.shape)
  if valid_x is not None:
    mask = mask & valid_x
  if scaling == "uniform":
    scale = jnp.asarray(1.0 / (1.0 - sparsity), x.dtype)
  else:
    scale = (1.0 / jnp.where(mask, p, 1.0)).astype(x.dtype)
  return jnp.where(mask, x * scale, jnp.zeros((), x.dtype)), mask


EXACT_K_CERTAIN = 1.0 - 1e-3  # exact_k keeps features at least this likely always.


def keep_probabilities(w: Array, sparsity: float, valid: Array | None = None, *,
                       sampling: Sampling = "bernoulli",
                       scaling: Scaling = "unbiased") -> Array:
  """Smart Inhibition's keep probability of each feature, from its preference `w`.

  `unbiased` (version 2): water-filled, `p_i = min(1, c * w_i)` with c per vector so that
  the valid probabilities sum to `(1 - s) * n_valid` (to k = round of it for `exact_k`,
  which also rounds probabilities above `EXACT_K_CERTAIN` up to 1). `uniform` (version 1):
  `min(1, (1 - s) * n * w_i / sum(w))`, whose sum falls short where the cap binds.
  A `valid` mask that varies along the features restricts n and the sums to the valid
  features of each vector; without one (or with a per-vector `[..., 1]` mask), there is
  one probability per feature.
  """
  check_choice("scaling", scaling, SCALING)
  per_feature = valid is None or jnp.shape(valid)[-1] == 1
  if per_feature:
    n = w.shape[-1]
    valid = None
  else:
    valid = jnp.broadcast_to(valid, jnp.broadcast_shapes(jnp.shape(valid), w.shape))
    n = jnp.sum(valid, axis=-1, keepdims=True)
  if scaling == "uniform":
    w_sum = jnp.sum(w if valid is None else jnp.where(valid, w, 0.0), axis=-1, keepdims=True)
    return jnp.minimum(1.0, (1.0 - sparsity) * n * w / jnp.maximum(w_sum, 1e-30))
  if sampling == "exact_k":
    total = num_winners(n, sparsity) if valid is None else winners_per_vector(valid, sparsity)
    return water_fill(w, total, valid, certain=EXACT_K_CERTAIN)
  return water_fill(w, (1.0 - sparsity) * n, valid)


def water_fill(w: Array, total: float | Array, valid: Array | None = None,
               certain: float = 1.0) -> Array:
  """`p_i = min(1, c * w_i)` along the last axis, with c > 0 per vector such that the
  valid `p` sum to `total` (at most the number of valid features); invalid ones get 0.

  Features whose share `c * w_i` reaches `certain` get 1. Found by raising c and capping
  until no further feature caps (at most n rounds, each two reductions).
  """
  w = lax.stop_gradient(jnp.asarray(w, jnp.float32))
  if valid is not None:
    w = jnp.where(valid, w, 0.0)
  total = jnp.asarray(total, jnp.float32)

  def level(capped: Array) -> Array:
    free = jnp.sum(jnp.where(capped, 0.0, w), axis=-1, keepdims=True)
    return (total - jnp.sum(capped, axis=-1, keepdims=True)) / jnp.maximum(free, 1e-30)

  def cap_more(carry):
    capped, _, rounds = carry
    more = capped | (level(capped) * w >= certain) & (w > 0)
    return more, jnp.any(more != capped), rounds + 1

  capped = lax.while_loop(lambda carry: carry[1] & (carry[2] <= w.shape[-1]), cap_more,
                          (jnp.zeros(w.shape, bool), jnp.array(True), 0))[0]
  return jnp.where(capped, 1.0, jnp.minimum(level(capped) * w, 1.0))


def systematic_sample(key: Array, p: Array, shape: tuple[int, ...]) -> Array:
  """A boolean mask of `shape` keeping exactly `round(sum(p))` features of every vector,
  feature i with probability `p_i` (`p` broadcastable to `shape`, each vector's sum an
  integer, features with `p_i = 1` always kept).

  Systematic sampling: one uniform offset u per vector picks the features whose interval
  of the cumulative `p` holds one of u, u + 1, u + 2, ... The features are laid out in a
  random order drawn once per call (shared by the call's vectors), so which features are
  coupled changes from call to call; within a vector the draws are negatively dependent,
  most between features adjacent in that order (two with `p_i + p_j <= 1` are never both
  kept). u lies on a grid of step `2**-(24 - n.bit_length())`, so that the count is exact
  in float32; the inclusion probabilities match `p` to within that step.
  """
  n = shape[-1]
  order_key, offset_key = jax.random.split(key)
  order = jax.random.permutation(order_key, n)
  p = jnp.asarray(p, jnp.float32)
  certain = p >= 1.0
  q = jnp.where(certain, 0.0, p)[..., order]
  rest = jnp.round(jnp.sum(p, axis=-1, keepdims=True)) - jnp.sum(certain, -1, keepdims=True)
  cum = jnp.cumsum(q, axis=-1)
  last = cum[..., -1:]
  cum = jnp.where(last > 0, rest * (cum / jnp.where(last > 0, last, 1.0)), 0.0)  # Ends at rest.
  before = jnp.concatenate([jnp.zeros_like(cum[..., :1]), cum[..., :-1]], axis=-1)
  inverse = jnp.argsort(order)
  cum, before = cum[..., inverse], before[..., inverse]  # Back to the features' order.
  grid = 2 ** max(1, 24 - n.bit_length())
  u = jax.random.randint(offset_key, shape[:-1] + (1,), 0, grid).astype(jnp.float32) / grid
  return certain | (jnp.ceil(cum - u) > jnp.ceil(before - u))


def update_duty_cycle(duty: Array, mask: Array, valid: Array | None,
                      period: int) -> Array:
  """One EMA step, `duty + (freq - duty) / period`, of each feature's activity.

  `duty` has the trailing shape of `mask`; `freq` is the share of valid vectors in which
  the feature is active, over all leading axes. Features with no valid entry keep
  their duty.
  """
  if isinstance(period, bool) or not isinstance(period, (int, float)) or period < 1:
    raise ValueError(f"period={period!r} must be a number >= 1")
  axes = tuple(range(mask.ndim - duty.ndim))
  active = mask.astype(jnp.float32)
  if valid is None:
    freq = jnp.mean(active, axis=axes)
    return duty + (freq - duty) / period
  valid = _valid_mask(valid, mask.shape)
  count = jnp.sum(valid, axis=axes, dtype=jnp.float32)
  freq = jnp.sum(jnp.where(valid, active, 0.0), axis=axes) / jnp.maximum(count, 1.0)
  return jnp.where(count > 0, duty + (freq - duty) / period, duty)
