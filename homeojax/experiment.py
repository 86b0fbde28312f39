"""An experiment built from its config once: the model, its mechanisms, the optimizer, the
pure train and eval steps, and the (sharded) state. Training, evaluation, the benchmarks
and the tests all start from `build(config, mesh)`.

The train step is one pure, jitted function `(state, batch) -> (state, metrics)`. It
threads params, optimizer state and the `"homeostasis"` collection; the homeostasis
state is never optimized. Arrays are laid out on a `Mesh` with a `data` axis
(`NamedSharding`): batches are split over it, params replicated (or sharded with
`mesh.fsdp`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from homeojax import config as config_lib
from homeojax import optim, sharding
from homeojax.data.batching import Batcher
from homeojax.data.tokenizer import PAD_ID
from homeojax.layers import HOMEOSTASIS, find_mechanisms
from homeojax.mechanisms import Mechanism
from homeojax.model import Transformer, TransformerConfig

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  """Everything a train step reads and writes."""
  step: Array
  params: Any
  opt_state: Any
  homeostasis: Any


def token_loss(logits_BxTxV: Array, targets_BxT: Array, smoothing: float) -> tuple[Array, Array]:
  """Per-token label-smoothed cross-entropy, shifted so a perfect model scores 0, and
  correctness (the target's logit is the largest); both zero at padding.

  With smoothed labels `q = (1 - e) * onehot + e / V`, the cross-entropy is
  `logsumexp(z) - (1 - e) * z_target - (e / V) * sum(z)`: no [B, T, V] one-hot is built.
  """
  vocab = logits_BxTxV.shape[-1]
  logits = logits_BxTxV.astype(jnp.float32)
  target_logit = jnp.take_along_axis(logits, targets_BxT[..., None], axis=-1)[..., 0]
  loss = (jax.nn.logsumexp(logits, axis=-1) - (1.0 - smoothing) * target_logit
          - smoothing / vocab * jnp.sum(logits, axis=-1))
  # Subtract the minimum (the entropy of the smoothed labels) so a perfect model scores 0.
  confidence = 1.0 - smoothing + smoothing / vocab
  low = smoothing / vocab
  floor = -(confidence * np.log(confidence) + (vocab - 1) * low * np.log(low + 1e-20))
  valid = targets_BxT != PAD_ID
  correct = target_logit >= jnp.max(logits, axis=-1)  # A max reduce; argmax costs 9% of a step.
  return jnp.where(valid, loss - floor, 0.0), jnp.where(valid, correct, False)


def make_train_step(model: Transformer, optimizer: optax.GradientTransformation,
                    smoothing: float, seed: int) -> Callable:
  """`(state, batch) -> (state, metrics)`, pure; dropout keys derive from (seed, step)."""
  base_key = jax.random.PRNGKey(seed)

  def train_step(state: TrainState, batch: dict[str, Array]) -> tuple[TrainState, dict]:
    key = jax.random.fold_in(base_key, state.step)

    def loss_fn(params):
      logits, updates = model.apply(
          {"params": params, HOMEOSTASIS: state.homeostasis}, batch["src"], batch["tgt_in"],
          train=True, mutable=[HOMEOSTASIS], rngs={"dropout": key})
      loss, correct = token_loss(logits, batch["tgt_out"], smoothing)
      tokens = jnp.sum(batch["tgt_out"] != PAD_ID)
      return jnp.sum(loss) / jnp.maximum(tokens, 1), (updates.get(HOMEOSTASIS, {}),
                                                       jnp.sum(correct), tokens)

    (loss, (homeostasis, correct, tokens)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                           homeostasis=homeostasis)
    stats = {"loss": loss, "accuracy": correct / jnp.maximum(tokens, 1), "tokens": tokens,
             "grad_norm": optax.tree.norm(grads),
             "finite": jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads)),
             "finite_stats": jnp.all(jnp.array([jnp.all(jnp.isfinite(x))
                                                for x in jax.tree.leaves(homeostasis)] + [True]))}
    return new_state, stats

  return train_step


def make_eval_step(model: Transformer, smoothing: float) -> Callable:
  """`(params, homeostasis, batch) -> sums` of loss, correct tokens and tokens."""

  def eval_step(params, homeostasis, batch):
    logits = model.apply({"params": params, HOMEOSTASIS: homeostasis}, batch["src"],
                         batch["tgt_in"])
    loss, correct = token_loss(logits, batch["tgt_out"], smoothing)
    return {"loss": jnp.sum(loss), "correct": jnp.sum(correct),
            "tokens": jnp.sum(batch["tgt_out"] != PAD_ID)}

  return eval_step




@dataclasses.dataclass
class Experiment:
  """A config's model and training pieces on a mesh; built pieces are cached."""
  config: ml_collections.ConfigDict
  model_cfg: TransformerConfig
  mesh: Mesh

  @functools.cached_property
  def model(self) -> Transformer:
    return Transformer(self.model_cfg)

  @functools.cached_property
  def mechanisms(self) -> dict[tuple[str, ...], Mechanism]:
    """The mechanism behind each state of the `"homeostasis"` collection, by path."""
    return find_mechanisms(self.model, self._dummy, self._dummy)

  @functools.cached_property
  def optimizer(self) -> optax.GradientTransformation:
    return optim.make_optimizer(self.config.optim, self.config.num_train_steps)

  @functools.cached_property
  def schedule(self) -> optax.Schedule:
    return optim.learning_rate_schedule(self.config.optim, self.config.num_train_steps)

  @property
  def _dummy(self) -> Array:
    return jnp.ones((self.mesh.shape["data"], 8), jnp.int32)

  def train_step(self) -> Callable:
    """The pure train step (not jitted)."""
    return make_train_step(self.model, self.optimizer, self.config.optim.label_smoothing,
                           self.config.seed)

  def eval_step(self) -> Callable:
    """The pure eval step `(params, homeostasis, batch) -> sums` (not jitted)."""
    return make_eval_step(self.model, self.config.optim.label_smoothing)

  @functools.cached_property
  def _jitted_eval_step(self) -> Callable:
    return jax.jit(self.eval_step())

  def teacher_forced(self, params: Any, homeostasis: Any, batcher: Batcher) -> dict[str, float]:
    """The per-token loss (label-smoothed as in training) and accuracy of predicting
    every target of `batcher` from its reference prefix, with frozen statistics."""
    sums = {"loss": 0.0, "correct": 0.0, "tokens": 0.0}
    for batch in batcher.eval_batches():
      out = self._jitted_eval_step(params, homeostasis,
                                   sharding.shard_batch(batch, self.mesh))
      sums = {k: sums[k] + float(v) for k, v in out.items()}
    return {"loss": sums["loss"] / sums["tokens"], "accuracy": sums["correct"] / sums["tokens"]}

  def _init(self) -> TrainState:
    variables = self.model.init(jax.random.PRNGKey(self.config.seed), self._dummy, self._dummy)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.optimizer.init(params),
                      homeostasis=variables.get(HOMEOSTASIS, {}))

  def _abstract(self, shapes: Any) -> Any:
    shardings = sharding.state_shardings(self.mesh, shapes, self.config.mesh.fsdp)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        shapes, shardings)

  def abstract_state(self) -> Any:
    """The state's shapes, dtypes and shardings, without computing it (for restoring)."""
    return self._abstract(jax.eval_shape(self._init))

  def abstract_variables(self) -> dict[str, Any]:
    """The shapes, dtypes and shardings of `params` and `homeostasis` alone (what
    evaluation restores), without building an optimizer."""
    shapes = jax.eval_shape(lambda: self.model.init(jax.random.PRNGKey(0), self._dummy,
                                                    self._dummy))
    return self._abstract({"params": shapes["params"], HOMEOSTASIS: shapes.get(HOMEOSTASIS, {})})

  def init_state(self) -> tuple[TrainState, Any]:
    """A fresh, sharded state and its shardings."""
    shardings = jax.tree.map(lambda a: a.sharding, self.abstract_state())
    return jax.jit(self._init, out_shardings=shardings)(), shardings

  def jit_train_step(self, shardings: Any) -> Callable:
    """The train step jitted for the state's shardings, donating the state."""
    return jax.jit(self.train_step(), in_shardings=(shardings, NamedSharding(self.mesh, P("data"))),
                   out_shardings=(shardings, None), donate_argnums=0)

  def compile_train_steps(self, state: TrainState, shardings: Any,
                          batcher: Batcher) -> dict[tuple[int, int], Callable]:
    """The train step compiled, before training, for each batch shape `batcher` makes.

    Keyed by the `[batch, length]` shape of a batch; shapes compile in parallel threads,
    so training never stops to compile.
    """
    batch_sharding = NamedSharding(self.mesh, P("data"))
    jitted = self.jit_train_step(shardings)
    specs = {}
    for length, members in batcher.buckets.items():
      batch = batcher.make_batch(length, members[:1])
      specs[batch["src"].shape] = jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=batch_sharding), batch)
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
      compiled = pool.map(lambda spec: jitted.lower(state, spec).compile(), specs.values())
      return dict(zip(specs, compiled))


def build(c: ml_collections.ConfigDict, mesh: Mesh | None = None,
          eval_scale: str | None = None) -> Experiment:
  """The experiment of `c` on `mesh` (default: every device on the `data` axis); `eval_scale`
  overrides how Smart Inhibition evaluates (`config.with_eval_scale`). Raises ValueError
  naming a bad model setting; training checks the whole config first (`config.validate`)."""
  model_cfg = config_lib.model_config(c)
  if eval_scale is not None:
    model_cfg = config_lib.with_eval_scale(model_cfg, eval_scale)
  return Experiment(c, model_cfg, mesh if mesh is not None else sharding.make_mesh())
