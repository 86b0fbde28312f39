"""Length-bucketed batches of fixed shapes, deterministic per (seed, epoch).

A batch is a dict of int32 numpy arrays: `src [B, L]` (source ids + EOS), `tgt_in [B, L]`
(BOS + target ids), `tgt_out [B, L]` (target ids + EOS) and `index [B]` (example index,
-1 for filler rows). Id 0 is padding. Every bucket has one fixed shape, so a jitted step
compiles once per bucket. The batch of a training step depends only on the step number,
which makes resuming exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from homeojax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


def bucket_lengths(max_len: int, step: int = 8) -> tuple[int, ...]:
  """Bucket lengths: multiples of `step` up to 64, then of 32, ending at `max_len`."""
  lengths = [n for n in range(step, min(max_len, 64) + 1, step)]
  lengths += list(range(96, max_len + 1, 32))
  return tuple(sorted({*lengths, max_len}))


@dataclasses.dataclass
class Batcher:
  """Groups `(source, target)` id sequences by length into fixed-shape batches.

  Each bucket's batch size is `tokens_per_batch // length`, rounded down to a multiple of
  `multiple_of` (the number of data shards). A smaller `bucket_step` pads less but
  compiles more batch shapes. Pairs longer than `max_len` are dropped
  (`dropped` counts them); pass `max_len` at least as long as the data for evaluation.
  """
  sources: Sequence[np.ndarray]
  targets: Sequence[np.ndarray] | None
  tokens_per_batch: int
  max_len: int
  multiple_of: int = 1
  seed: int = 0
  bucket_step: int = 8  # Bucket lengths are multiples of this up to 64 (`bucket_lengths`).

  def __post_init__(self):
    if self.targets is not None and len(self.targets) != len(self.sources):
      raise ValueError(f"{len(self.sources)} sources but {len(self.targets)} targets")
    if self.tokens_per_batch < self.max_len * self.multiple_of:
      raise ValueError(f"tokens_per_batch={self.tokens_per_batch} is below max_len x shards "
                       f"= {self.max_len * self.multiple_of}")
    self.lengths = bucket_lengths(self.max_len, self.bucket_step)
    needed = np.asarray([len(s) + 1 for s in self.sources])
    if self.targets is not None:
      needed = np.maximum(needed, [len(t) + 1 for t in self.targets])
    keep = needed <= self.max_len
    self.dropped = int((~keep).sum())
    bucket_of = np.searchsorted(self.lengths, needed)
    self.buckets = {length: np.flatnonzero(keep & (bucket_of == b))
                    for b, length in enumerate(self.lengths)}
    self.buckets = {k: v for k, v in self.buckets.items() if len(v)}
    self.batch_sizes = {length: max(self.multiple_of, self.tokens_per_batch // length
                                    // self.multiple_of * self.multiple_of)
                        for length in self.buckets}

  def plan(self, epoch: int | None) -> list[tuple[int, np.ndarray]]:
    """`(bucket length, example indices)` per batch; shuffled for an epoch, else in order."""
    rng = None if epoch is None else np.random.default_rng([self.seed, epoch])
    plan = []
    for length, members in self.buckets.items():
      if rng is not None:
        members = rng.permutation(members)
      size = self.batch_sizes[length]
      plan += [(length, members[i:i + size]) for i in range(0, len(members), size)]
    if rng is not None:
      plan = [plan[i] for i in rng.permutation(len(plan))]
    return plan

  def __len__(self) -> int:
    """Batches per epoch."""
    return sum(-(-len(m) // self.batch_sizes[n]) for n, m in self.buckets.items())

  def make_batch(self, length: int, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Pads the examples to `[batch size of the bucket, length]`."""
    size = self.batch_sizes[length]
    batch = {"src": np.full((size, length), PAD_ID, np.int32),
             "index": np.full((size,), -1, np.int32)}
    if self.targets is not None:
      batch["tgt_in"] = np.full((size, length), PAD_ID, np.int32)
      batch["tgt_out"] = np.full((size, length), PAD_ID, np.int32)
    for row, i in enumerate(indices):
      src = self.sources[i]
      batch["src"][row, :len(src) + 1] = np.append(src, EOS_ID)
      batch["index"][row] = i
      if self.targets is not None:
        tgt = self.targets[i]
        batch["tgt_in"][row, :len(tgt) + 1] = np.insert(tgt, 0, BOS_ID)
        batch["tgt_out"][row, :len(tgt) + 1] = np.append(tgt, EOS_ID)
    return batch

  def train_batches(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled batches; the batch of step s is the same in every run."""
    per_epoch = len(self)
    epoch, offset = divmod(start_step, per_epoch)
    while True:
      for length, indices in self.plan(epoch)[offset:]:
        yield self.make_batch(length, indices)
      epoch, offset = epoch + 1, 0

  def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
    """One pass over all kept examples, unshuffled."""
    for length, indices in self.plan(None):
      yield self.make_batch(length, indices)
