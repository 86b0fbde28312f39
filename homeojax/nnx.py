"""The mechanisms as Flax NNX modules: `KWTA`, `RFBKWTA`, `SmartInhibition`, `Dropout`
and `Site`, with the same options, maths (`homeojax.mechanisms`) and state as the Linen
modules.

Statistics are `Homeostasis` variables (an `nnx.Variable` subclass, like `nnx.BatchStat`),
so `nnx.Optimizer(model, tx, wrt=nnx.Param)` leaves them alone. A module trains when not
`deterministic` (`model.train()`, `model.eval()`): it then updates its statistics in
place, unless called with `update_stats=False`. Random keys come from `nnx.Rngs`, or a
call's `rngs=` (an `nnx.Rngs`, a stream or a key).

    import homeojax.nnx as hjnnx
    site = hjnnx.Site("rfb_kwta(sparsity=0.5), dropout(rate=0.1)", 256, rngs=nnx.Rngs(0))
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
from flax import nnx

from homeojax import mechanisms

Array = jax.Array
RngsArg = nnx.Rngs | nnx.RngStream | Array | None


class Homeostasis(nnx.Variable):
  """Activation statistics of a mechanism: updated while training, never optimized."""


def _key(rngs: RngsArg, collection: str) -> Array:
  """A fresh key from `rngs` (an `nnx.Rngs`, one of its streams, or a key itself)."""
  if isinstance(rngs, nnx.Rngs):
    return getattr(rngs, collection)()
  if isinstance(rngs, nnx.RngStream):
    return rngs()
  return rngs


class Mechanism(nnx.Module):
  """One mechanism (`homeojax.mechanisms`) as an NNX module: `KWTA`, `RFBKWTA`,
  `SmartInhibition` or `Dropout`, or any mechanism object given as `mechanism=`.

  `num_features` is n, or the statistics' trailing shape (its last axis may exceed the
  input's, e.g. attention keys up to the maximum length; `per_vector_valid` as for the
  Linen `MechanismLayer`). `options` are the mechanism's, checked the same way.
  """
  name = ""

  def __init__(self, num_features: int | tuple[int, ...], *, deterministic: bool = False,
               rngs: nnx.Rngs | None = None, mechanism: mechanisms.Mechanism | None = None,
               per_vector_valid: bool = False, **options: Any):
    self.mechanism = mechanism or mechanisms.make(self.name, options)
    shape = (num_features,) if isinstance(num_features, int) else tuple(num_features)
    self.deterministic = deterministic
    self.rngs = rngs
    state = self.mechanism.initial_state(shape, per_vector_valid)
    for name, value in state.items():
      setattr(self, name, Homeostasis(value))
    self.state_names = tuple(state)

  def __call__(self, x: Array, valid: Array | None = None, *,
               deterministic: bool | None = None, update_stats: bool = True,
               rngs: RngsArg = None) -> Array:
    """Applies the mechanism to `x`'s last axis; when training, updates the statistics
    (unless `update_stats=False`)."""
    train = not (self.deterministic if deterministic is None else deterministic)
    mechanism = self.mechanism
    state = self.state()
    if "duty" in state and state["duty"].shape[-1] < x.shape[-1]:
      raise ValueError(f"num_features={state['duty'].shape} has fewer than the input's "
                       f"{x.shape[-1]} features")
    key = None
    if train and mechanism.uses_rng:
      key = _key(rngs if rngs is not None else self.rngs, mechanism.rng_collection)
      if key is None:
        raise ValueError(f"{mechanism.name}: training draws random keys: pass "
                         "rngs=nnx.Rngs(...) when building it, or rngs= when calling it")
    y, record = mechanism.forward(x, valid, state, key, train)
    if train and update_stats and record is not None:
      self.set_state(mechanism.updated_state(state, record, valid))
    return y

  def state(self) -> dict[str, Array]:
    """The statistics' current values, by name."""
    return {name: getattr(self, name)[...] for name in self.state_names}

  def set_state(self, state: dict[str, Array]) -> None:
    for name, value in state.items():
      getattr(self, name)[...] = value


class KWTA(Mechanism):
  """k-winners-take-all (options: sparsity, period, method, by)."""
  name = "kwta"


class RFBKWTA(Mechanism):
  """Rare-features-boosting kWTA (options: sparsity, beta, b_max, beta_decay, period,
  transmit, method, by)."""
  name = "rfb_kwta"


class SmartInhibition(Mechanism):
  """Smart Inhibition (options: sparsity, beta, b_max, beta_decay, period, sampling,
  scaling, method, eval_scale, rng_collection); needs `rngs` to train."""
  name = "smart_inhibition"


class Dropout(Mechanism):
  """Inverted dropout with the mechanisms' call signature (`valid` is ignored)."""
  name = "dropout"

  def __init__(self, rate: float = 0.1, *, deterministic: bool = False,
               rngs: nnx.Rngs | None = None, rng_collection: str = "dropout"):
    super().__init__(1, deterministic=deterministic, rngs=rngs, rate=rate,
                     rng_collection=rng_collection)


MODULES: dict[str, type[Mechanism]] = {
    m.name: m for m in (Dropout, KWTA, RFBKWTA, SmartInhibition)}


class Site(nnx.Module):
  """A chain of mechanisms applied in order, given as for the Linen `homeojax.Site`: the
  compact syntax, such as `"rfb_kwta(sparsity=0.5), dropout(rate=0.1)"`, or mechanisms.

  `num_features` is n or the statistics' trailing shape. The empty chain is the identity.
  """

  def __init__(self, chain: str | mechanisms.Mechanism | tuple[mechanisms.Mechanism, ...],
               num_features: int | tuple[int, ...], *, deterministic: bool = False,
               rngs: nnx.Rngs | None = None, per_vector_valid: bool = False):
    self.chain = mechanisms.parse_chain(chain)
    self.mechanisms = nnx.List([
        Mechanism(num_features, deterministic=deterministic, rngs=rngs, mechanism=m,
                  per_vector_valid=per_vector_valid) for m in self.chain])

  def __call__(self, x: Array, valid: Array | None = None, *,
               deterministic: bool | None = None, update_stats: bool = True,
               rngs: RngsArg = None) -> Array:
    """Applies the chain; a key given as `rngs` is folded with each mechanism's index."""
    for i, mechanism in enumerate(self.mechanisms):
      key = jax.random.fold_in(rngs, i) if isinstance(rngs, jax.Array) else rngs
      x = mechanism(x, valid, deterministic=deterministic, update_stats=update_stats,
                    rngs=key)
    return x


def _stateful(module: nnx.Module) -> Iterator[tuple[str, Mechanism]]:
  for path, node in nnx.iter_graph(module):
    if isinstance(node, Mechanism) and node.state_names:
      yield "/".join(map(str, path)), node


def summarize(module: nnx.Module) -> dict[str, dict[str, Array]]:
  """Each stateful mechanism's diagnostics (`homeojax.mechanisms.Mechanism.diagnostics`),
  keyed by its path in `module`: the NNX counterpart of `homeojax.summarize`."""
  return {path: node.mechanism.diagnostics(node.state()) for path, node in _stateful(module)}


def end_epoch(module: nnx.Module) -> None:
  """Applies every mechanism's end-of-epoch change (`beta_decay`) in place."""
  for _, node in _stateful(module):
    node.set_state(node.mechanism.decayed(node.state()))

