"""The optimizer: AdamW with clipping, a learning-rate schedule and gradient accumulation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """The learning rate of each update: a linear warmup to the peak over `warmup_steps`,
  then a cosine decay to `end_lr_fraction` of it at the last update (`cosine`), or
  `peak * sqrt(warmup / update)` (`inverse_sqrt`, fairseq's)."""
  updates = num_steps // optim.grad_accumulation
  warmup = max(optim.warmup_steps, 1)
  if optim.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, optim.learning_rate, warmup, max(updates, warmup + 1),
        end_value=optim.learning_rate * optim.end_lr_fraction)
  def inverse_sqrt(count):
    count = jnp.asarray(count, jnp.float32)
    return optim.learning_rate * jnp.minimum(count / warmup,
                                             jnp.sqrt(warmup / jnp.maximum(count, 1.0)))
  return inverse_sqrt


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
  """AdamW on `learning_rate_schedule`, with global-norm clipping; with
  `grad_accumulation=k`, one update every k steps on the mean of their gradients."""
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # Not biases/norms.
  chain = [optax.clip_by_global_norm(optim.grad_clip)] if optim.grad_clip > 0 else []
  chain.append(optax.adamw(learning_rate_schedule(optim, num_steps), b1=optim.b1, b2=optim.b2,
                           weight_decay=optim.weight_decay, mask=decay_mask))
  optimizer = optax.chain(*chain)
  if optim.grad_accumulation > 1:
    optimizer = optax.MultiSteps(optimizer, every_k_schedule=optim.grad_accumulation)
  return optimizer
