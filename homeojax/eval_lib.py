"""Evaluation of a checkpoint: decode a split or files, score BLEU, report homeostasis; and
`Translator`, a checkpoint ready to translate text from Python.

The checkpoint carries its config, model config and vocabulary hash, so a run directory
is all it needs. The homeostasis state is restored and only read.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import jax
import jax.numpy as jnp
import ml_collections

from homeojax import config as config_lib
from homeojax import decode as decode_lib
from homeojax import checkpoints, diagnostics, experiment, metrics, paths, train_lib
from homeojax.data import multi30k, tokenizer
from homeojax.data.batching import Batcher
from homeojax.layers import HOMEOSTASIS
from homeojax.experiment import Experiment
from homeojax.model import Transformer


def checkpoint_step(workdir: Path, checkpoint: str) -> tuple[Any, int]:
  """The manager and step for `latest`, `best` or a step number; clear errors if absent."""
  if not workdir.is_dir():
    raise FileNotFoundError(f"work dir {str(workdir)!r} does not exist")
  which = "best" if checkpoint == "best" else "checkpoints"
  if not (workdir / which).is_dir():
    raise FileNotFoundError(f"no {which}/ directory in {str(workdir)!r}: not a training run")
  manager = checkpoints.Checkpoints(workdir, keep=None)  # Read-only: safe beside training.
  manager = manager.best if checkpoint == "best" else manager.latest
  steps = manager.all_steps()
  if not steps:
    raise FileNotFoundError(f"{str(workdir / which)!r} holds no checkpoint")
  if checkpoint in ("latest", "best"):
    return manager, (manager.best_step() if checkpoint == "best" else manager.latest_step())
  if not checkpoint.isdigit() or int(checkpoint) not in steps:
    raise ValueError(f"checkpoint={checkpoint!r} is not 'latest', 'best' or one of {steps}")
  return manager, int(checkpoint)


@dataclasses.dataclass(frozen=True)
class Hypothesis:
  """A translation and its score: the log-probability of its tokens (EOS included) over
  the length penalty (`decode.length_penalty`)."""
  text: str
  score: float


@dataclasses.dataclass
class Translator:
  """A restored checkpoint, ready to translate.

      translator = Translator.from_workdir("runs/quick", checkpoint="best")
      translator.translate(["A dog runs."], beam=5)  # [Hypothesis(text=..., score=...)]
  """
  experiment: Experiment  # The run's config, model and mesh.
  step: int
  averaged_steps: tuple[int, ...]  # The checkpoints averaged (just `step` without).
  variables: dict  # `params` and `homeostasis`.
  sp: Any  # The run's SentencePiece processor.

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.experiment.config

  @property
  def model(self) -> Transformer:
    return self.experiment.model

  @property
  def mesh(self) -> Any:
    return self.experiment.mesh

  @classmethod
  def from_workdir(cls, workdir: str | Path, checkpoint: str = "latest",
                   eval_scale: str | None = None, average_last: int = 1) -> Translator:
    """Restores a run's checkpoint (`latest`, `best` or a step number) onto this host's
    devices, checking model and vocabulary. `eval_scale` overrides every Smart
    Inhibition's (`identity` or `expected_gain`).

    `average_last=N` averages the N newest kept checkpoints up to that step (`latest` or a
    step number): the parameters, and the homeostasis statistics alike (duty cycles and
    boost strengths are means too; step counts and constants are the newest's), so the
    boosts match the averaged model's history rather than its last step's.
    """
    if isinstance(average_last, bool) or not isinstance(average_last, int) or average_last < 1:
      raise ValueError(f"average_last={average_last!r} must be an integer >= 1")
    if average_last > 1 and checkpoint == "best":
      raise ValueError("average_last needs checkpoint='latest' or a step number, not 'best'")
    workdir = paths.absolute(workdir)
    manager, step = checkpoint_step(workdir, checkpoint)
    steps = [s for s in sorted(manager.all_steps()) if s <= step][-average_last:]
    if len(steps) < average_last:
      raise ValueError(f"average_last={average_last}, but {str(workdir / 'checkpoints')!r} "
                       f"keeps only steps {steps} up to {step}: raise keep_checkpoints")
    meta = checkpoints.read_meta(manager, step)
    c = config_lib.with_defaults(meta["config"])
    exp = experiment.build(c, eval_scale=eval_scale)
    vocab_path = workdir / meta["vocab"]
    if not vocab_path.is_file():
      raise FileNotFoundError(f"vocabulary {str(vocab_path)!r} of the checkpoint is missing")
    current = {"model": exp.model_cfg.to_dict(), "vocab": vocab_path.name,
               "vocab_sha256": checkpoints.file_sha256(vocab_path)}
    checkpoints.check_compatible(meta, current)  # Eval-only options may differ.
    abstract = exp.abstract_variables()
    restored = [checkpoints.restore_fields(manager, s, abstract)  # No optimizer is read.
                for s in steps]
    variables = jax.tree.map(
        lambda *leaves: (sum(leaves[1:], leaves[0]) / len(leaves)).astype(leaves[0].dtype)
        if jnp.issubdtype(leaves[0].dtype, jnp.floating) else leaves[-1], *restored)
    return cls(exp, step, tuple(steps), variables, tokenizer.load(vocab_path))

  @overload
  def translate(self, texts: Sequence[str], *, beam: int | None = None,
                alpha: float | None = None, penalty: str | None = None,
                n_best: None = None, tokens_per_batch: int | None = None,
                tokenized: bool = False) -> list[Hypothesis]: ...

  @overload
  def translate(self, texts: Sequence[str], *, beam: int | None = None,
                alpha: float | None = None, penalty: str | None = None, n_best: int,
                tokens_per_batch: int | None = None,
                tokenized: bool = False) -> list[list[Hypothesis]]: ...

  def translate(self, texts, *, beam=None, alpha=None, penalty=None, n_best=None,
                tokens_per_batch=None, tokenized=False):
    """The best translation of each text or, with `n_best=n`, its n best (n <= beam),
    best first. `beam`, `alpha`, `penalty` (`gnmt` or `fairseq`) and `tokens_per_batch`
    default to the run's config. A run of the `tok` convention lowercases and
    Moses-tokenizes the texts first (unless `tokenized`) and outputs that form too."""
    if isinstance(texts, str):
      raise TypeError("texts must be a sequence of strings, not one string")
    beam = self.config.decode.beam_size if beam is None else beam
    alpha = self.config.decode.length_penalty if alpha is None else alpha
    penalty = penalty or self.config.decode.penalty
    if penalty not in decode_lib.PENALTIES:
      raise ValueError(f"penalty={penalty!r} is not one of {decode_lib.PENALTIES}")
    tokens_per_batch = tokens_per_batch or self.config.decode.tokens_per_batch
    if beam < 1:
      raise ValueError(f"beam={beam} must be >= 1")
    if n_best is not None and not 1 <= n_best <= beam:
      raise ValueError(f"n_best={n_best} must be between 1 and beam={beam}")
    if tokens_per_batch < 1:
      raise ValueError(f"tokens_per_batch={tokens_per_batch} must be >= 1")
    if not texts:
      return []
    if self.config.data.convention == "tok" and not tokenized:
      texts = [metrics.moses_tokenize(t, self.config.data.source_lang) for t in texts]
    found = decode_lib.translate_split(
        self.model, self.variables, tokenizer.encode(self.sp, list(texts)), self.sp,
        beam=beam, alpha=alpha, penalty=penalty, tokens_per_batch=tokens_per_batch,
        mesh=self.mesh, n_best=n_best or 1)
    found = [[Hypothesis(text, score) for text, score in hyps] for hyps in found]
    return [hyps[0] for hyps in found] if n_best is None else found


def read_stdin() -> list[str]:
  """The lines of standard input (UTF-8, none empty)."""
  lines = multi30k.parse_lines(sys.stdin.buffer.read(), "standard input")
  if not lines:
    raise ValueError("standard input holds no sentence to translate")
  return lines


def split_texts(translator: Translator, workdir: Path, split: str,
                local_dir: str | None = None) -> dict[str, list[str]]:
  """A Multi30K split of the run's language pair: `source` in the run's convention
  (decoded as is), and the `target` and `target_tok` references."""
  c = translator.config
  texts = multi30k.load(c.data.source_lang, c.data.target_lang, (split,),
                        c.data.tfds_dir or str(workdir / "tfds"),
                        local_dir or c.data.local_dir or None)[split]
  return {**texts, "source": texts[train_lib.text_fields(c.data.convention)[0]]}


def tune_alpha(workdir: str | Path, alphas: Sequence[float], *, checkpoint: str = "latest",
               beam: int | None = None, penalty: str | None = None,
               local_dir: str | None = None, tokens_per_batch: int | None = None,
               average_last: int = 1) -> dict[str, Any]:
  """Decodes the validation split (never a test split) with each length-penalty exponent;
  returns, and writes to `WORKDIR/eval/step_N/alpha_tuning.json`, each one's tokenized
  BLEU, brevity penalty and length ratio, and the best by tokenized BLEU."""
  if not alphas or any(a < 0 for a in alphas):
    raise ValueError(f"alphas={list(alphas)} must be one or more numbers >= 0")
  workdir = paths.absolute(workdir)
  translator = Translator.from_workdir(workdir, checkpoint, average_last=average_last)
  c = translator.config
  texts = split_texts(translator, workdir, "validation", local_dir)
  rows = []
  for alpha in alphas:
    hyps = [h.text for h in translator.translate(
        texts["source"], beam=beam, alpha=alpha, penalty=penalty,
        tokens_per_batch=tokens_per_batch, tokenized=True)]
    bleu = metrics.bleu_scores(hyps, texts["target"], texts["target_tok"],
                               c.data.target_lang, c.data.convention)
    rows.append({"alpha": alpha, **{k: v for k, v in bleu.items() if k != "sacrebleu"},
                 **({"sacrebleu": bleu["sacrebleu"]["score"]} if "sacrebleu" in bleu else {})})
  result = {"workdir": str(workdir), "step": translator.step, "split": "validation",
            "beam": beam or c.decode.beam_size,
            "penalty": penalty or c.decode.penalty, "rows": rows,
            "best_alpha": max(rows, key=lambda r: r["bleu_tok"] or 0.0)["alpha"]}
  out_dir = workdir / "eval" / f"step_{translator.step}"
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "alpha_tuning.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
  return result


def evaluate(workdir: str | Path, *, checkpoint: str = "latest", split: str | None = None,
             source_file: str | None = None, sources: Sequence[str] | None = None,
             reference_file: str | None = None, reference_tok_file: str | None = None,
             beam: int | None = None, alpha: float | None = None,
             penalty: str | None = None,
             local_dir: str | None = None, output_dir: str | None = None,
             tokens_per_batch: int | None = None, eval_scale: str | None = None,
             average_last: int = 1, sentences: int = 0) -> dict[str, Any]:
  """Decodes one of a split (its first `sentences`, if not 0), a source file or the given
  `sources` (named `stdin`), and scores it; writes hypotheses and a JSON report; returns
  the report, whose `hypotheses` (not in the written report) are the translations. A
  split's report also has the teacher-forced `loss` (label-smoothed, as in training) and
  `accuracy` of its references: with `split="train"`, how well the model fits its data."""
  workdir = paths.absolute(workdir)
  if sum(x is not None for x in (split, source_file, sources)) != 1:
    raise ValueError("give exactly one of split or source_file (--split, --source_file)")
  if split is not None and split not in multi30k.SPLIT_FILES:
    raise ValueError(f"split={split!r} is not one of {tuple(multi30k.SPLIT_FILES)}")
  for path in (source_file, reference_file, reference_tok_file):
    if path is not None and not paths.absolute(path).is_file():
      raise FileNotFoundError(f"file {path!r} does not exist")
  if beam is not None and beam < 1:
    raise ValueError(f"beam={beam} must be >= 1")
  if tokens_per_batch is not None and tokens_per_batch < 1:
    raise ValueError(f"tokens_per_batch={tokens_per_batch} must be >= 1")
  if isinstance(sentences, bool) or not isinstance(sentences, int) or sentences < 0:
    raise ValueError(f"sentences={sentences!r} must be an integer >= 0")
  if sentences and split is None:
    raise ValueError(f"sentences={sentences} selects from a split: give --split")
  translator = Translator.from_workdir(workdir, checkpoint, eval_scale, average_last)
  c, step = translator.config, translator.step
  beam = beam or c.decode.beam_size
  alpha = c.decode.length_penalty if alpha is None else alpha
  penalty = penalty or c.decode.penalty

  read = lambda path: multi30k.read_lines(paths.absolute(path)) if path else None
  forced = {}
  if split is not None:
    texts = split_texts(translator, workdir, split, local_dir)
    if sentences:
      texts = {key: column[:sentences] for key, column in texts.items()}
    name = split
    exp = translator.experiment
    references = texts[train_lib.text_fields(c.data.convention)[1]]
    batcher = Batcher(tokenizer.encode(translator.sp, texts["source"]),
                      tokenizer.encode(translator.sp, references), c.data.tokens_per_batch,
                      exp.model_cfg.max_len, multiple_of=exp.mesh.shape["data"])
    forced = exp.teacher_forced(translator.variables["params"],
                                translator.variables[HOMEOSTASIS], batcher)
  else:
    texts = {"source": list(sources) if sources is not None else read(source_file),
             "target": read(reference_file), "target_tok": read(reference_tok_file)}
    name = "stdin" if sources is not None else paths.absolute(source_file).name
    for key in ("target", "target_tok"):
      if texts[key] is not None and len(texts[key]) != len(texts["source"]):
        raise ValueError(f"{len(texts['source'])} sources but {len(texts[key])} {key} lines")

  start = time.time()
  hyps = [h.text for h in translator.translate(
      texts["source"], beam=beam, alpha=alpha, penalty=penalty,
      tokens_per_batch=tokens_per_batch, tokenized=split is not None)]
  seconds = time.time() - start

  out_dir = (paths.absolute(output_dir) if output_dir
             else workdir / "eval" / f"step_{step}")
  out_dir.mkdir(parents=True, exist_ok=True)
  # With --eval_scale, beside (not over) the evaluation as trained.
  stem = (f"{name}{f'.first{sentences}' if sentences else ''}"
          f"{f'.{eval_scale}' if eval_scale else ''}"
          f"{f'.avg{average_last}' if average_last > 1 else ''}.beam{beam}")
  (out_dir / f"{stem}.hyp.txt").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
  report: dict[str, Any] = {
      "workdir": str(workdir), "step": step, "checkpoint": checkpoint, "data": name,
      "sentences": len(hyps), **forced, "beam": beam, "alpha": alpha, "penalty": penalty,
      "decode_seconds": seconds, "decode_devices": len(translator.mesh.local_devices),
      "variant": c.variant, "seed": c.seed, "eval_scale": eval_scale,
      "averaged_steps": list(translator.averaged_steps), "convention": c.data.convention,
      "source_lang": c.data.source_lang, "target_lang": c.data.target_lang}
  bleu = metrics.bleu_scores(hyps, texts["target"], texts["target_tok"], c.data.target_lang,
                             c.data.convention)
  report.update({k: v for k, v in bleu.items() if v is not None})
  report["homeostasis"] = diagnostics.summary_json(
      jax.device_get(translator.variables[HOMEOSTASIS]),
      translator.experiment.mechanisms)
  (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
  return {**report, "hypotheses": hyps}
