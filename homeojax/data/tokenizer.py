"""A joint SentencePiece vocabulary, trained once per setting and cached."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def settings_key(texts: Sequence[str], vocab_size: int, model_type: str) -> str:
  """A short hash of the training text and settings; it names the cached model."""
  digest = hashlib.sha256(json.dumps([vocab_size, model_type]).encode())
  for text in texts:
    digest.update(text.encode("utf-8"))
    digest.update(b"\n")
  return digest.hexdigest()[:16]


def train_or_load(texts: Sequence[str], cache_dir: str | Path, vocab_size: int = 8000,
                  model_type: str = "unigram") -> Path:
  """The path of the SentencePiece model for these texts and settings, trained on first use.

  The model file is `cache_dir/spm-{key}.model`, so changed text or settings train a new
  one and an existing one is reused.
  """
  if vocab_size < 8:
    raise ValueError(f"vocab_size={vocab_size} is too small (at least 8)")
  path = Path(cache_dir) / f"spm-{settings_key(texts, vocab_size, model_type)}.model"
  if not path.exists():
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
      corpus = Path(tmp) / "corpus.txt"
      corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
      try:
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(tmp) / "spm"), vocab_size=vocab_size,
            model_type=model_type, character_coverage=1.0, pad_id=PAD_ID, unk_id=UNK_ID,
            bos_id=BOS_ID, eos_id=EOS_ID, input_sentence_size=1_000_000,
            shuffle_input_sentence=True, num_threads=2, minloglevel=2)
      except RuntimeError as e:
        raise ValueError(f"cannot train a SentencePiece vocabulary of {vocab_size} "
                         f"on {len(texts)} sentences: {e}") from None
      tmp_model = path.with_suffix(".tmp")
      tmp_model.write_bytes((Path(tmp) / "spm.model").read_bytes())
      tmp_model.replace(path)  # Atomic: a crash never leaves a partial model.
  return path


def load(path: str | Path) -> spm.SentencePieceProcessor:
  """Loads a SentencePiece model file."""
  return spm.SentencePieceProcessor(model_file=str(path))


def encode(sp: spm.SentencePieceProcessor, texts: Sequence[str]) -> list[np.ndarray]:
  """Token ids of each text, without BOS or EOS."""
  return [np.asarray(ids, np.int32) for ids in sp.encode(list(texts))]


def decode(sp: spm.SentencePieceProcessor, ids: np.ndarray) -> list[str]:
  """Texts of a `[batch, length]` id array, cut at the first EOS; padding ignored."""
  texts = []
  for row in np.asarray(ids).tolist():
    if EOS_ID in row:
      row = row[:row.index(EOS_ID)]
    texts.append(sp.decode([t for t in row if t > EOS_ID or t == UNK_ID]))
  return texts
