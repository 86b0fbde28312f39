"""homeojax.analysis: word F-measure by training frequency, BLEU by length, examples."""

import collections

import pytest

from homeojax import analysis


def test_bucket_names_and_membership():
  assert analysis.bucket_names(analysis.FREQUENCY_BOUNDS) == [
      "0", "1", "2-4", "5-9", "10-99", "100-999", ">=1000"]
  assert analysis.bucket_names(analysis.LENGTH_BOUNDS) == ["1-9", "10-14", "15-19", ">=20"]
  bounds = analysis.FREQUENCY_BOUNDS
  assert [analysis.bucket_of(n, bounds) for n in (0, 1, 2, 4, 5, 99, 100, 10**6)] == [
      0, 1, 2, 2, 3, 4, 5, 6]
  with pytest.raises(ValueError, match="value=0 is below the lowest bound 1"):
    analysis.bucket_of(0, analysis.LENGTH_BOUNDS)


def test_word_f_counts_clipped_matches_per_bucket():
  train = collections.Counter({"a": 1000, "dog": 3, "cat": 1, "the": 200})
  hyps = ["a dog a dog", "the cat"]
  refs = ["a a cat zebra", "the cat the"]
  rows = {r["bucket"]: r for r in analysis.word_f_by_frequency(hyps, refs, train)}
  assert set(rows) == {"0", "1", "2-4", "100-999", ">=1000"}
  # "a": 2 in the hypothesis, 2 in the reference, 2 matched.
  assert rows[">=1000"] == {"bucket": ">=1000", "reference_words": 2,
                            "hypothesis_words": 2, "precision": 1.0, "recall": 1.0,
                            "f": 1.0}
  # "the": 1 in the hypothesis, 2 in the reference: precision 1, recall 1/2.
  assert rows["100-999"]["f"] == pytest.approx(2 * 0.5 / 1.5)
  # "cat": 1 and 1 in sentence 2, 0 and 1 in sentence 1.
  assert (rows["1"]["precision"], rows["1"]["recall"]) == (1.0, 0.5)
  # "dog" only in the hypotheses, "zebra" (unseen in training) only in a reference.
  assert (rows["2-4"]["hypothesis_words"], rows["2-4"]["f"]) == (2, 0.0)
  assert (rows["0"]["reference_words"], rows["0"]["recall"]) == (1, 0.0)
  with pytest.raises(ValueError, match=r"differ in length: \[2, 1\]"):
    analysis.word_f_by_frequency(hyps, refs[:1], train)


def test_bleu_by_length_scores_each_bucket_alone():
  sources = ["x " * 3, "x " * 12, "x " * 25, "x " * 11]
  refs = ["a b c d e", "f g h i j", "k l m n o", "p q r s t"]
  hyps = [refs[0], refs[1], "z z z z z", "p q r s t"]
  rows = analysis.bleu_by_length(hyps, refs, sources)
  assert [(r["bucket"], r["sentences"]) for r in rows] == [("1-9", 1), ("10-14", 2),
                                                          (">=20", 1)]
  assert [round(r["bleu"], 6) for r in rows] == [100.0, 100.0, 0.0]


def test_differing_examples_are_the_biggest_wins_then_losses():
  refs = ["a b c d", "e f g h", "i j k l", "m n o p"]
  base = ["a b c d", "e f x x", "i j k l", "m n o p"]
  other = ["a b x x", "e f g h", "i j k l", "x x x x"]
  shown = analysis.differing_examples(["s"] * 4, refs, base, other, count=1)
  assert [(e["index"], e["delta"] > 0) for e in shown] == [(1, True), (3, False)]
  assert shown[1]["delta"] == pytest.approx(-100.0)
