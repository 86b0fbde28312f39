"""Training: state, the jitted train and eval steps, checkpoints, and the loop.

The train step is one pure, jitted function `(state, batch) -> (state, metrics)`. It
threads params, optimizer state and the `"homeostasis"` collection; the homeostasis
state is never optimized. Arrays are laid out on a `Mesh` with a `data` axis
(`NamedSharding`): batches are split over it, params replicated (or sharded with
`mesh.fsdp`). The batch of step s depends only on s and the seed, so a resumed run
sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from homeojax import config as config_lib
from homeojax import decode as decode_lib
from homeojax import diagnostics, metrics, paths, process, sharding
from homeojax.process import Interrupted
from homeojax.data import multi30k, tokenizer
from homeojax.data.batching import Batcher
from homeojax.data.tokenizer import PAD_ID
from homeojax.layers import HOMEOSTASIS, end_epoch, find_mechanisms
from homeojax.mechanisms import parse_chain
from homeojax.model import Transformer

Array = jax.Array


@flax.struct.dataclass
class TrainState:
  """Everything a train step reads and writes."""
  step: Array
  params: Any
  opt_state: Any
  homeostasis: Any


# ----------------------------------------------------------------------------- optimizer


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


# ----------------------------------------------------------------------------- steps


def token_loss(logits_BxTxV: Array, targets_BxT: Array, smoothing: float) -> tuple[Array, Array]:
  """Per-token cross-entropy (label-smoothed) and correctness, zero at padding."""
  vocab = logits_BxTxV.shape[-1]
  labels = optax.smooth_labels(jax.nn.one_hot(targets_BxT, vocab), smoothing)
  loss = optax.softmax_cross_entropy(logits_BxTxV, labels)
  # Subtract the minimum (the entropy of the smoothed labels) so a perfect model scores 0.
  confidence = 1.0 - smoothing + smoothing / vocab
  low = smoothing / vocab
  floor = -(confidence * np.log(confidence) + (vocab - 1) * low * np.log(low + 1e-20))
  valid = targets_BxT != PAD_ID
  correct = jnp.argmax(logits_BxTxV, -1) == targets_BxT
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


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass
class Data:
  """Tokenized data and its vocabulary."""
  sp: Any
  vocab_path: Path
  texts: dict[str, dict[str, list[str]]]
  ids: dict[str, tuple[list[np.ndarray], list[np.ndarray]]]


def text_fields(convention: str) -> tuple[str, str]:
  """The source and target fields of `multi30k.load` a data convention trains on."""
  return ("source", "target") if convention == "raw" else ("source_tok", "target_tok")


def prepare_data(c: ml_collections.ConfigDict, workdir: Path, splits: tuple[str, ...]) -> Data:
  """Loads the splits and the cached vocabulary (trained on first use), then encodes the
  text of the data convention."""
  tfds_dir = c.data.tfds_dir or str(workdir / "tfds")
  texts = multi30k.load(c.data.source_lang, c.data.target_lang, ("train", *splits),
                        tfds_dir, c.data.local_dir or None)
  source, target = text_fields(c.data.convention)
  for split, fields in texts.items():
    if not all(fields[source]) or not all(fields[target]):
      raise FileNotFoundError(
          f"data.convention={c.data.convention!r} needs the tokenized files "
          f"tok/{multi30k.SPLIT_FILES[split]}.lc.norm.tok.{{{c.data.source_lang},"
          f"{c.data.target_lang}}} of split {split!r}, which the data has not")
  train = texts["train"]
  vocab_path = tokenizer.train_or_load(train[source] + train[target], workdir,
                                       c.data.vocab_size)
  sp = tokenizer.load(vocab_path)
  ids = {split: (tokenizer.encode(sp, t[source]), tokenizer.encode(sp, t[target]))
         for split, t in texts.items()}
  return Data(sp=sp, vocab_path=vocab_path, texts=texts, ids=ids)


def file_sha256(path: Path) -> str:
  return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- checkpoints


class Checkpoints:
  """The latest `keep` checkpoints, and the best by validation BLEU, with JSON metadata.

  A reader (`keep=None`) never writes or deletes, so it may run beside the trainer: it
  sees only complete checkpoints (Orbax writes each to a temporary directory and renames
  it when complete).
  """

  def __init__(self, workdir: Path, keep: int | None):
    def options(policy, **kw):
      if keep is None:
        return ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0,
                                            create=False, **kw)
      return ocp.CheckpointManagerOptions(create=True, preservation_policy=policy, **kw)
    bleu = lambda metrics: metrics["bleu"]
    with process.only_errors_logged():  # Orbax warns that a reader is read-only.
      self.latest = ocp.CheckpointManager(workdir / "checkpoints", options=options(
          ocp.checkpoint_managers.LatestN(n=keep)))
      self.best = ocp.CheckpointManager(workdir / "best", options=options(
          ocp.checkpoint_managers.BestN(get_metric_fn=bleu, n=1), best_fn=bleu,
          best_mode="max"))

  def save(self, state: TrainState, meta: dict, bleu: float | None = None) -> None:
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              meta=ocp.args.JsonSave(meta))
    step = int(state.step)
    if self.latest.latest_step() != step:
      self.latest.save(step, args=args)
    if bleu is not None:
      self.best.save(step, args=args, metrics={"bleu": bleu})

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()


def restore(manager: ocp.CheckpointManager, abstract_state: Any,
            step: int | None = None) -> tuple[TrainState, dict]:
  """Restores state (into the given shardings) and metadata of a step (default latest)."""
  step = manager.latest_step() if step is None else step
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  return restored["state"], restored["meta"]


def restore_fields(manager: ocp.CheckpointManager, step: int, abstract_fields: dict) -> dict:
  """Restores only the named fields of a saved state, e.g. `params` and `homeostasis` for
  evaluation, without reading the optimizer state."""
  restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding),
                              abstract_fields)
  return manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      abstract_fields, restore_args=restore_args, partial_restore=True)))["state"]


def restore_latest_good(manager: ocp.CheckpointManager,
                        abstract_state: Any) -> tuple[TrainState, dict]:
  """Restores the newest readable checkpoint.

  Each unreadable newer one is moved to `<dir>_unreadable/` (kept for inspection, out of
  the way of new saves) with a warning naming it.
  """
  directory = Path(manager.directory)
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return restore(manager, abstract_state, step)
    except Exception as e:  # pylint: disable=broad-except  # Any damage: try an older one.
      aside = directory.with_name(directory.name + "_unreadable") / str(step)
      logging.warning("checkpoint %s is unreadable (%s: %s); moved to %s, falling back to "
                      "an older one", directory / str(step), type(e).__name__, e, aside)
      aside.parent.mkdir(exist_ok=True)
      shutil.rmtree(aside, ignore_errors=True)
      (directory / str(step)).rename(aside)
      manager.reload()
  raise FileNotFoundError(f"no readable checkpoint in {directory}")


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
  """The JSON metadata of a checkpoint, without reading arrays."""
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


# ----------------------------------------------------------------------------- the loop


def _state_initializer(model: Transformer, optimizer: optax.GradientTransformation,
                       seed: int, mesh: Mesh) -> Callable[[], TrainState]:
  dummy = jnp.ones((mesh.shape["data"], 8), jnp.int32)

  def init() -> TrainState:
    variables = model.init(jax.random.PRNGKey(seed), dummy, dummy)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params),
                      homeostasis=variables.get(HOMEOSTASIS, {}))

  return init


def model_mechanisms(model: Transformer, mesh: Mesh) -> dict:
  """The mechanism behind each state of the model's `"homeostasis"` collection, by path."""
  dummy = jnp.ones((mesh.shape["data"], 8), jnp.int32)
  return find_mechanisms(model, dummy, dummy)


def abstract_variables(model: Transformer, mesh: Mesh, fsdp: bool) -> dict[str, Any]:
  """The shapes, dtypes and shardings of `params` and `homeostasis` (for restoring them
  alone, as evaluation does), without computing them or building an optimizer."""
  dummy = jnp.ones((mesh.shape["data"], 8), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dummy, dummy))
  shapes = {"params": shapes["params"], HOMEOSTASIS: shapes.get(HOMEOSTASIS, {})}
  shardings = sharding.state_shardings(mesh, shapes, fsdp)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      shapes, shardings)


def abstract_state(model: Transformer, optimizer: optax.GradientTransformation, seed: int,
                   mesh: Mesh, fsdp: bool) -> Any:
  """The state's shapes, dtypes and shardings, without computing it (for restoring)."""
  shapes = jax.eval_shape(_state_initializer(model, optimizer, seed, mesh))
  shardings = sharding.state_shardings(mesh, shapes, fsdp)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      shapes, shardings)


def init_state(model: Transformer, optimizer: optax.GradientTransformation, seed: int,
               mesh: Mesh, fsdp: bool) -> tuple[TrainState, Any]:
  """A fresh, sharded state and its shardings."""
  shardings = jax.tree.map(lambda a: a.sharding,
                           abstract_state(model, optimizer, seed, mesh, fsdp))
  return jax.jit(_state_initializer(model, optimizer, seed, mesh),
                 out_shardings=shardings)(), shardings


def compile_train_steps(train_step: Callable, state: TrainState, shardings: Any,
                        batcher: Batcher, mesh: Mesh) -> dict[tuple[int, int], Callable]:
  """`train_step` compiled, before training, for each batch shape `batcher` makes.

  Keyed by the `[batch, length]` shape of a batch; shapes compile in parallel threads, so
  training never stops to compile.
  """
  batch_sharding = NamedSharding(mesh, P("data"))
  jitted = jax.jit(train_step, in_shardings=(shardings, batch_sharding),
                   out_shardings=(shardings, None), donate_argnums=0)
  specs = {}
  for length, members in batcher.buckets.items():
    batch = batcher.make_batch(length, members[:1])
    specs[batch["src"].shape] = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=batch_sharding), batch)
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    compiled = pool.map(lambda spec: jitted.lower(state, spec).compile(), specs.values())
    return dict(zip(specs, compiled))


def train_and_evaluate(c: ml_collections.ConfigDict, workdir: str | os.PathLike,
                       progress: bool = True) -> dict:
  """Trains (resuming from the latest checkpoint in `workdir`) and returns final metrics."""
  model_cfg = config_lib.validate(c)  # Before any data preparation or compilation.
  c = config_lib.with_absolute_paths(c)  # Recorded in checkpoints: eval may run elsewhere.
  workdir = paths.absolute(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise NotADirectoryError(f"work dir {str(workdir)!r} is not a directory")
  workdir.mkdir(parents=True, exist_ok=True)
  main_process = jax.process_index() == 0  # Only process 0 writes logs and locks.
  with (process.workdir_lock(workdir) if main_process else contextlib.nullcontext(),
        process.StopSignals() as stop):
    return _train(c, model_cfg, workdir, stop, progress)


def _train(c: ml_collections.ConfigDict, model_cfg: Any, workdir: Path,
           stop: process.StopSignals, progress: bool) -> dict:
  """The body of `train_and_evaluate`, with the work dir locked and signals caught."""
  checkpoints = Checkpoints(workdir, c.keep_checkpoints)
  if (latest := checkpoints.latest.latest_step()) is not None:
    try:  # A changed model fails here, before data preparation; the vocabulary is later.
      saved = read_meta(checkpoints.latest, latest)
    except Exception:  # pylint: disable=broad-except  # Damaged: restore will fall back.
      saved = None
    if saved is not None:
      check_compatible(saved, {"model": model_cfg.to_dict()})
  mesh = sharding.make_mesh()
  data = prepare_data(c, workdir, (c.data.eval_split,))
  model = Transformer(model_cfg)
  optimizer = make_optimizer(c.optim, c.num_train_steps)
  schedule = learning_rate_schedule(c.optim, c.num_train_steps)
  main_process = jax.process_index() == 0  # Only process 0 writes logs.
  writer = metrics.MetricWriter(workdir, enabled=main_process)
  meta = {"config": c.to_dict(), "model": model_cfg.to_dict(), "spec": config_lib.SPEC_VERSION,
          "vocab": data.vocab_path.name, "vocab_sha256": file_sha256(data.vocab_path)}

  state, shardings = init_state(model, optimizer, c.seed, mesh, c.mesh.fsdp)
  wall_before = 0.0  # Seconds spent in the training loop by earlier, resumed-from runs.
  if checkpoints.latest.latest_step() is not None:
    state, old_meta = restore_latest_good(checkpoints.latest, state)
    check_compatible(old_meta, meta)
    wall_before = old_meta.get("wall_seconds", 0.0)
    writer.truncate_after(int(state.step))
    print(f"Resumed from step {int(state.step)} in {workdir}")
  start = int(state.step)
  if start >= c.num_train_steps:
    print(f"Nothing to train: step {start} of num_train_steps={c.num_train_steps} reached")
    writer.close()
    return {"step": start}

  train_ids = data.ids["train"]
  batcher = Batcher(*train_ids, c.data.tokens_per_batch, c.data.max_len,
                    multiple_of=mesh.shape["data"], seed=c.seed)
  if start == 0:
    print(f"{len(train_ids[0])} training pairs ({batcher.dropped} longer than "
          f"{c.data.max_len} tokens dropped), {len(batcher)} batches per epoch")
  train_steps = compile_train_steps(
      make_train_step(model, optimizer, c.optim.label_smoothing, c.seed), state, shardings,
      batcher, mesh)
  eval_step = jax.jit(make_eval_step(model, c.optim.label_smoothing))
  mechanisms = model_mechanisms(model, mesh)
  decaying = any(m.decays() for m in mechanisms.values())
  next_epoch = jax.jit(lambda s: s.replace(homeostasis=end_epoch(s.homeostasis, mechanisms)),
                       out_shardings=shardings, donate_argnums=0)
  summarize = jax.jit(lambda h: diagnostics.summarize(h, mechanisms))
  clip_watch = diagnostics.ClipWatch(mechanisms)

  split = c.data.eval_split
  sources, targets = data.ids[split]
  eval_batcher = Batcher(sources, targets, c.data.tokens_per_batch, model_cfg.max_len,
                         multiple_of=mesh.shape["data"])

  def evaluate(state: TrainState) -> dict:
    sums = {"loss": 0.0, "correct": 0.0, "tokens": 0.0}
    for batch in eval_batcher.eval_batches():
      out = eval_step(state.params, state.homeostasis, sharding.shard_batch(batch, mesh))
      sums = {k: sums[k] + float(v) for k, v in out.items()}
    n = c.data.eval_sentences or len(sources)
    best = decode_lib.translate_split(
        model, {"params": state.params, HOMEOSTASIS: state.homeostasis}, sources[:n],
        data.sp, beam=c.decode.eval_beam_size, alpha=c.decode.length_penalty,
        penalty=c.decode.penalty, tokens_per_batch=c.decode.tokens_per_batch, mesh=mesh)
    hyps = [n_best[0][0] for n_best in best]
    texts = data.texts[split]
    bleu = metrics.bleu_scores(hyps, texts["target"][:n], texts["target_tok"][:n],
                               c.data.target_lang, c.data.convention)
    return {"eval_loss": sums["loss"] / sums["tokens"],
            "eval_accuracy": sums["correct"] / sums["tokens"],
            "eval_bleu": bleu["sacrebleu"]["score"] if "sacrebleu" in bleu else bleu["bleu_tok"],
            "eval_bleu_tok": bleu["bleu_tok"]}

  pending, window, last_log, tokens_since = [], [], time.time(), 0
  loop_start = last_log
  bar = metrics.Progress(start, c.num_train_steps, enabled=progress and main_process)
  record: dict = {}
  batches = batcher.train_batches(start)
  try:
    if stop.received:  # During preparation or compilation: nothing new to save.
      raise Interrupted(stop.received, stop.exit_code, start, str(workdir / "checkpoints"))
    for step in range(start + 1, c.num_train_steps + 1):
      batch = next(batches)
      with jax.transfer_guard_device_to_host("disallow"):  # No hidden host syncs per step.
        state, stats = train_steps[batch["src"].shape](state, sharding.shard_batch(batch, mesh))
      pending.append(stats)
      if decaying and step % len(batcher) == 0:  # An epoch ended.
        state = next_epoch(state)
      stopping = stop.received  # Read once: a signal may arrive at any moment.
      save = step % c.checkpoint_every == 0 or step == c.num_train_steps or bool(stopping)
      if save or step % c.log_every == 0:
        fetched = jax.device_get(pending)
        check_finite_steps(fetched, step - len(fetched) + 1, state, workdir / "checkpoints")
        window, pending = window + fetched, []
      if step % c.log_every == 0 or step == c.num_train_steps:
        fetched, window = window, []
        tokens_since += sum(int(s["tokens"]) for s in fetched)
        now = time.time()
        record = {"step": step, "loss": float(np.mean([s["loss"] for s in fetched])),
                  "accuracy": float(np.mean([s["accuracy"] for s in fetched])),
                  "grad_norm": float(np.mean([s["grad_norm"] for s in fetched])),
                  "tokens_per_sec": tokens_since / (now - last_log),
                  "learning_rate": float(schedule(step // c.optim.grad_accumulation)),
                  "wall_seconds": wall_before + now - loop_start}
        summary = jax.device_get(summarize(state.homeostasis))
        record.update(metrics.flatten_diagnostics(summary))
        for warning in clip_watch.update(step, summary):
          bar.write(f"warning: {warning}")
        last_log, tokens_since = now, 0
        bar.update(step, record)
        if step % c.eval_every == 0 or step == c.num_train_steps:
          record.update(evaluate(state))
          bar.write(f"step {step}: eval loss {record['eval_loss']:.3f}, "
                    f"BLEU {record['eval_bleu']:.2f} (tokenized {record['eval_bleu_tok']:.2f})")
        writer.write(record)
      if save:
        if (bad := first_nonfinite(state.params)) is not None:
          raise FloatingPointError(f"non-finite parameter {bad} after step {step}; the last "
                                   f"good checkpoint is kept in {workdir / 'checkpoints'}")
        checkpoints.save(state, {**meta, "step": step,
                                 "wall_seconds": wall_before + time.time() - loop_start},
                         bleu=record.get("eval_bleu") if record.get("step") == step else None)
      if stopping:
        raise Interrupted(stopping, stop.exit_code, step, str(workdir / "checkpoints"))
  finally:  # Saves in flight complete, also when training stops on an error.
    checkpoints.wait()
  bar.close()
  writer.close()
  return record


def first_nonfinite(tree: Any) -> str | None:
  """Path of the first leaf of `tree` holding a NaN or Inf, or None."""
  for path, leaf in flax.traverse_util.flatten_dict(jax.device_get(tree), sep="/").items():
    if not np.all(np.isfinite(leaf)):
      return path
  return None


def check_finite_steps(fetched: list[dict], first_step: int, state: TrainState,
                       kept_in: Path) -> None:
  """Raises naming the first step (and the site, for statistics) that went non-finite.

  `fetched` are the step metrics of steps `first_step`, `first_step + 1`, ...; `state` is
  the current state, whose statistics still carry the NaN (they are running averages).
  """
  for i, stats in enumerate(fetched):
    where = f"at step {first_step + i}; the last good checkpoint is kept in {kept_in}"
    if not stats["finite"]:
      raise FloatingPointError(f"non-finite loss or gradient {where}")
    if not stats["finite_stats"]:
      site = first_nonfinite(state.homeostasis)
      raise FloatingPointError(f"non-finite homeostasis statistic {site} {where}")


def check_compatible(saved: dict, current: dict) -> None:
  """Raises naming the first model field, or the vocabulary (if given), that differs.

  Site chains compare by their training settings: `kwta(sparsity=0.1)` matches
  `kwta(sparsity=0.1, method='exact')`, its default spelled out. Chains saved by
  homeojax 0.1 (no `spec` in the metadata) are read as `config.upgrade_chain` says.
  """
  def settings(text: str) -> tuple:
    return tuple(m.settings() for m in parse_chain(text))

  regularizer = saved.get("config", {}).get("regularizer", {})
  for key, value in current["model"].items():
    old = saved["model"].get(key)
    if key.endswith("_sites") and isinstance(old, dict):
      for site, current_text in value.items():
        old_text = old.get(site, "")
        if "spec" not in saved:
          old_text = config_lib.upgrade_chain(old_text, regularizer)
        if settings(old_text) != settings(current_text):
          raise ValueError(f"checkpoint model.{key}.{site}={old.get(site, '')!r} differs "
                           f"from the config's {current_text!r}")
    elif old != value:
      raise ValueError(f"checkpoint model.{key}={old!r} differs from the config's {value!r}")
  if "vocab_sha256" in current and saved["vocab_sha256"] != current["vocab_sha256"]:
    raise ValueError(f"checkpoint vocabulary {saved['vocab']} differs from {current['vocab']}")
