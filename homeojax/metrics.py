"""BLEU in both Multi30K conventions, and metric output: JSONL, TensorBoard, progress bar."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sacrebleu
import sacremoses
import tqdm
from tensorboardX import SummaryWriter


def sacrebleu_score(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
  """sacreBLEU (0-100) on detokenized, cased text, with its signature, brevity penalty and
  length ratio."""
  bleu = sacrebleu.metrics.BLEU()
  result = bleu.corpus_score(list(hypotheses), [list(references)])
  return {"score": result.score, "signature": str(bleu.get_signature()), "bp": result.bp,
          "ratio": result.sys_len / result.ref_len}


@functools.cache
def _moses(lang: str) -> tuple[sacremoses.MosesPunctNormalizer, sacremoses.MosesTokenizer]:
  return sacremoses.MosesPunctNormalizer(lang=lang), sacremoses.MosesTokenizer(lang=lang)


def moses_tokenize(text: str, lang: str) -> str:
  """The upstream `lc.norm.tok` convention: lowercase, normalize punctuation, tokenize."""
  normalizer, tokenizer = _moses(lang)
  return tokenizer.tokenize(normalizer.normalize(text.lower()), escape=True, return_str=True)


def tokenized_bleu(hypotheses: Sequence[str], references_tok: Sequence[str] | None,
                   lang: str, tokenize_hypotheses: bool = True) -> dict | None:
  """BLEU (0-100) of lowercased, Moses-tokenized hypotheses (as given, for hypotheses
  already in that form) against `lc.norm.tok` references, as the Multi30K literature
  reports, with its brevity penalty `bp` and length `ratio` (hypothesis over reference
  tokens); None without tokenized references."""
  if not references_tok or not all(references_tok):
    return None
  hyps = [moses_tokenize(h, lang) for h in hypotheses] if tokenize_hypotheses else hypotheses
  bleu = sacrebleu.metrics.BLEU(tokenize="none", force=True)
  result = bleu.corpus_score(list(hyps), [list(references_tok)])
  return {"score": result.score, "bp": result.bp, "ratio": result.sys_len / result.ref_len}


CONVENTIONS = ("raw", "tok")


def bleu_scores(hypotheses: Sequence[str], references: Sequence[str] | None,
                references_tok: Sequence[str] | None, lang: str,
                convention: str) -> dict[str, Any]:
  """BLEU in a run's data convention. `raw` (cased, detokenized output): `sacrebleu`
  against `references` and `bleu_tok` after lowercasing and tokenizing the output. `tok`
  (output in the `lc.norm.tok` form): `bleu_tok` as is, against `references_tok` or, if
  none, the Moses-tokenized `references`; sacreBLEU needs detokenized output, so none.
  With tokenized references, also the brevity penalty `bleu_tok_bp` and the length ratio
  `bleu_tok_ratio` of tokenized BLEU."""
  scores = {}
  if convention == "raw":
    if references:
      scores["sacrebleu"] = sacrebleu_score(hypotheses, references)
  elif not (references_tok and all(references_tok)) and references:
    references_tok = [moses_tokenize(r, lang) for r in references]
  details = tokenized_bleu(hypotheses, references_tok, lang,
                           tokenize_hypotheses=convention == "raw")
  scores["bleu_tok"] = None if details is None else details["score"]
  if details is not None:
    scores["bleu_tok_bp"], scores["bleu_tok_ratio"] = details["bp"], details["ratio"]
  return scores


def flatten_diagnostics(summary: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
  """`{"homeostasis/<path>/<stat>": value}` from `diagnostics.summarize`."""
  return {f"homeostasis/{path}/{name}": float(value)
          for path, stats in summary.items() for name, value in stats.items()}


class MetricWriter:
  """Appends records to `WORKDIR/metrics.jsonl` and TensorBoard event files.

  A disabled writer (processes other than 0 of a multi-host job) does nothing.
  """

  def __init__(self, workdir: str | Path, enabled: bool = True):
    self.enabled = enabled
    self.path = Path(workdir) / "metrics.jsonl"
    self.tensorboard = SummaryWriter(str(Path(workdir) / "tensorboard")) if enabled else None

  def truncate_after(self, step: int) -> None:
    """Drops records past `step` (written after the checkpoint a run resumes from)."""
    if self.enabled and self.path.exists():
      lines = [l for l in self.path.read_text().splitlines()
               if l.strip() and json.loads(l)["step"] <= step]
      self.path.write_text("".join(l + "\n" for l in lines))

  def write(self, record: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")
    for key, value in record.items():
      if key != "step" and isinstance(value, (int, float, np.floating)) and value is not None:
        self.tensorboard.add_scalar(key, value, record["step"])
    self.tensorboard.flush()

  def close(self) -> None:
    if self.enabled:
      self.tensorboard.close()


class Progress:
  """A tqdm bar over steps showing loss, tokens/s and the ETA."""

  def __init__(self, start: int, total: int, enabled: bool = True):
    self.bar = tqdm.tqdm(initial=start, total=total, disable=not enabled, unit="step",
                         dynamic_ncols=True)

  def update(self, step: int, record: Mapping[str, Any]) -> None:
    self.bar.update(step - self.bar.n)
    self.bar.set_postfix(loss=f"{record['loss']:.3f}",
                         tok_s=f"{record['tokens_per_sec']:.0f}", refresh=False)

  def write(self, message: str) -> None:
    self.bar.write(message)

  def close(self) -> None:
    self.bar.close()
