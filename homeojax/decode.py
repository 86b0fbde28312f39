"""Greedy and beam search over a step function with a cache, and model translation.

A step function maps `(tokens [N, 1], cache) -> (logits [N, V], cache)`, where the cache
is any pytree whose leaves have N rows. Searches are `lax.while_loop`s: they jit, and stop
as soon as every sequence is finished.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from homeojax.data import tokenizer
from homeojax.data.batching import Batcher
from homeojax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

Array = jax.Array
StepFn = Callable[[Array, Any], tuple[Array, Any]]
NEG_INF = -1.0e9


def greedy_search(step_fn: StepFn, cache: Any, batch: int, max_len: int,
                  bos_id: int = BOS_ID, eos_id: int = EOS_ID) -> tuple[Array, Array]:
  """The argmax continuation of each row: `(ids [batch, max_len], log-probability
  [batch])`, ids padded after EOS, the log-probability summed up to EOS (included)."""

  def body(state):
    i, tokens, logp, finished, cache = state
    logits, cache = step_fn(jax.lax.dynamic_slice_in_dim(tokens, i, 1, axis=1), cache)
    best = jnp.argmax(logits, axis=-1)
    best_logp = jnp.max(jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)
    logp = logp + jnp.where(finished, 0.0, best_logp)
    next_token = jnp.where(finished, PAD_ID, best).astype(jnp.int32)
    tokens = jax.lax.dynamic_update_slice_in_dim(tokens, next_token[:, None], i + 1, axis=1)
    return i + 1, tokens, logp, finished | (next_token == eos_id), cache

  tokens = jnp.zeros((batch, max_len + 1), jnp.int32).at[:, 0].set(bos_id)
  state = (jnp.zeros((), jnp.int32), tokens, jnp.zeros((batch,), jnp.float32),
           jnp.zeros((batch,), bool), cache)
  _, tokens, logp, _, _ = jax.lax.while_loop(
      lambda s: (s[0] < max_len) & ~jnp.all(s[3]), body, state)
  return tokens[:, 1:], logp


PENALTIES = ("gnmt", "fairseq")


def length_penalty(length: Array | int, alpha: float, penalty: str = "gnmt") -> Array:
  """What a hypothesis' log-probability is divided by: GNMT's `((5 + length) / 6) ** alpha`
  or fairseq's `length ** alpha` (its `--lenpen`); `length` counts EOS."""
  length = jnp.asarray(length, jnp.float32)
  return ((5.0 + length) / 6.0) ** alpha if penalty == "gnmt" else length ** alpha


def _gather_beams(x_BxKx: Array, indices_BxJ: Array) -> Array:
  """`x[b, indices[b, j]]` for every batch row b: picks beams of a `[B, K, ...]` array."""
  shape = indices_BxJ.shape + (1,) * (x_BxKx.ndim - 2)
  return jnp.take_along_axis(x_BxKx, indices_BxJ.reshape(shape), axis=1)


def _gather_cache(cache: Any, parent_BxK: Array) -> Any:
  """Reorders the `[B * K, ...]` leaves of a cache by parent beam; scalars are shared."""
  batch, beam = parent_BxK.shape
  rows = (jnp.arange(batch)[:, None] * beam + parent_BxK).reshape(-1)  # Whole-row copies.
  return jax.tree.map(lambda x: x if x.ndim == 0 else x.at[rows].get(mode="promise_in_bounds"),
                      cache)


def beam_search(step_fn: StepFn, cache: Any, batch: int, beam: int, max_len: int,
                alpha: float = 0.6, penalty: str = "gnmt", bos_id: int = BOS_ID,
                eos_id: int = EOS_ID) -> tuple[Array, Array]:
  """Beam search; `cache` rows are `batch * beam` (beam-major within each example).

  Returns `(sequences [batch, beam, max_len], scores [batch, beam])`, best first, where a
  score is the log-probability (EOS included) over `length_penalty(length, alpha,
  penalty)`. Rows
  with no finished hypothesis at `max_len` return their live ones.
  """
  def body(state):
    i, live_seqs, live_logp, fin_seqs, fin_scores, fin_flags, cache = state
    tokens = jax.lax.dynamic_slice_in_dim(live_seqs, i, 1, axis=2).reshape(batch * beam, 1)
    logits, cache = step_fn(tokens, cache)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch, beam, -1)
    vocab = logp.shape[-1]
    cand = (live_logp[..., None] + logp).reshape(batch, beam * vocab)
    top_logp, top_idx = jax.lax.top_k(cand, 2 * beam)
    parent, token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    seqs = _gather_beams(live_seqs, parent)
    seqs = jax.lax.dynamic_update_slice_in_dim(seqs, token[..., None], i + 1, axis=2)
    is_eos = token == eos_id
    # Live: the best `beam` candidates that did not end.
    live_logp, pick = jax.lax.top_k(jnp.where(is_eos, NEG_INF, top_logp), beam)
    live_seqs = _gather_beams(seqs, pick)
    cache = _gather_cache(cache, _gather_beams(parent, pick))
    # Finished: merge the candidates that ended with the finished so far.
    scores = jnp.where(is_eos, top_logp / length_penalty(i + 1, alpha, penalty), NEG_INF)
    all_scores = jnp.concatenate([fin_scores, scores], axis=1)
    all_seqs = jnp.concatenate([fin_seqs, seqs], axis=1)
    all_flags = jnp.concatenate([fin_flags, is_eos], axis=1)
    fin_scores, pick = jax.lax.top_k(all_scores, beam)
    fin_seqs = _gather_beams(all_seqs, pick)
    fin_flags = _gather_beams(all_flags, pick)
    return i + 1, live_seqs, live_logp, fin_seqs, fin_scores, fin_flags, cache

  def searching(state):
    i, _, live_logp, _, fin_scores, fin_flags, _ = state
    best_live = live_logp[:, 0] / length_penalty(max_len, alpha, penalty)
    worst_fin = jnp.min(jnp.where(fin_flags, fin_scores, -NEG_INF), axis=1)
    done = jnp.all(fin_flags, axis=1) & (worst_fin >= best_live)
    return (i < max_len) & ~jnp.all(done)

  seqs = jnp.zeros((batch, beam, max_len + 1), jnp.int32).at[:, :, 0].set(bos_id)
  live_logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (beam - 1)), (batch, 1))
  state = (jnp.zeros((), jnp.int32), seqs, live_logp, seqs,
           jnp.full((batch, beam), NEG_INF), jnp.zeros((batch, beam), bool), cache)
  _, live_seqs, live_logp, fin_seqs, fin_scores, fin_flags, _ = jax.lax.while_loop(
      searching, body, state)
  any_finished = jnp.any(fin_flags, axis=1)[:, None]
  seqs = jnp.where(any_finished[..., None], fin_seqs, live_seqs)
  scores = jnp.where(any_finished, fin_scores, live_logp / length_penalty(max_len, alpha, penalty))
  return seqs[:, :, 1:], scores


def _outputs_only(logits_NxV: Array) -> Array:
  """Forbids the ids that are never output: padding and BOS."""
  return logits_NxV.at[:, jnp.array([PAD_ID, BOS_ID])].set(NEG_INF)


def max_decode_length(src_len: int, model_max_len: int) -> int:
  """Longest output for a source bucket: 1.5x the source plus 10, within the model."""
  return min(model_max_len, int(1.5 * src_len) + 10)


def _hypothesis_lengths(ids_BxL: Array, eos_id: int = EOS_ID) -> Array:
  """Tokens up to and including the first EOS of each row (all of them without one)."""
  has_eos = jnp.any(ids_BxL == eos_id, axis=-1)
  return jnp.where(has_eos, jnp.argmax(ids_BxL == eos_id, axis=-1) + 1, ids_BxL.shape[-1])


@functools.partial(jax.jit, static_argnames=("model", "beam", "alpha", "penalty", "use_cache",
                                             "n_best"))
def translate(model: nn.Module, variables: dict, src_BxS: Array, *, beam: int = 1,
              alpha: float = 0.6, penalty: str = "gnmt", use_cache: bool = True,
              n_best: int = 1) -> tuple[Array, Array]:
  """The `n_best` best translations of a source batch (greedy at beam 1, where `n_best`
  must be 1): `(ids [B, n_best, max_decode_length], scores [B, n_best])`, best first.

  A score is the log-probability of the hypothesis (EOS included) divided by
  `length_penalty(length, alpha, penalty)`. `variables` holds `params` and
  `homeostasis`, read-only. Without the cache, every step re-runs the decoder over the
  whole prefix (for benchmarks and checks).
  """
  if not 1 <= n_best <= beam:
    raise ValueError(f"n_best={n_best} must be between 1 and beam={beam}")
  if penalty not in PENALTIES:
    raise ValueError(f"penalty={penalty!r} is not one of {PENALTIES}")
  batch = src_BxS.shape[0]
  max_len = max_decode_length(src_BxS.shape[1], model.cfg.max_len)
  encoded = model.apply(variables, src_BxS, method=model.encode)  # Shared by its beams.
  rows = batch * beam

  if use_cache:
    def step_fn(tokens, cache):
      logits, updates = model.apply({**variables, "cache": cache}, encoded, src_BxS, tokens,
                                    decode=True, mutable=["cache"], method=model.decode)
      return _outputs_only(logits[:, -1]), updates["cache"]
    dummy = jnp.zeros((rows, max_len), jnp.int32)
    shapes = jax.eval_shape(lambda: model.apply(
        variables, encoded, src_BxS, dummy, decode=True, mutable=["cache"],
        method=model.decode)[1]["cache"])
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  else:
    def step_fn(tokens, cache):
      prefix, i = cache
      prefix = jax.lax.dynamic_update_slice_in_dim(prefix, tokens, i, axis=1)
      logits = model.apply(variables, encoded, src_BxS, prefix, method=model.decode)
      logits = jax.lax.dynamic_index_in_dim(logits, i, axis=1, keepdims=False)
      return _outputs_only(logits), (prefix, i + 1)
    cache = (jnp.zeros((rows, max_len), jnp.int32), jnp.zeros((), jnp.int32))

  if beam == 1:
    ids, logp = greedy_search(step_fn, cache, batch, max_len)
    lengths = _hypothesis_lengths(ids)
    return ids[:, None], (logp / length_penalty(lengths, alpha, penalty))[:, None]
  seqs, scores = beam_search(step_fn, cache, batch, beam, max_len, alpha, penalty)
  return seqs[:, :n_best], scores[:, :n_best]


def _addressable(x: Any) -> Any:
  """`x` whole in this process, also when it spans other processes' devices (multi-host)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return (x.addressable_data(0) if x.is_fully_replicated
            else multihost_utils.process_allgather(x, tiled=True))
  return x


def translate_split(model: nn.Module, variables: dict, sources: list[np.ndarray],
                    sp: Any, *, beam: int, alpha: float, tokens_per_batch: int,
                    mesh: Mesh, use_cache: bool = True, n_best: int = 1,
                    penalty: str = "gnmt") -> list[list[tuple[str, float]]]:
  """The `n_best` `(detokenized text, score)` of each source, in order, best first.

  Each of this process's devices in `mesh` searches whole batches of its own, all at
  once: no device waits for another's step, and on CPU N devices use N cores
  (`process.use_cpu_cores`). Every process decodes every source. Sources longer than the
  model's `max_len` (with EOS) are truncated, with a warning.
  """
  too_long = sum(len(s) >= model.cfg.max_len for s in sources)
  if too_long:
    logging.warning("%d sources truncated to the model's max_len=%d tokens", too_long,
                    model.cfg.max_len)
    sources = [s[:model.cfg.max_len - 1] for s in sources]
  longest = max(len(s) for s in sources) + 1
  batcher = Batcher(sources, None, max(tokens_per_batch, longest), max_len=max(8, longest))
  devices = mesh.local_devices
  local = jax.tree.map(_addressable, variables)  # Gathered once, copied to each device.
  replicas = [jax.device_put(local, d) for d in devices]
  out: list[list[tuple[str, float]]] = [[] for _ in sources]

  def collect(index: np.ndarray, found: tuple[Array, Array]) -> None:
    ids, scores = jax.device_get(found)
    texts = tokenizer.decode(sp, ids.reshape(-1, ids.shape[-1]))
    for row, i in enumerate(index):
      if i >= 0:
        out[i] = list(zip(texts[row * n_best:(row + 1) * n_best], scores[row].tolist()))

  running: collections.deque = collections.deque()
  for n, batch in enumerate(batcher.eval_batches()):
    if len(running) == 2 * len(devices):  # One batch queued behind each running one.
      collect(*running.popleft())
    device = n % len(devices)
    src = jax.device_put(batch["src"], devices[device])
    running.append((batch["index"], translate(
        model, replicas[device], src, beam=beam, alpha=alpha, penalty=penalty,
        use_cache=use_cache, n_best=n_best)))
  while running:
    collect(*running.popleft())
  return out
