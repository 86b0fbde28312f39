"""BLEU in the two data conventions."""

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
  assert scores == {"bleu_tok": approx(100.0)}
  # Without tokenized references, the raw ones are lowercased and tokenized.
  assert metrics.bleu_scores(REFS_TOK, REFS, None, "en", "tok") == {"bleu_tok": approx(100.0)}
  # Raw-looking output is not tokenized again: it scores below the tokenized form.
  assert metrics.bleu_scores(REFS, REFS, REFS_TOK, "en", "tok")["bleu_tok"] < 90.0
