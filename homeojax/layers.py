"""Linen modules that own the `"homeostasis"` state, and `Site`, a configured chain of them.

State per mechanism, in the `"homeostasis"` collection: `duty` (EMA of each feature's
activity, starting at `target = k / n`), `steps` (number of updates), the constant
`target`, and for the boosting mechanisms `b_max` and `beta`, the boost strength in use:
the module's `beta` at init, scaled by every `decay_beta` since. The duty cycle changes
only when `train=True` and the collection is mutable; `init`, evaluation and decoding read
the state frozen.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from homeojax import ops

Array = jax.Array
HOMEOSTASIS = "homeostasis"


class Dropout(nn.Module):
  """Inverted dropout with the mechanisms' call signature (`valid` is ignored)."""
  rate: float = 0.1
  rng_collection: str = "dropout"

  def __post_init__(self):
    ops.check_range("rate", self.rate, 0.0, 1.0, high_open=True)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, valid: Array | None = None, *, train: bool = False,
               update_stats: bool = True, rng: Array | None = None) -> Array:
    del valid, update_stats  # No statistics.
    return nn.Dropout(self.rate, deterministic=not train,
                      rng_collection=self.rng_collection)(x, rng=rng)


def winners(x: Array, valid: Array | None, sparsity: float) -> tuple[int | Array, int]:
  """`(k, k_max)` of `x`'s vectors: k counts among the valid features when `valid` varies
  along them."""
  k_max = ops.num_winners(x.shape[-1], sparsity)
  if valid is None or jnp.shape(valid)[-1] == 1:
    return k_max, k_max
  return ops.winners_per_vector(jnp.broadcast_to(valid, x.shape), sparsity), k_max


def updated_statistics(state: dict[str, Array], mask: Array, valid: Array | None,
                       period: int) -> dict[str, Array]:
  """The `duty` and `steps` after a step whose winners are `mask`; `mask`'s n features
  update the leading slice of a longer duty vector (attention keys up to max_len)."""
  n, duty = mask.shape[-1], state["duty"]
  updated = ops.update_duty_cycle(duty[..., :n], mask, valid, period)
  return {"duty": duty.at[..., :n].set(updated), "steps": state["steps"] + 1}


class Homeostatic(nn.Module):
  """Base of the mechanisms that keep a duty cycle per feature.

  `stat_shape` is the trailing shape of the statistics, `(n,)` by default; its last
  axis may exceed the input's (e.g. attention keys up to the maximum length), in which
  case the input uses and updates its leading slice.

  The maths is `forward`, a pure function of the input and the state, which the NNX
  modules (`homeojax.nnx`) share. A call with `train=True` updates the statistics and so
  needs the `"homeostasis"` collection mutable; `update_stats=False` trains with them
  frozen instead.
  """
  sparsity: float = 0.5
  period: int = 1000
  stat_shape: tuple[int, ...] | None = None

  uses_rng = False  # Whether training draws a key (from `rng_collection`).

  def __post_init__(self):
    ops.num_winners(1, self.sparsity)
    ops.check_range("period", self.period, 1.0)
    super().__post_init__()

  def constants(self) -> dict[str, float]:
    """Descriptive constants stored beside the duty cycle, for diagnostics."""
    return {}

  def initial_state(self, shape: tuple[int, ...]) -> dict[str, Array]:
    """The state for statistics of trailing shape `shape`: duty cycles at the target
    `k / n` (n = `shape[-1]`), no steps, and the constants."""
    target = ops.num_winners(shape[-1], self.sparsity) / shape[-1]
    return {"duty": jnp.full(shape, target, jnp.float32), "steps": jnp.zeros((), jnp.int32),
            **{name: jnp.asarray(value, jnp.float32)
               for name, value in {"target": target, **self.constants()}.items()}}

  def forward(self, x: Array, valid: Array | None, state: dict[str, Array],
              key: Array | None, train: bool) -> tuple[Array, Array | None]:
    """The output for `x` and the winners to record (None: nothing to record), given the
    state (`duty` of full length, `target`, ...) and, when `uses_rng` and training, a key."""
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: Array, valid: Array | None = None, *, train: bool = False,
               update_stats: bool = True, rng: Array | None = None) -> Array:
    """Applies the mechanism to `x`'s last axis; `rng` overrides the drawn key."""
    shape = tuple(self.stat_shape) if self.stat_shape else (x.shape[-1],)
    if shape[-1] < x.shape[-1]:
      raise ValueError(f"stat_shape={shape} has fewer than the input's {x.shape[-1]} features")
    state = {name: self.variable(HOMEOSTASIS, name, lambda v=value: v).value
             for name, value in self.initial_state(shape).items()}
    key = None
    if train and self.uses_rng:
      key = rng if rng is not None else self.make_rng(self.rng_collection)
    y, mask = self.forward(x, valid, state, key, train)
    if train and mask is not None and not self.is_initializing():
      if not self.is_mutable_collection(HOMEOSTASIS):
        if update_stats:
          raise ValueError(
              f"{'/'.join(self.path) or type(self).__name__}: train=True updates the "
              f"{HOMEOSTASIS!r} statistics, but the collection is immutable; apply with "
              f"mutable=[{HOMEOSTASIS!r}], or pass update_stats=False to train with "
              "frozen statistics")
      elif update_stats:
        for name, value in updated_statistics(state, mask, valid, self.period).items():
          self.put_variable(HOMEOSTASIS, name, value)
    return y


def _target(state: dict[str, Array], sparsity: float) -> float:
  """The target duty `k / n` of the statistics' full feature axis (a static number)."""
  n = state["duty"].shape[-1]
  return ops.num_winners(n, sparsity) / n


class KWTA(Homeostatic):
  """k-winners-take-all (`ops.kwta`), tracking how often each feature wins."""
  method: ops.Method = "exact"
  by: ops.By = "value"

  def __post_init__(self):
    ops.check_choice("method", self.method, ops.METHODS)
    ops.check_choice("by", self.by, ops.BY)
    super().__post_init__()

  def forward(self, x, valid, state, key, train):
    k, k_max = winners(x, valid, self.sparsity)
    return ops.kwta(x, k, method=self.method, by=self.by, valid=valid, k_max=k_max)


class Boosted(Homeostatic):
  """Base of the mechanisms that weight features by `ops.boost_factors`. The boost
  strength in use is the state's `beta`: the module's `beta` at init, scaled by every
  `decay_beta` since."""
  beta: float = 1.0
  b_max: float = 10.0

  def __post_init__(self):
    ops.check_range("beta", self.beta, 0.0)
    ops.check_range("b_max", self.b_max, 1.0)
    super().__post_init__()

  def constants(self) -> dict[str, float]:
    return {"beta": self.beta, "b_max": self.b_max}


def decay_beta(homeostasis: Any, factor: float | Array) -> Any:
  """The state with every boosting mechanism's `beta` multiplied by `factor` (the spec's
  per-epoch `beta_decay`); everything else unchanged. Pure and jit-friendly."""
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: leaf * factor if getattr(path[-1], "key", None) == "beta" else leaf,
      homeostasis)


class RFBKWTA(Boosted):
  """Rare-features-boosting kWTA (`ops.rfb_kwta`); the same boost applies at eval."""
  transmit: ops.Transmit = "boosted"
  method: ops.Method = "exact"
  by: ops.By = "value"

  def __post_init__(self):
    ops.check_choice("transmit", self.transmit, ops.TRANSMIT)
    ops.check_choice("method", self.method, ops.METHODS)
    ops.check_choice("by", self.by, ops.BY)
    super().__post_init__()

  def forward(self, x, valid, state, key, train):
    k, k_max = winners(x, valid, self.sparsity)
    return ops.rfb_kwta(x, state["duty"][..., :x.shape[-1]], k, beta=state["beta"],
                        b_max=self.b_max, transmit=self.transmit, method=self.method,
                        by=self.by, valid=valid, k_max=k_max,
                        target=_target(state, self.sparsity))


EVAL_SCALES = ("identity", "expected_gain")


class SmartInhibition(Boosted):
  """Smart Inhibition (`ops.smart_inhibition`) when training.

  The duty cycle records the winners of a kWTA of the same sparsity on `x` (threshold
  `method`), so rarely strong features are kept more often. At eval, `eval_scale`
  "identity" (the spec's) passes `x` on; "expected_gain" (Bernoulli sampling only) scales
  each feature by what training passes on of it on average, `keep_i / (1 - s)`, since the
  uniform `1 / (1 - s)` rescaling matches only a uniform keep rate (docs/results.md).
  """
  sampling: ops.Sampling = "bernoulli"
  method: ops.Method = "exact"
  eval_scale: str = "identity"
  rng_collection: str = "dropout"

  uses_rng = True

  def __post_init__(self):
    ops.check_choice("sampling", self.sampling, ops.SAMPLING)
    ops.check_choice("method", self.method, ops.METHODS)
    ops.check_choice("eval_scale", self.eval_scale, EVAL_SCALES)
    if self.eval_scale == "expected_gain" and self.sampling != "bernoulli":
      raise ValueError(f"eval_scale='expected_gain' needs sampling='bernoulli', not "
                       f"{self.sampling!r}: only Bernoulli keep probabilities are known")
    super().__post_init__()

  def forward(self, x, valid, state, key, train):
    duty, target = state["duty"][..., :x.shape[-1]], _target(state, self.sparsity)
    if not train:
      if self.eval_scale == "identity":
        return x, None
      w = ops.boost_factors(duty, target, state["beta"], self.b_max)
      gain = ops.keep_probabilities(w, self.sparsity, valid) / (1.0 - self.sparsity)
      return x * (gain if valid is None else jnp.where(valid, gain, 1.0)).astype(x.dtype), None
    k, k_max = winners(x, valid, self.sparsity)
    mask = ops.kwta(x, k, method=self.method, valid=valid, k_max=k_max)[1]
    y, _ = ops.smart_inhibition(x, duty, key, self.sparsity, beta=state["beta"],
                                sampling=self.sampling, b_max=self.b_max, valid=valid,
                                target=target)
    return y, mask


MECHANISMS: dict[str, type[nn.Module]] = {
    "dropout": Dropout,
    "kwta": KWTA,
    "rfb_kwta": RFBKWTA,
    "smart_inhibition": SmartInhibition,
}
_INTERNAL_FIELDS = {"parent", "name", "stat_shape"}
# Options that change only the eval output: a checkpoint resumes or evaluates with any value.
EVAL_ONLY_OPTIONS = {"eval_scale"}


@dataclasses.dataclass(frozen=True)
class Mechanism:
  """One mechanism of a chain, as data: a name from `MECHANISMS` and its options."""
  name: str
  options: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    ops.check_choice("mechanism", self.name, tuple(MECHANISMS))
    allowed = {f.name for f in dataclasses.fields(MECHANISMS[self.name])} - _INTERNAL_FIELDS
    for key, _ in self.options:
      if key not in allowed:
        raise ValueError(f"{self.name}: unknown option {key!r}; options are {sorted(allowed)}")
    self.module()  # Validates the values.

  def module(self, **kwargs: Any) -> nn.Module:
    """The Linen module this mechanism describes."""
    cls = MECHANISMS[self.name]
    if not issubclass(cls, Homeostatic):
      kwargs.pop("stat_shape", None)
    return cls(**dict(self.options), **kwargs)

  def __str__(self) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in self.options)
    return f"{self.name}({args})" if args else self.name


_MECHANISM_RE = re.compile(r"\s*(\w+)\s*(?:\(([^()]*)\))?\s*(,|$)")


def _parse_value(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # A bare word such as `statistical`.


def parse_chain(spec: str | Mechanism | tuple | list) -> tuple[Mechanism, ...]:
  """Parses `"rfb_kwta(sparsity=0.5, beta=1.0), dropout(rate=0.1)"` into mechanisms.

  Accepts an already parsed chain too. An empty string is the empty chain.
  """
  if isinstance(spec, Mechanism):
    return (spec,)
  if not isinstance(spec, str):
    return tuple(m for item in spec for m in parse_chain(item))
  chain, pos, text = [], 0, spec.strip()
  while pos < len(text):
    match = _MECHANISM_RE.match(text, pos)
    if not match or match.end() == pos:
      raise ValueError(f"cannot parse mechanism chain {spec!r} at {text[pos:]!r}")
    options = []
    for item in filter(None, (a.strip() for a in (match.group(2) or "").split(","))):
      key, sep, value = item.partition("=")
      if not sep:
        raise ValueError(f"option {item!r} in {spec!r} is not key=value")
      options.append((key.strip(), _parse_value(value.strip())))
    chain.append(Mechanism(match.group(1), tuple(options)))
    pos = match.end()
  return tuple(chain)


def chain_settings(spec: str | Mechanism | tuple | list) -> tuple[tuple[str, tuple], ...]:
  """Each mechanism's name and every option that affects training, defaults included:
  equal for chains that train alike."""
  settings = []
  for mechanism in parse_chain(spec):
    module = mechanism.module()
    settings.append((mechanism.name, tuple(
        (f.name, getattr(module, f.name)) for f in dataclasses.fields(module)
        if f.name not in _INTERNAL_FIELDS | EVAL_ONLY_OPTIONS)))
  return tuple(settings)


def with_option(spec: str | Mechanism | tuple | list, name: str, key: str,
                value: Any) -> tuple[Mechanism, ...]:
  """The chain with option `key=value` set on every mechanism called `name`."""
  return tuple(
      Mechanism(m.name, tuple(o for o in m.options if o[0] != key) + ((key, value),))
      if m.name == name else m for m in parse_chain(spec))


class Site(nn.Module):
  """A place in a network where a chain of mechanisms applies, in order.

  `chain` is a tuple of `Mechanism` or a spec string for `parse_chain`. The empty chain
  is the identity.
  """
  chain: tuple[Mechanism, ...] | str = ()
  stat_shape: tuple[int, ...] | None = None

  def __post_init__(self):
    object.__setattr__(self, "chain", parse_chain(self.chain))
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, valid: Array | None = None, *, train: bool = False,
               update_stats: bool = True) -> Array:
    """Applies the chain; `update_stats=False` trains with frozen statistics."""
    for i, mechanism in enumerate(self.chain):
      layer = mechanism.module(stat_shape=self.stat_shape, name=f"{mechanism.name}_{i}")
      x = layer(x, valid, train=train, update_stats=update_stats)
    return x
