"""Linen modules for the mechanisms (`homeojax.mechanisms`), and `Site`, a chain of them.

A mechanism's state lives in the `"homeostasis"` collection (each mechanism's
`initial_state` says what it holds). It changes only when `train=True` and the collection
is mutable; `init`, evaluation and decoding read it frozen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from homeojax.diagnostics import mechanism_states
from homeojax.mechanisms import Chain, Mechanism, parse_chain

Array = jax.Array
HOMEOSTASIS = "homeostasis"
Path = tuple[str, ...]


class MechanismLayer(nn.Module):
  """One mechanism applied to `x`'s last axis, its state in `"homeostasis"`.

  `stat_shape` is the trailing shape of the statistics, `(n,)` by default; its last axis
  may exceed the input's (attention keys up to the maximum length). `per_vector_valid`
  says the valid features vary per vector (attention keys): the target duty is then
  `1 - s`. A call with `train=True` updates the statistics and so needs the collection
  mutable; `update_stats=False` trains with them frozen instead.
  """
  mechanism: Mechanism
  stat_shape: tuple[int, ...] | None = None
  per_vector_valid: bool = False

  @nn.compact
  def __call__(self, x: Array, valid: Array | None = None, *, train: bool = False,
               update_stats: bool = True, rng: Array | None = None) -> Array:
    """Applies the mechanism; `rng` overrides the key drawn from its collection."""
    shape = tuple(self.stat_shape) if self.stat_shape else (x.shape[-1],)
    if shape[-1] < x.shape[-1]:
      raise ValueError(f"stat_shape={shape} has fewer than the input's {x.shape[-1]} features")
    mechanism = self.mechanism
    state = {name: self.variable(HOMEOSTASIS, name, lambda v=value: v).value
             for name, value in mechanism.initial_state(shape, self.per_vector_valid).items()}
    key = None
    if train and mechanism.uses_rng:
      key = rng if rng is not None else self.make_rng(mechanism.rng_collection)
    y, record = mechanism.forward(x, valid, state, key, train)
    if train and record is not None and not self.is_initializing():
      if not self.is_mutable_collection(HOMEOSTASIS):
        if update_stats:
          raise ValueError(
              f"{'/'.join(self.path) or mechanism.name}: train=True updates the "
              f"{HOMEOSTASIS!r} statistics, but the collection is immutable; apply with "
              f"mutable=[{HOMEOSTASIS!r}], or pass update_stats=False to train with "
              "frozen statistics")
      elif update_stats:
        for name, value in mechanism.updated_state(state, record, valid).items():
          self.put_variable(HOMEOSTASIS, name, value)
    return y


class Site(nn.Module):
  """A place in a network where a chain of mechanisms applies, in order.

  `chain` is a mechanism, a tuple of them, or the compact syntax of `parse_chain`
  (parsed once, here). The empty chain is the identity. `stat_shape` and
  `per_vector_valid` are as for `MechanismLayer`.
  """
  chain: Chain | Mechanism | str = ()
  stat_shape: tuple[int, ...] | None = None
  per_vector_valid: bool = False

  def __post_init__(self):
    object.__setattr__(self, "chain", parse_chain(self.chain))
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, valid: Array | None = None, *, train: bool = False,
               update_stats: bool = True) -> Array:
    """Applies the chain; `update_stats=False` trains with frozen statistics."""
    for i, mechanism in enumerate(self.chain):
      layer = MechanismLayer(mechanism, self.stat_shape, self.per_vector_valid,
                             name=f"{mechanism.name}_{i}")
      x = layer(x, valid, train=train, update_stats=update_stats)
    return x


def find_mechanisms(module: nn.Module, *args: Any, **kwargs: Any) -> dict[Path, Mechanism]:
  """The mechanism behind each state of `module`'s `"homeostasis"` collection, by path:
  found by tracing `module.init(key, *args, **kwargs)` (shapes only, no compute)."""
  found = {}

  def record(call, call_args, call_kwargs, context):
    if isinstance(context.module, MechanismLayer) and context.method_name == "__call__":
      if context.module.mechanism.initial_state((1,)):
        found[tuple(context.module.path)] = context.module.mechanism
    return call(*call_args, **call_kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, **kwargs))
  return found


def map_states(fn: Callable[[Mechanism, dict[str, Array]], dict[str, Array]],
               homeostasis: Any, mechanisms: dict[Path, Mechanism]) -> Any:
  """The state tree with each mechanism's state replaced by `fn(mechanism, state)`."""
  def replace(tree, path, value):
    return value if not path else {**tree, path[0]: replace(tree[path[0]], path[1:], value)}
  for path, mechanism, state in list(mechanism_states(homeostasis, mechanisms)):
    homeostasis = replace(homeostasis, path, fn(mechanism, state))
  return homeostasis


def end_epoch(homeostasis: Any, mechanisms: dict[Path, Mechanism]) -> Any:
  """The state at the end of an epoch: each mechanism changes what it declares
  (`Mechanism.decayed`: the boosting ones multiply `beta` by their `beta_decay`). Pure."""
  return map_states(lambda mechanism, state: mechanism.decayed(state), homeostasis,
                    mechanisms)
