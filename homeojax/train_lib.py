"""The training loop: data preparation, then train steps with logging, validation,
checkpoints, resumption and clean stops. The pieces come from `experiment.build`.

The batch of step s depends only on s and the seed, so a resumed run sees the same data
as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import flax
import jax
import ml_collections
import numpy as np

from homeojax import config as config_lib
from homeojax import decode as decode_lib
from homeojax import diagnostics, experiment, metrics, paths, process, sharding
from homeojax.checkpoints import Checkpoints, check_compatible, file_sha256, read_meta
from homeojax.checkpoints import restore_latest_good
from homeojax.data import multi30k, tokenizer
from homeojax.data.batching import Batcher
from homeojax.experiment import TrainState
from homeojax.layers import HOMEOSTASIS, end_epoch
from homeojax.process import Interrupted


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




def train_and_evaluate(c: ml_collections.ConfigDict, workdir: str | os.PathLike,
                       progress: bool = True) -> dict:
  """Trains (resuming from the latest checkpoint in `workdir`) and returns final metrics."""
  config_lib.validate(c)  # Before any data preparation or compilation.
  c = config_lib.with_absolute_paths(c)  # Recorded in checkpoints: eval may run elsewhere.
  workdir = paths.absolute(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise NotADirectoryError(f"work dir {str(workdir)!r} is not a directory")
  workdir.mkdir(parents=True, exist_ok=True)
  main_process = jax.process_index() == 0  # Only process 0 writes logs and locks.
  with (process.workdir_lock(workdir) if main_process else contextlib.nullcontext(),
        process.StopSignals() as stop):
    return _train(c, workdir, stop, progress)


def _train(c: ml_collections.ConfigDict, workdir: Path, stop: process.StopSignals,
           progress: bool) -> dict:
  """The body of `train_and_evaluate`, with the work dir locked and signals caught."""
  checkpoints = Checkpoints(workdir, c.keep_checkpoints)
  exp = experiment.build(c)
  if (latest := checkpoints.latest.latest_step()) is not None:
    try:  # A changed model fails here, before data preparation; the vocabulary is later.
      saved = read_meta(checkpoints.latest, latest)
    except Exception:  # pylint: disable=broad-except  # Damaged: restore will fall back.
      saved = None
    if saved is not None:
      check_compatible(saved, {"model": exp.model_cfg.to_dict()})
  mesh, model = exp.mesh, exp.model
  data = prepare_data(c, workdir, (c.data.eval_split,))
  main_process = jax.process_index() == 0  # Only process 0 writes logs.
  writer = metrics.MetricWriter(workdir, enabled=main_process)
  meta = {"config": c.to_dict(), "model": exp.model_cfg.to_dict(),
          "spec": config_lib.SPEC_VERSION, "vocab": data.vocab_path.name,
          "vocab_sha256": file_sha256(data.vocab_path)}

  state, shardings = exp.init_state()
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
                    multiple_of=mesh.shape["data"], seed=c.seed, bucket_step=c.data.bucket_step)
  if start == 0:
    print(f"{len(train_ids[0])} training pairs ({batcher.dropped} longer than "
          f"{c.data.max_len} tokens dropped), {len(batcher)} batches per epoch")
  train_steps = exp.compile_train_steps(state, shardings, batcher)
  mechanisms = exp.mechanisms
  decaying = any(m.decays() for m in mechanisms.values())
  next_epoch = jax.jit(lambda s: s.replace(homeostasis=end_epoch(s.homeostasis, mechanisms)),
                       out_shardings=shardings, donate_argnums=0)
  summarize = jax.jit(lambda h: diagnostics.summarize(h, mechanisms))
  watch = diagnostics.HomeostasisWatch(mechanisms)

  split = c.data.eval_split
  sources, targets = data.ids[split]
  eval_batcher = Batcher(sources, targets, c.data.tokens_per_batch, exp.model_cfg.max_len,
                         multiple_of=mesh.shape["data"])

  def evaluate(state: TrainState) -> dict:
    forced = exp.teacher_forced(state.params, state.homeostasis, eval_batcher)
    n = c.data.eval_sentences or len(sources)
    best = decode_lib.translate_split(
        model, {"params": state.params, HOMEOSTASIS: state.homeostasis}, sources[:n],
        data.sp, beam=c.decode.eval_beam_size, alpha=c.decode.length_penalty,
        penalty=c.decode.penalty, tokens_per_batch=c.decode.tokens_per_batch, mesh=mesh)
    hyps = [n_best[0][0] for n_best in best]
    texts = data.texts[split]
    bleu = metrics.bleu_scores(hyps, texts["target"][:n], texts["target_tok"][:n],
                               c.data.target_lang, c.data.convention)
    return {"eval_loss": forced["loss"], "eval_accuracy": forced["accuracy"],
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
                  "learning_rate": float(exp.schedule(step // c.optim.grad_accumulation)),
                  "wall_seconds": wall_before + now - loop_start}
        summary = jax.device_get(summarize(state.homeostasis))
        record.update(metrics.flatten_diagnostics(summary))
        for warning in watch.update(step, summary):
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
