"""Where two systems' translations differ: the F-measure of target words by how often they
occur in the training data, BLEU by source length, and the sentences that differ most.

Every function takes lowercased, tokenized text (the `lc.norm.tok` convention: words
separated by spaces); `metrics.moses_tokenize` puts cased output into that form.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

import sacrebleu

# Training-frequency buckets of a word, by lower bound: 0 (unseen), 1, 2-4, 5-9, 10-99,
# 100-999 and >= 1000 occurrences.
FREQUENCY_BOUNDS = (0, 1, 2, 5, 10, 100, 1000)
# Source-length buckets, by lower bound in tokens: 1-9, 10-14, 15-19, >= 20.
LENGTH_BOUNDS = (1, 10, 15, 20)


def bucket_names(bounds: Sequence[int]) -> list[str]:
  """`["0", "1", "2-4", ..., ">=1000"]` for the lower bounds `bounds`."""
  names = []
  for low, high in zip(bounds, [*bounds[1:], None]):
    names.append(f">={low}" if high is None else
                 str(low) if high == low + 1 else f"{low}-{high - 1}")
  return names


def bucket_of(value: int, bounds: Sequence[int]) -> int:
  """The index of the last bound <= `value` (bounds ascending, `value` >= bounds[0])."""
  if value < bounds[0]:
    raise ValueError(f"value={value} is below the lowest bound {bounds[0]}")
  return max(i for i, low in enumerate(bounds) if value >= low)


def word_counts(sentences: Iterable[str]) -> collections.Counter:
  """How often each word occurs in tokenized `sentences`."""
  counts: collections.Counter = collections.Counter()
  for sentence in sentences:
    counts.update(sentence.split())
  return counts


def word_f_by_frequency(hypotheses: Sequence[str], references: Sequence[str],
                        train_counts: collections.Counter,
                        bounds: Sequence[int] = FREQUENCY_BOUNDS) -> list[dict]:
  """Per training-frequency bucket of the word: its reference and hypothesis
  occurrences, and precision, recall and F-measure of the hypotheses' words (a word
  matches as often as it occurs in both a hypothesis and its reference); buckets where
  neither side has a word are left out."""
  _check_lengths(hypotheses, references)
  matched, in_hyp, in_ref = ([0] * len(bounds) for _ in range(3))
  for hyp, ref in zip(hypotheses, references):
    hyp_words, ref_words = collections.Counter(hyp.split()), collections.Counter(ref.split())
    for word in hyp_words.keys() | ref_words.keys():
      b = bucket_of(train_counts.get(word, 0), bounds)
      matched[b] += min(hyp_words[word], ref_words[word])
      in_hyp[b] += hyp_words[word]
      in_ref[b] += ref_words[word]
  rows = []
  for name, m, h, r in zip(bucket_names(bounds), matched, in_hyp, in_ref):
    if h or r:
      precision, recall = (m / h if h else 0.0), (m / r if r else 0.0)
      f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
      rows.append({"bucket": name, "reference_words": r, "hypothesis_words": h,
                   "precision": precision, "recall": recall, "f": f})
  return rows


def bleu_by_length(hypotheses: Sequence[str], references: Sequence[str],
                   sources: Sequence[str], bounds: Sequence[int] = LENGTH_BOUNDS) -> list[dict]:
  """Corpus BLEU (tokenized, 0-100) of the sentences of each source-length bucket."""
  _check_lengths(hypotheses, references, sources)
  members: dict[int, list[int]] = collections.defaultdict(list)
  for i, source in enumerate(sources):
    members[bucket_of(max(len(source.split()), bounds[0]), bounds)].append(i)
  bleu = sacrebleu.metrics.BLEU(tokenize="none", force=True)
  return [{"bucket": name, "sentences": len(members[b]),
           "bleu": bleu.corpus_score([hypotheses[i] for i in members[b]],
                                     [[references[i] for i in members[b]]]).score}
          for b, name in enumerate(bucket_names(bounds)) if members[b]]


def differing_examples(sources: Sequence[str], references: Sequence[str],
                       baseline: Sequence[str], other: Sequence[str],
                       count: int = 3) -> list[dict]:
  """The `count` sentences where `other` beats `baseline` most, then the `count` where it
  loses most, by sentence BLEU (tokenized, smoothed); ties keep the corpus order."""
  _check_lengths(sources, references, baseline, other)
  bleu = sacrebleu.metrics.BLEU(tokenize="none", force=True, effective_order=True)
  rows = []
  for i, (src, ref, base, hyp) in enumerate(zip(sources, references, baseline, other)):
    if base != hyp:
      delta = bleu.sentence_score(hyp, [ref]).score - bleu.sentence_score(base, [ref]).score
      rows.append({"index": i, "source": src, "reference": ref, "baseline": base,
                   "other": hyp, "delta": delta})
  wins = sorted((r for r in rows if r["delta"] > 0), key=lambda r: -r["delta"])[:count]
  losses = sorted((r for r in rows if r["delta"] < 0), key=lambda r: r["delta"])[:count]
  return wins + losses


def _check_lengths(*columns: Sequence[str]) -> None:
  lengths = [len(c) for c in columns]
  if len(set(lengths)) > 1:
    raise ValueError(f"the sentence lists differ in length: {lengths}")
