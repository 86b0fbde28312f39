"""Shared fixtures: a tiny fake Multi30K corpus made here (never the network)."""

import dataclasses
import gzip
import os
import random
import shutil
import subprocess
import sys
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
  """Writes raw/{split}.{en,de}.gz and tok/{split}.lc.norm.tok.{en,de}.gz under `root`."""
  (root / "raw").mkdir(parents=True)
  (root / "tok").mkdir()
  for seed, (split, n) in enumerate(sizes.items()):
    pairs = fake_pairs(n, seed)
    for lang, col in (("en", 0), ("de", 1)):
      with gzip.open(root / "raw" / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
        f.write("".join(p[col] + "\n" for p in pairs))
      with gzip.open(root / "tok" / f"{split}.lc.norm.tok.{lang}.gz", "wt",
                     encoding="utf-8") as f:
        f.write("".join(p[col].lower()[:-1] + " .\n" for p in pairs))
  return root


def pytest_configure(config):  # pylint: disable=unused-argument
  """Freed memory kept for reuse, as the commands do, before JAX starts its threads."""
  from homeojax import process  # pylint: disable=import-outside-toplevel
  process.keep_freed_memory()


@pytest.fixture(scope="session", autouse=True)
def shared_compilation_cache(tmp_path_factory):
  """One persistent XLA cache for every subprocess: each program compiles once per session."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("jax_cache")))
    patch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    patch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    yield


@pytest.fixture(scope="session")
def fake_multi30k(tmp_path_factory) -> Path:
  return write_corpus(tmp_path_factory.mktemp("multi30k"),
                      {"train": 400, "val": 40, "test_2016_flickr": 30})


ROOT = Path(__file__).resolve().parents[1]
# A vocabulary of whole words keeps the fake sentences within two buckets (8 and 16
# tokens): few shapes to compile.
TINY = ["--config.model.d_model=32", "--config.model.d_ff=64", "--config.model.heads=2",
        "--config.model.encoder_layers=1", "--config.model.decoder_layers=1",
        "--config.model.max_len=64", "--config.data.max_len=64",
        "--config.data.vocab_size=100", "--config.data.tokens_per_batch=256",
        "--config.data.eval_sentences=10", "--config.decode.tokens_per_batch=256",
        "--config.log_every=2", "--config.eval_every=4", "--config.checkpoint_every=2",
        "--config.num_train_steps=4", "--progress=false"]


def run(script: str, *args: str, check: bool = True, devices: int = 1, cwd: Path = ROOT,
        env: dict[str, str] | None = None, stdin: str | None = None,
        ) -> subprocess.CompletedProcess:
  """Runs a top-level script on `devices` simulated CPU devices, never the env's corpus."""
  env = {**os.environ, "HOMEOJAX_MULTI30K": "",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **(env or {})}
  result = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, input=stdin)
  if check and result.returncode != 0:
    raise AssertionError(f"{script} failed:\n{result.stdout}\n{result.stderr}")
  return result


# Paths as a user may type them: relative, under `~`, with spaces and non-ASCII letters.
RUN_DIR = "runs/wörk dir"  # Relative to the run's home.
CORPUS_DIR = "~/corpus dïr"


@dataclasses.dataclass
class TrainedRun:
  """A tiny rfb_kwta_dropout run (steps 2 and 4 saved), trained from `home` (also $HOME)
  with the relative work dir `RUN_DIR`, the corpus at `CORPUS_DIR` and the relative TFDS
  dir `tfds dïr`."""
  home: Path
  args: list[str]  # train.py's arguments, relative to `home`.
  first: subprocess.CompletedProcess

  @property
  def workdir(self) -> Path:
    return self.home / RUN_DIR

  def run(self, script: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """Runs a script from `home`, with HOME set to it."""
    return run(script, *args, cwd=self.home, env={"HOME": str(self.home)}, **kwargs)


# Marks a test that uses `trained_run`: under pytest-xdist, such tests share one worker,
# so the run is trained once.
USES_TRAINED_RUN = pytest.mark.xdist_group("trained_run")


@pytest.fixture(scope="session")
def trained_run(fake_multi30k, tmp_path_factory) -> TrainedRun:
  home = tmp_path_factory.mktemp("home")
  shutil.copytree(fake_multi30k, home / CORPUS_DIR.removeprefix("~/"))
  # configs/quick.py is no file under `home`: the shipped config of that name is used.
  args = ["--config=configs/quick.py:rfb_kwta_dropout", f"--workdir={RUN_DIR}",
          f"--config.data.local_dir={CORPUS_DIR}", "--config.data.tfds_dir=tfds dïr", *TINY]
  trained = TrainedRun(home, args, None)
  trained.first = trained.run("train.py", *args)
  return trained
