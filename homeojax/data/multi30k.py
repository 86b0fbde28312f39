"""Multi30K task 1 as a tensorflow-datasets builder, online or from a local copy.

Online, files come from the official repository (checksums in `checksums.tsv`). Offline,
`local_dir` is a directory laid out like the upstream `data/task1`: `raw/{split}.{lang}.gz`
(required) and `tok/{split}.lc.norm.tok.{lang}[.gz]` (optional, for tokenized BLEU);
a directory that holds the raw files itself works too. No network is touched then.
Examples keep file order: example i is line i of every language file.
"""

from __future__ import annotations

import gzip
import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import gcs_utils

from homeojax import paths, process

gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access  # Never look up GCS.

BASE_URL = "https://github.com/multi30k/dataset/raw/master/data/task1/"
LANGUAGES = ("en", "de", "fr", "cs")
# TFDS split name -> upstream file prefix.
SPLIT_FILES = {
    "train": "train",
    "validation": "val",
    "test_2016_flickr": "test_2016_flickr",
    "test_2017_flickr": "test_2017_flickr",
    "test_2017_mscoco": "test_2017_mscoco",
    "test_2018_flickr": "test_2018_flickr",
}
DEFAULT_SPLITS = ("train", "validation", "test_2016_flickr")


class Multi30kConfig(tfds.core.BuilderConfig):
  """A language pair, e.g. `en-de`."""

  def __init__(self, *, source: str, target: str, **kwargs):
    super().__init__(name=f"{source}-{target}", description=f"{source} to {target}", **kwargs)
    self.source, self.target = source, target


def local_file(local_dir: str | os.PathLike, kind: str, split: str, lang: str) -> Path | None:
  """The local raw or tok (`kind`) file of a split and language, or None if absent."""
  root = Path(local_dir)
  prefix = SPLIT_FILES[split]
  name = f"{prefix}.{lang}" if kind == "raw" else f"{prefix}.lc.norm.tok.{lang}"
  folders = [root / kind] + ([root] if kind == "raw" else [root.parent / "tok"])
  for folder, suffix in itertools.product(folders, (".gz", "")):
    if (folder / (name + suffix)).is_file():
      return folder / (name + suffix)
  return None


def read_lines(path: str | os.PathLike) -> list[str]:
  """The lines of a UTF-8 text file, gzip or plain, with a clear error on bad content."""
  path = Path(path)
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rb") as f:
    return parse_lines(f.read(), str(path))


def parse_lines(data: bytes, name: str) -> list[str]:
  """The lines of UTF-8 `data`; ValueError naming `name` and the line if one is invalid
  UTF-8 or empty."""
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    raise ValueError(f"{name}: invalid UTF-8 at line {line} (byte {e.start})") from None
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  for number, line in enumerate(lines, 1):
    if not line.strip():
      raise ValueError(f"{name}: line {number} is empty")
  return lines


class Multi30k(tfds.core.GeneratorBasedBuilder):
  """Multi30K task 1: image descriptions in en, de, fr and cs, aligned by line."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Task 1 raw sentences with tokenized target references.",
                   "1.1.0": "Tokenized sources too (`source_tok`)."}
  BUILDER_CONFIGS = [Multi30kConfig(source=s, target=t)
                     for s, t in itertools.permutations(LANGUAGES, 2)]

  def __init__(self, *, local_dir: str | None = None,
               splits: Sequence[str] = DEFAULT_SPLITS, **kwargs):
    for split in splits:
      if split not in SPLIT_FILES:
        raise ValueError(f"split={split!r} is not one of {tuple(SPLIT_FILES)}")
    if local_dir is not None and not Path(local_dir).is_dir():
      raise FileNotFoundError(f"local Multi30K directory {local_dir!r} does not exist")
    self.local_dir, self.splits = local_dir, tuple(splits)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "index": tfds.features.Scalar(dtype=np.int64),
            "source": tfds.features.Text(),
            "target": tfds.features.Text(),
            "source_tok": tfds.features.Text(),  # Lowercased, normalized, Moses-tokenized.
            "target_tok": tfds.features.Text(),  # The same; "" where upstream has none.
        }),
        supervised_keys=("source", "target"),
        homepage="https://github.com/multi30k/dataset",
        disable_shuffling=True,
    )

  def _files(self, dl_manager) -> dict[str, dict[str, Path | None]]:
    """Per split: the source, target and tokenized source and target paths."""
    cfg = self.builder_config
    roles = (("source", cfg.source), ("target", cfg.target), ("source_tok", cfg.source),
             ("target_tok", cfg.target))
    if self.local_dir is None:
      urls = {f"{split}/{role}": BASE_URL + (
          f"tok/{SPLIT_FILES[split]}.lc.norm.tok.{lang}" if role.endswith("_tok")
          else f"raw/{SPLIT_FILES[split]}.{lang}.gz")
              for split in self.splits for role, lang in roles}
      paths = dl_manager.download(urls)
      return {split: {role: Path(paths[f"{split}/{role}"]) for role, _ in roles}
              for split in self.splits}
    files = {}
    for split in self.splits:
      source = local_file(self.local_dir, "raw", split, cfg.source)
      target = local_file(self.local_dir, "raw", split, cfg.target)
      for lang, path in ((cfg.source, source), (cfg.target, target)):
        if path is None:
          raise FileNotFoundError(
              f"Multi30K file {SPLIT_FILES[split]}.{lang}.gz for split {split!r} not found "
              f"in {self.local_dir!r} (looked in raw/ and the directory itself)")
      files[split] = {"source": source, "target": target,
                      "source_tok": local_file(self.local_dir, "tok", split, cfg.source),
                      "target_tok": local_file(self.local_dir, "tok", split, cfg.target)}
    return files

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(paths)
            for split, paths in self._files(dl_manager).items()}

  def _generate_examples(self, paths: dict[str, Path | None]) -> Iterator:
    lines = {role: read_lines(path) for role, path in paths.items() if path}
    counts = {paths[role]: len(found) for role, found in lines.items()}
    if len(set(counts.values())) > 1:
      raise ValueError("Multi30K files differ in line count: "
                       + ", ".join(f"{p} has {n}" for p, n in counts.items()))
    for i in range(len(lines["source"])):
      yield i, {"index": i, **{role: lines[role][i] if role in lines else "" for role in paths}}


def load(source: str, target: str, splits: Sequence[str], tfds_dir: str,
         local_dir: str | None = None) -> dict[str, dict[str, list[str]]]:
  """Prepares (once) and reads the given splits: `{split: {source, target, source_tok,
  target_tok}}` (the `_tok` lists hold "" where the copy has no tokenized file).

  Splits missing from an earlier preparation are added by preparing again.
  """
  for lang, name in ((source, "source"), (target, "target")):
    if lang not in LANGUAGES:
      raise ValueError(f"{name} language {lang!r} is not one of {LANGUAGES}")
  if source == target:
    raise ValueError(f"source and target language are both {source!r}")
  wanted = tuple(dict.fromkeys((*DEFAULT_SPLITS, *splits)))
  local_dir = str(paths.absolute(local_dir)) if local_dir else None
  builder = Multi30k(config=f"{source}-{target}", data_dir=str(paths.absolute(tfds_dir)),
                     local_dir=local_dir, splits=wanted,
                     file_format="array_record")  # No TensorFlow needed.
  mode = tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
  with process.only_errors_logged():  # TFDS warns that a new data dir has no info yet.
    prepared = builder.is_prepared()
  if prepared and not set(wanted) <= set(builder.info.splits):
    mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
  tfds.disable_progress_bar()
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      download_mode=mode, try_download_gcs=False))
  out = {}
  for split in splits:
    data = builder.as_data_source(split=split)
    rows = [data[i] for i in range(len(data))]
    out[split] = {key: [row[key].decode("utf-8") for row in rows]
                  for key in ("source", "target", "source_tok", "target_tok")}
  return out
