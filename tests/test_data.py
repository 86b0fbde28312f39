"""The Multi30K builder, the tokenizer cache and batching, on a fake corpus."""

import gzip
import shutil

import numpy as np
import tensorflow_datasets as tfds
import pytest

from conftest import fake_pairs
from homeojax.data import batching, multi30k, tokenizer


def test_builder_reads_local_copy_in_file_order(fake_multi30k, tmp_path):
  data = multi30k.load("en", "de", ("train", "test_2016_flickr"), str(tmp_path),
                       str(fake_multi30k))
  expected = fake_pairs(400, 0)
  assert data["train"]["source"] == [p[0] for p in expected]
  assert data["train"]["target"] == [p[1] for p in expected]
  assert len(data["test_2016_flickr"]["source"]) == 30
  assert data["train"]["target_tok"][0] == expected[0][1].lower()[:-1] + " ."
  assert data["train"]["source_tok"][0] == expected[0][0].lower()[:-1] + " ."
  # The raw folder itself works too, and the reverse pair.
  reverse = multi30k.load("de", "en", ("validation",), str(tmp_path / "b"),
                          str(fake_multi30k / "raw"))
  assert reverse["validation"]["source"] == [p[1] for p in fake_pairs(40, 1)]


def test_missing_file_is_named(fake_multi30k, tmp_path):
  with pytest.raises(FileNotFoundError, match=r"test_2017_flickr\.en\.gz"):
    multi30k.load("en", "de", ("test_2017_flickr",), str(tmp_path), str(fake_multi30k))


def test_mismatched_line_counts_are_named(fake_multi30k, tmp_path):
  broken = tmp_path / "broken"
  shutil.copytree(fake_multi30k, broken)
  with gzip.open(broken / "raw" / "val.de.gz", "at", encoding="utf-8") as f:
    f.write("Eine Zeile zu viel.\n")
  with pytest.raises(ValueError, match=r"differ in line count.*val\.de\.gz has 41"):
    multi30k.load("en", "de", ("validation",), str(tmp_path / "tfds"), str(broken))


@pytest.mark.parametrize("content, message", [
    (b"ok\n\nstill ok\n", "line 2 is empty"), (b"ok\n\xff\xfe\n", "invalid UTF-8 at line 2")])
def test_bad_lines_are_named(tmp_path, content, message):
  path = tmp_path / "bad.en"
  path.write_bytes(content)
  with pytest.raises(ValueError, match=message):
    multi30k.read_lines(path)


@pytest.mark.parametrize("kwargs, message", [
    ({"source": "en", "target": "xx"}, "target language 'xx'"),
    ({"source": "de", "target": "de"}, "both 'de'")])
def test_bad_languages(tmp_path, kwargs, message):
  with pytest.raises(ValueError, match=message):
    multi30k.load(splits=("train",), tfds_dir=str(tmp_path), local_dir=None, **kwargs)


def test_tokenizer_is_cached_and_rebuilt_on_change(tmp_path):
  texts = [" ".join(p) for p in fake_pairs(300, 5)]
  path = tokenizer.train_or_load(texts, tmp_path, vocab_size=60)
  stamp = path.stat().st_mtime_ns
  assert tokenizer.train_or_load(texts, tmp_path, vocab_size=60) == path
  assert path.stat().st_mtime_ns == stamp  # Reused, not retrained.
  other = tokenizer.train_or_load(texts, tmp_path, vocab_size=70)
  assert other != path and other.exists()
  sp = tokenizer.load(path)
  assert sp.get_piece_size() == 60 and sp.pad_id() == tokenizer.PAD_ID
  ids = tokenizer.encode(sp, texts[:3])
  rows = np.zeros((3, 100), np.int32)
  for i, x in enumerate(ids):
    rows[i, :len(x)] = x
    rows[i, len(x)] = tokenizer.EOS_ID
  assert tokenizer.decode(sp, rows) == texts[:3]
  with pytest.raises(ValueError, match="vocabulary of 100000"):
    tokenizer.train_or_load(texts, tmp_path, vocab_size=100_000)


def test_batches_are_fixed_shape_complete_and_deterministic():
  rng = np.random.default_rng(0)
  sources = [rng.integers(4, 50, rng.integers(1, 30)) for _ in range(200)]
  targets = [rng.integers(4, 50, rng.integers(1, 30)) for _ in range(200)]
  sources.append(np.arange(4, 80))  # Too long: dropped.
  targets.append(np.arange(4, 10))
  b = batching.Batcher(sources, targets, tokens_per_batch=256, max_len=40, multiple_of=2)
  assert b.dropped == 1
  seen = []
  for length, indices in b.plan(epoch=3):
    batch = b.make_batch(length, indices)
    assert batch["src"].shape == (b.batch_sizes[length], length)
    assert batch["src"].shape[0] % 2 == 0
    for row, i in enumerate(batch["index"]):
      if i < 0:
        assert not batch["src"][row].any()
        continue
      seen.append(i)
      n = len(targets[i])
      np.testing.assert_array_equal(batch["tgt_in"][row, :n + 1], [2, *targets[i]])
      np.testing.assert_array_equal(batch["tgt_out"][row, :n + 1], [*targets[i], 3])
      assert not batch["tgt_out"][row, n + 1:].any()
  assert sorted(seen) == list(range(200))
  again = batching.Batcher(sources, targets, tokens_per_batch=256, max_len=40, multiple_of=2)
  first = next(again.train_batches(start_step=len(b) + 5))
  expected = b.make_batch(*b.plan(epoch=1)[5])
  for key in first:
    np.testing.assert_array_equal(first[key], expected[key])


def test_bucket_step_trades_padding_for_shapes():
  rng = np.random.default_rng(1)
  pairs = [rng.integers(4, 50, rng.integers(1, 60)) for _ in range(400)]
  padding, shapes = {}, {}
  for step in (4, 8, 16):
    b = batching.Batcher(pairs, pairs, tokens_per_batch=512, max_len=64, bucket_step=step)
    assert all(length % step == 0 for length in b.buckets)
    padded = sum(length * np.sum(b.make_batch(length, members)["index"] >= 0)  # Real rows.
                 for length, members in b.plan(epoch=0))
    padding[step], shapes[step] = padded, len(b.buckets)
  assert padding[4] < padding[8] < padding[16] and shapes[4] > shapes[8] > shapes[16]


def test_online_mode_downloads_the_official_files(fake_multi30k, tmp_path, monkeypatch):
  """Without a local copy, files come from the upstream URLs (served here from disk)."""
  requested = []

  def fake_download(self, urls):
    requested.extend(urls.values())
    out = {}
    for key, url in urls.items():
      name = url.rsplit("/", 1)[1]
      path = fake_multi30k / ("tok" if "/tok/" in url else "raw") / name
      if "/tok/" in url:  # Upstream tok files are plain text.
        path = tmp_path / name
        path.write_bytes(gzip.decompress((fake_multi30k / "tok" / (name + ".gz")).read_bytes()))
      out[key] = path
    return out

  monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
  data = multi30k.load("en", "de", ("validation",), str(tmp_path / "tfds"), None)
  assert data["validation"]["target"] == [p[1] for p in fake_pairs(40, 1)]
  base = "https://github.com/multi30k/dataset/raw/master/data/task1/"
  assert base + "raw/val.en.gz" in requested
  assert base + "tok/val.lc.norm.tok.de" in requested
  assert base + "raw/test_2016_flickr.de.gz" in requested
