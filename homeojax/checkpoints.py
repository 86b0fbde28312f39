"""Checkpoints: the latest N and the best by validation BLEU (Orbax), their metadata, and
the compatibility check between a checkpoint and a config."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from homeojax import config as config_lib
from homeojax import process
from homeojax.mechanisms import parse_chain
from homeojax.model import TransformerConfig

MODEL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TransformerConfig)}


def file_sha256(path: Path) -> str:
  """The SHA-256 of a file's bytes, in hex."""
  return hashlib.sha256(Path(path).read_bytes()).hexdigest()



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

  def save(self, state: Any, meta: dict, bleu: float | None = None) -> None:
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
            step: int | None = None) -> tuple[Any, dict]:
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
                        abstract_state: Any) -> tuple[Any, dict]:
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
    old = saved["model"].get(key, MODEL_DEFAULTS.get(key))  # A field newer than the run.
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
