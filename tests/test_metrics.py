"""BLEU in the two data conventions."""

import math

from pytest import approx

from homeojax import metrics

REFS = ["A dog runs on the grass.", "Two men, one child."]
REFS_TOK = ["a dog runs on the grass .", "two men , one child ."]


def test_raw_convention_scores_sacrebleu_and_tokenized_bleu():
  scores = metrics.bleu_scores(REFS, REFS, REFS_TOK, "en", "raw")
  assert scores["sacrebleu"]["score"] == approx(100.0) and scores["bleu_tok"] == approx(100.0)
  assert "nrefs:1" in scores["sacrebleu"]["signature"]
  assert metrics.bleu_scores(REFS, REFS, ["", ""], "en", "raw")["bleu_tok"] is None


def test_tok_convention_scores_tokenized_output_as_is():
  scores = metrics.bleu_scores(REFS_TOK, REFS, REFS_TOK, "en", "tok")
  assert scores == {"bleu_tok": approx(100.0), "bleu_tok_bp": 1.0, "bleu_tok_ratio": 1.0}
  # Without tokenized references, the raw ones are lowercased and tokenized.
  assert metrics.bleu_scores(REFS_TOK, REFS, None, "en", "tok")["bleu_tok"] == approx(100.0)
  # Raw-looking output is not tokenized again: it scores below the tokenized form.
  assert metrics.bleu_scores(REFS, REFS, REFS_TOK, "en", "tok")["bleu_tok"] < 90.0


def test_brevity_penalty_and_length_ratio_are_reported():
  short = ["a dog runs .", "two men , one child ."]  # 10 of 13 reference tokens.
  scores = metrics.bleu_scores(short, None, REFS_TOK, "en", "tok")
  assert scores["bleu_tok_ratio"] == approx(10 / 13)
  assert scores["bleu_tok_bp"] == approx(math.exp(1 - 13 / 10))
  raw = metrics.sacrebleu_score(["A dog runs."], ["A dog runs on the grass."])
  assert raw["ratio"] == approx(4 / 7) and raw["bp"] < 1
