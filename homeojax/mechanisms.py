"""The mechanisms as typed objects: each one's options, state, maths, diagnostics and decay.

A mechanism is a frozen dataclass (`Dropout`, `KWTA`, `RFBKWTA`, `SmartInhibition`),
validated when built. It declares everything the rest of the library needs to know:

- `initial_state(shape, per_vector_valid)`: its arrays in the `"homeostasis"` collection
  (empty for dropout);
- `forward(x, valid, state, key, train) -> (y, record)`: the pure maths, shared by the
  Linen (`homeojax.layers`) and NNX (`homeojax.nnx`) modules;
- `updated_state(state, record, valid)`: the statistics after a training step;
- `diagnostics(state)`: its scalar diagnostics (jit-friendly);
- `decayed(state)`: the state at the end of an epoch (`beta_decay`).

A chain is a tuple of them; `parse_chain` reads the compact syntax
`"rfb_kwta(sparsity=0.5, beta=1.0), dropout(rate=0.1)"`, with unnamed options taken from
`defaults` (the config's per-mechanism groups). `str(mechanism)` writes it back with every
option spelled out. The definitions are the project's spec, `shared/docs/homeostasis.md`
(version 2).
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from homeojax import ops, prng
from homeojax.diagnostics import entropy_ratio

Array = jax.Array
State = dict[str, Array]
EVAL_SCALES = ("identity", "expected_gain")


def _check_int(name: str, value: Any, low: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"{name}={value!r} must be an integer >= {low}")


@dataclasses.dataclass(frozen=True)
class Mechanism:
  """Base of the mechanisms: no state, no diagnostics, nothing to decay."""
  name: ClassVar[str] = ""
  uses_rng: ClassVar[bool] = False  # Whether training draws a key.
  eval_only: ClassVar[tuple[str, ...]] = ()  # Options that change only the eval output.
  watched: ClassVar[tuple[str, ...]] = ()  # Shares training warns of (diagnostics.WATCHED).

  def initial_state(self, shape: tuple[int, ...], per_vector_valid: bool = False) -> State:
    """The arrays kept for statistics of trailing shape `shape`; `per_vector_valid` says
    that the valid features vary per vector (attention keys)."""
    del shape, per_vector_valid
    return {}

  def forward(self, x: Array, valid: Array | None, state: State, key: Array | None,
              train: bool) -> tuple[Array, Any]:
    """The output for `x` and what `updated_state` needs (None: nothing to record)."""
    raise NotImplementedError

  def updated_state(self, state: State, record: Any, valid: Array | None) -> State:
    """The state after a training step whose `forward` returned `record`."""
    del record, valid
    return state

  def diagnostics(self, state: State) -> dict[str, Array]:
    """Scalar diagnostics of the state, by name."""
    del state
    return {}

  def decays(self) -> bool:
    """Whether `decayed` changes the state."""
    return False

  def decayed(self, state: State) -> State:
    """The state at the end of an epoch."""
    return state

  def settings(self) -> tuple[tuple[str, Any], ...]:
    """Every option that affects training: equal for mechanisms that train alike."""
    return tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self)
                 if f.name not in self.eval_only)

  def __str__(self) -> str:
    args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
    return f"{self.name}({args})"


@dataclasses.dataclass(frozen=True)
class Dropout(Mechanism):
  """Inverted dropout: keeps each entry with probability 1 - rate, scaled by 1/(1 - rate)."""
  rate: float = 0.1
  rng_collection: str = "dropout"

  name: ClassVar[str] = "dropout"
  uses_rng: ClassVar[bool] = True

  def __post_init__(self):
    ops.check_range("dropout rate", self.rate, 0.0, 1.0, high_open=True)

  def forward(self, x, valid, state, key, train):
    if not train or self.rate == 0.0:
      return x, None
    keep = prng.bernoulli(key, 1.0 - self.rate, x.shape)
    return jax.lax.select(keep, x / (1.0 - self.rate), jnp.zeros_like(x)), None


def winners(x: Array, valid: Array | None, sparsity: float) -> tuple[int | Array, int]:
  """`(k, k_max)` of `x`'s vectors: k counts among the valid features when `valid` varies
  along them."""
  k_max = ops.num_winners(x.shape[-1], sparsity)
  if valid is None or jnp.shape(valid)[-1] == 1:
    return k_max, k_max
  return ops.winners_per_vector(jnp.broadcast_to(valid, x.shape), sparsity), k_max


@dataclasses.dataclass(frozen=True)
class Homeostatic(Mechanism):
  """Base of the mechanisms that keep a duty cycle per feature.

  State: `duty` (EMA over `period` steps of each feature's activity, starting at the
  target), `steps` (updates so far) and the constant `target`: `k / n`, or `1 - s` where
  the valid features vary per vector (the share of visible keys that win). Statistics may
  be longer than the input (attention keys up to the maximum length): the input uses and
  updates their leading slice.
  """
  sparsity: float = 0.5
  period: int = 1000
  method: ops.Method = "exact"

  def __post_init__(self):
    ops.num_winners(1, self.sparsity, f"{self.name} sparsity")
    ops.check_range(f"{self.name} period", self.period, 1.0)
    ops.check_choice(f"{self.name} method", self.method, ops.METHODS)

  def target(self, n: int, per_vector_valid: bool) -> float:
    """The duty every feature would have if all won equally often."""
    return 1.0 - self.sparsity if per_vector_valid else ops.num_winners(n, self.sparsity) / n

  def initial_state(self, shape, per_vector_valid=False):
    target = self.target(shape[-1], per_vector_valid)
    return {"duty": jnp.full(shape, target, jnp.float32), "steps": jnp.zeros((), jnp.int32),
            "target": jnp.asarray(target, jnp.float32)}

  def updated_state(self, state, record, valid):
    mask = record
    n, duty = mask.shape[-1], state["duty"]
    updated = ops.update_duty_cycle(duty[..., :n], mask, valid, self.period)
    return {**state, "duty": duty.at[..., :n].set(updated), "steps": state["steps"] + 1}

  def diagnostics(self, state):
    duty, target = state["duty"], state["target"]
    return {"entropy_ratio": entropy_ratio(duty, target),
            "dead_share": jnp.mean(duty < target / 100.0),
            "realised_sparsity": 1.0 - jnp.mean(duty)}


@dataclasses.dataclass(frozen=True)
class KWTA(Homeostatic):
  """k-winners-take-all (`ops.kwta`), tracking how often each feature wins."""
  by: ops.By = "value"

  name: ClassVar[str] = "kwta"
  watched: ClassVar[tuple[str, ...]] = ("dead_share",)

  def __post_init__(self):
    super().__post_init__()
    ops.check_choice("kwta by", self.by, ops.BY)

  def forward(self, x, valid, state, key, train):
    k, k_max = winners(x, valid, self.sparsity)
    return ops.kwta(x, k, method=self.method, by=self.by, valid=valid, k_max=k_max)


@dataclasses.dataclass(frozen=True)
class Boosted(Homeostatic):
  """Base of the mechanisms that weight features by `ops.boost_factors`. The state adds
  `beta`, the boost strength in use (the option at init, multiplied by `beta_decay` at
  the end of every epoch), and the constant `b_max`."""
  beta: float = 1.0
  b_max: float = 10.0
  beta_decay: float = 1.0

  watched: ClassVar[tuple[str, ...]] = ("clip_share",)

  def __post_init__(self):
    super().__post_init__()
    ops.check_range(f"{self.name} beta", self.beta, 0.0)
    ops.check_range(f"{self.name} b_max", self.b_max, 1.0)
    ops.check_range(f"{self.name} beta_decay", self.beta_decay, 0.0, 1.0, low_open=True)

  def initial_state(self, shape, per_vector_valid=False):
    return {**super().initial_state(shape, per_vector_valid),
            "beta": jnp.asarray(self.beta, jnp.float32),
            "b_max": jnp.asarray(self.b_max, jnp.float32)}

  def boosts(self, state: State, n: int | None = None) -> Array:
    """The boost factor of each feature (the first n)."""
    duty = state["duty"] if n is None else state["duty"][..., :n]
    return ops.boost_factors(duty, state["target"], state["beta"], self.b_max)

  def diagnostics(self, state):
    boost = self.boosts(state)
    log_clip = math.log(self.b_max)
    return {**super().diagnostics(state), "boost_min": jnp.min(boost),
            "boost_max": jnp.max(boost), "beta": state["beta"],
            "clip_share": jnp.mean(jnp.abs(jnp.log(boost)) >= log_clip * (1 - 1e-6))}

  def decays(self):
    return self.beta_decay != 1.0

  def decayed(self, state):
    return {**state, "beta": state["beta"] * self.beta_decay}


@dataclasses.dataclass(frozen=True)
class RFBKWTA(Boosted):
  """Rare-features-boosting kWTA (`ops.rfb_kwta`); the same boost applies at eval.

  `diagnostics` adds `clip_share`, the share of features whose boost sits at `b_max` or
  `1 / b_max`: a high one means the boost no longer balances the features (spec v2).
  """
  transmit: ops.Transmit = "boosted"
  by: ops.By = "value"

  name: ClassVar[str] = "rfb_kwta"
  watched: ClassVar[tuple[str, ...]] = ("clip_share", "dead_share")

  def __post_init__(self):
    super().__post_init__()
    ops.check_choice("rfb_kwta transmit", self.transmit, ops.TRANSMIT)
    ops.check_choice("rfb_kwta by", self.by, ops.BY)

  def forward(self, x, valid, state, key, train):
    k, k_max = winners(x, valid, self.sparsity)
    return ops.rfb_kwta(x, state["duty"][..., :x.shape[-1]], k, beta=state["beta"],
                        b_max=self.b_max, transmit=self.transmit, method=self.method,
                        by=self.by, valid=valid, k_max=k_max, target=state["target"])


@dataclasses.dataclass(frozen=True)
class SmartInhibition(Boosted):
  """Smart Inhibition (`ops.smart_inhibition`): a dropout-like mask favouring features
  that rarely win a kWTA of the same sparsity (the duty cycle records those winners, by
  the threshold `method`: `statistical` by default, since they only feed the statistics
  and the exact threshold costs 16 counting passes over the input).

  `scaling="unbiased"` (version 2, default): water-filled keep probabilities p_i summing
  to (1 - s) per valid feature, `y = x * m / p`, so E[y] = x and eval is the identity;
  the state adds `keep_rate`, an EMA of the realised share kept. `scaling="uniform"`
  (version 1, only to reproduce its runs; Bernoulli sampling): `y = x * m / (1 - s)` with
  probabilities capped at 1, which is biased; `eval_scale="expected_gain"` then scales
  each feature at eval by what training passes on of it on average.
  """
  method: ops.Method = "statistical"  # The recorded winners only feed statistics.
  sampling: ops.Sampling = "bernoulli"
  scaling: str = "unbiased"
  eval_scale: str = "identity"
  rng_collection: str = "dropout"

  name: ClassVar[str] = "smart_inhibition"
  uses_rng: ClassVar[bool] = True
  eval_only: ClassVar[tuple[str, ...]] = ("eval_scale",)

  def __post_init__(self):
    super().__post_init__()
    ops.check_choice("smart_inhibition sampling", self.sampling, ops.SAMPLING)
    ops.check_choice("smart_inhibition scaling", self.scaling, ops.SCALING)
    ops.check_choice("smart_inhibition eval_scale", self.eval_scale, EVAL_SCALES)
    if self.scaling == "uniform" and self.sampling != "bernoulli":
      raise ValueError(f"smart_inhibition scaling='uniform' (version 1) needs "
                       f"sampling='bernoulli', not {self.sampling!r}")
    if self.eval_scale == "expected_gain" and self.scaling != "uniform":
      raise ValueError("smart_inhibition eval_scale='expected_gain' corrects version 1 "
                       f"(scaling='uniform'); with scaling={self.scaling!r} the identity "
                       "already is the expected training function")

  @property
  def version(self) -> int:
    return 1 if self.scaling == "uniform" else 2

  def target(self, n, per_vector_valid):
    return super().target(n, per_vector_valid and self.version == 2)

  def initial_state(self, shape, per_vector_valid=False):
    state = super().initial_state(shape, per_vector_valid)
    if self.version == 2:
      state["keep_rate"] = jnp.asarray(1.0 - self.sparsity, jnp.float32)
    return state

  def keep_probabilities(self, state: State, valid: Array | None, n: int) -> Array:
    """Each of the first n features' keep probability (per vector where `valid` varies)."""
    return ops.keep_probabilities(self.boosts(state, n), self.sparsity, valid,
                                  sampling=self.sampling, scaling=self.scaling)

  def forward(self, x, valid, state, key, train):
    n = x.shape[-1]
    if not train:
      if self.eval_scale == "identity":
        return x, None
      gain = self.keep_probabilities(state, valid, n) / (1.0 - self.sparsity)
      return x * (gain if valid is None else jnp.where(valid, gain, 1.0)).astype(x.dtype), None
    k, k_max = winners(x, valid, self.sparsity)
    active = ops.kwta(x, k, method=self.method, valid=valid, k_max=k_max)[1]
    y, kept = ops.smart_inhibition(x, state["duty"][..., :n], key, self.sparsity,
                                   beta=state["beta"], b_max=self.b_max,
                                   target=state["target"], sampling=self.sampling,
                                   scaling=self.scaling, valid=valid)
    return y, {"active": active, "kept": kept}

  def updated_state(self, state, record, valid):
    state = super().updated_state(state, record["active"], valid)
    if self.version == 2:
      kept = record["kept"]
      valid = jnp.ones(kept.shape, bool) if valid is None else jnp.broadcast_to(valid, kept.shape)
      rate = jnp.sum(kept & valid) / jnp.maximum(jnp.sum(valid), 1)
      state["keep_rate"] = state["keep_rate"] + (rate - state["keep_rate"]) / self.period
    return state

  def diagnostics(self, state):
    stats = super().diagnostics(state)
    if self.version == 2:
      p = self.keep_probabilities(state, None, state["duty"].shape[-1])
      stats.update(keep_rate=state["keep_rate"], keep_probability_min=jnp.min(p),
                   keep_probability_max=jnp.max(p), inverse_keep_probability_max=1 / jnp.min(p))
    return stats


MECHANISMS: dict[str, type[Mechanism]] = {
    m.name: m for m in (Dropout, KWTA, RFBKWTA, SmartInhibition)}
Chain = tuple[Mechanism, ...]
_MECHANISM_RE = re.compile(r"\s*(\w+)\s*(?:\(([^()]*)\))?\s*(,|$)")


def _parse_value(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # A bare word such as `statistical`.


def make(name: str, options: Mapping[str, Any],
         defaults: Mapping[str, Mapping[str, Any]] | None = None) -> Mechanism:
  """The mechanism `name` with `options`, the rest from `defaults[name]` (else the class
  defaults); raises ValueError naming an unknown mechanism, option or bad value."""
  ops.check_choice("mechanism", name, tuple(MECHANISMS))
  cls = MECHANISMS[name]
  allowed = {f.name for f in dataclasses.fields(cls)}
  given = {**((defaults or {}).get(name) or {}), **options}
  for key in given:
    if key not in allowed:
      raise ValueError(f"{name}: unknown option {key!r}; options are {sorted(allowed)}")
  return cls(**given)


def parse_chain(spec: str | Mechanism | tuple | list,
                defaults: Mapping[str, Mapping[str, Any]] | None = None) -> Chain:
  """Parses `"rfb_kwta(sparsity=0.5, beta=1.0), dropout(rate=0.1)"` into mechanisms;
  options not given come from `defaults[name]`. Mechanism objects pass through, and an
  empty string is the empty chain."""
  if isinstance(spec, Mechanism):
    return (spec,)
  if not isinstance(spec, str):
    return tuple(m for item in spec for m in parse_chain(item, defaults))
  chain, pos, text = [], 0, spec.strip()
  while pos < len(text):
    match = _MECHANISM_RE.match(text, pos)
    if not match or match.end() == pos:
      raise ValueError(f"cannot parse mechanism chain {spec!r} at {text[pos:]!r}")
    options = {}
    for item in filter(None, (a.strip() for a in (match.group(2) or "").split(","))):
      key, sep, value = item.partition("=")
      if not sep:
        raise ValueError(f"option {item!r} in {spec!r} is not key=value")
      options[key.strip()] = _parse_value(value.strip())
    chain.append(make(match.group(1), options, defaults))
    pos = match.end()
  return tuple(chain)


def chain_text(chain: Chain) -> str:
  """The chain in the compact syntax, every option spelled out (for checkpoints)."""
  return ", ".join(map(str, chain))
