"""Shared fixtures: a tiny fake Multi30K corpus made here (never the network)."""

import gzip
import random
from pathlib import Path

import pytest

WORDS_EN = ["a", "man", "woman", "dog", "cat", "runs", "sits", "on", "the", "grass", "red",
            "blue", "ball", "street", "near", "water", "child", "plays", "with", "big"]
WORDS_DE = ["ein", "mann", "frau", "hund", "katze", "rennt", "sitzt", "auf", "dem", "gras",
            "rot", "blau", "ball", "strasse", "nahe", "wasser", "kind", "spielt", "mit", "gross"]


def fake_pairs(n: int, seed: int) -> list[tuple[str, str]]:
  """Sentence pairs whose German is a word-by-word mapping of the English."""
  rng = random.Random(seed)
  pairs = []
  for _ in range(n):
    idx = [rng.randrange(len(WORDS_EN)) for _ in range(rng.randint(3, 7))]
    en = " ".join(WORDS_EN[i] for i in idx)
    de = " ".join(WORDS_DE[i] for i in idx)
    pairs.append((en.capitalize() + ".", de.capitalize() + "."))
  return pairs


def write_corpus(root: Path, sizes: dict[str, int]) -> Path:
  """Writes raw/{split}.{en,de}.gz and tok/{split}.lc.norm.tok.de.gz under `root`."""
  (root / "raw").mkdir(parents=True)
  (root / "tok").mkdir()
  for seed, (split, n) in enumerate(sizes.items()):
    pairs = fake_pairs(n, seed)
    for lang, col in (("en", 0), ("de", 1)):
      with gzip.open(root / "raw" / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
        f.write("".join(p[col] + "\n" for p in pairs))
    with gzip.open(root / "tok" / f"{split}.lc.norm.tok.de.gz", "wt", encoding="utf-8") as f:
      f.write("".join(p[1].lower()[:-1] + " .\n" for p in pairs))
  return root


@pytest.fixture(scope="session")
def fake_multi30k(tmp_path_factory) -> Path:
  return write_corpus(tmp_path_factory.mktemp("multi30k"),
                      {"train": 400, "val": 40, "test_2016_flickr": 30})
