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
  def __call__(self, x: Array, valid: Array | None = None, *, train: bool = False) -> Array:
    return nn.Dropout(self.rate, deterministic=not train,
                      rng_collection=self.rng_collection)(x)


class Homeostatic(nn.Module):
  """Base of the mechanisms that keep a duty cycle per feature.

  `stat_shape` is the trailing shape of the statistics, `(n,)` by default; its last
  axis may exceed the input's (e.g. attention keys up to the maximum length), in which
  case the input uses and updates its leading slice.
  """
  sparsity: float = 0.5
  period: int = 1000
  stat_shape: tuple[int, ...] | None = None

  def __post_init__(self):
    ops.num_winners(1, self.sparsity)
    ops.check_range("period", self.period, 1.0)
    super().__post_init__()

  def constants(self) -> dict[str, float]:
    """Descriptive constants stored beside the duty cycle, for diagnostics."""
    return {}

  def target(self, x: Array) -> float:
    """The target duty `k / n`, with n the size of the statistics' feature axis."""
    n = self.stat_shape[-1] if self.stat_shape else x.shape[-1]
    return ops.num_winners(n, self.sparsity) / n

  def duty_cycle(self, x: Array) -> Array:
    """Declares the state on first use and returns the duty of `x`'s features."""
    n = x.shape[-1]
    shape = tuple(self.stat_shape) if self.stat_shape else (n,)
    if shape[-1] < n:
      raise ValueError(f"stat_shape={shape} has fewer than the input's {n} features")
    target = self.target(x)
    duty = self.variable(HOMEOSTASIS, "duty", jnp.full, shape, target, jnp.float32)
    self.variable(HOMEOSTASIS, "steps", jnp.zeros, (), jnp.int32)
    for name, value in {"target": target, **self.constants()}.items():
      self.variable(HOMEOSTASIS, name, jnp.asarray, value, jnp.float32)
    return duty.value[..., :n]

  def winners(self, x: Array, valid: Array | None) -> tuple[int | Array, int]:
    """`(k, k_max)`: k counts among the valid features when `valid` varies along them."""
    k_max = ops.num_winners(x.shape[-1], self.sparsity)
    if valid is None or jnp.shape(valid)[-1] == 1:
      return k_max, k_max
    return ops.winners_per_vector(jnp.broadcast_to(valid, x.shape), self.sparsity), k_max

  def record(self, mask: Array, valid: Array | None, train: bool) -> None:
    """Updates the duty cycle with this step's winners, when training and mutable."""
    if not train or self.is_initializing() or not self.is_mutable_collection(HOMEOSTASIS):
      return
    n = mask.shape[-1]
    duty = self.get_variable(HOMEOSTASIS, "duty")
    updated = ops.update_duty_cycle(duty[..., :n], mask, valid, self.period)
    self.put_variable(HOMEOSTASIS, "duty", duty.at[..., :n].set(updated))
    self.put_variable(HOMEOSTASIS, "steps", self.get_variable(HOMEOSTASIS, "steps") + 1)


class KWTA(Homeostatic):
  """k-winners-take-all (`ops.kwta`), tracking how often each feature wins."""
  method: ops.Method = "exact"
  by: ops.By = "value"

  def __post_init__(self):
    ops.check_choice("method", self.method, ops.METHODS)
    ops.check_choice("by", self.by, ops.BY)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, valid: Array | None = None, *, train: bool = False) -> Array:
    self.duty_cycle(x)
    k, k_max = self.winners(x, valid)
    y, mask = ops.kwta(x, k, method=self.method, by=self.by, valid=valid, k_max=k_max)
    self.record(mask, valid, train)
    return y


class Boosted(Homeostatic):
  """Base of the mechanisms that weight features by `ops.boost_factors`."""
  beta: float = 1.0
  b_max: float = 10.0

  def __post_init__(self):
    ops.check_range("beta", self.beta, 0.0)
    ops.check_range("b_max", self.b_max, 1.0)
    super().__post_init__()

  def constants(self) -> dict[str, float]:
    return {"beta": self.beta, "b_max": self.b_max}

  def current_beta(self) -> Array:
    """The boost strength in use, from the state (after `duty_cycle` declared it)."""
    return self.get_variable(HOMEOSTASIS, "beta")


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

  @nn.compact
  def __call__(self, x: Array, valid: Array | None = None, *, train: bool = False) -> Array:
    duty = self.duty_cycle(x)
    k, k_max = self.winners(x, valid)
    y, mask = ops.rfb_kwta(x, duty, k, beta=self.current_beta(), b_max=self.b_max,
                           transmit=self.transmit, method=self.method, by=self.by,
                           valid=valid, k_max=k_max, target=self.target(x))
    self.record(mask, valid, train)
    return y


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

  def __post_init__(self):
    ops.check_choice("sampling", self.sampling, ops.SAMPLING)
    ops.check_choice("method", self.method, ops.METHODS)
    ops.check_choice("eval_scale", self.eval_scale, EVAL_SCALES)
    if self.eval_scale == "expected_gain" and self.sampling != "bernoulli":
      raise ValueError(f"eval_scale='expected_gain' needs sampling='bernoulli', not "
                       f"{self.sampling!r}: only Bernoulli keep probabilities are known")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, valid: Array | None = None, *, train: bool = False) -> Array:
    duty = self.duty_cycle(x)
    if not train:
      if self.eval_scale == "identity":
        return x
      w = ops.boost_factors(duty, self.target(x), self.current_beta(), self.b_max)
      gain = ops.keep_probabilities(w, self.sparsity, valid) / (1.0 - self.sparsity)
      return x * (gain if valid is None else jnp.where(valid, gain, 1.0)).astype(x.dtype)
    k, k_max = self.winners(x, valid)
    self.record(ops.kwta(x, k, method=self.method, valid=valid, k_max=k_max)[1], valid, train)
    y, _ = ops.smart_inhibition(x, duty, self.make_rng(self.rng_collection), self.sparsity,
                                beta=self.current_beta(), sampling=self.sampling,
                                b_max=self.b_max, valid=valid, target=self.target(x))
    return y


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
  def __call__(self, x: Array, valid: Array | None = None, *, train: bool = False) -> Array:
    for i, mechanism in enumerate(self.chain):
      layer = mechanism.module(stat_shape=self.stat_shape, name=f"{mechanism.name}_{i}")
      x = layer(x, valid, train=train)
    return x
