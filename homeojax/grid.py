r"""Runs a grid of experiments (variants x seeds x settings) through train.py and eval.py.

  python -m homeojax.grid --config=configs/tiny.py --variants=classic,dropout \
      --seeds=0,1,2 --runs_dir=runs/grid --results_dir=results/grid \
      --split=test_2016_flickr --set=data.local_dir=../shared/data/multi30k

Each run trains in RUNS_DIR/NAME (resuming if interrupted), is evaluated on --split, and
its logs, metrics and evaluation outputs are copied to RESULTS_DIR/NAME with a `run.json`
(commands, wall times, source commit, package versions, CPU, vocabulary hash). Runs whose
evaluation is already in RESULTS_DIR are skipped, so the same command continues a grid
across sessions. `--sweep=FIELD=V1,V2` adds one run per value; `--commit` commits each
finished run's results folder alone.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import itertools
import os
import platform
import shlex
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from homeojax import cli, paths, process
from homeojax import config as config_lib
from homeojax.checkpoints import file_sha256


SOURCE_DIR = Path(__file__).resolve().parent.parent
COMMAND = (sys.executable, "-m", "homeojax.cli")  # `train` or `eval` follows.
COPIED = ("metrics.jsonl", "train.log", "eval.log")
# Packages whose version can change a run's numbers, recorded in its `run.json`.
RECORDED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
                     "sentencepiece", "sacrebleu", "sacremoses")


@dataclasses.dataclass(frozen=True)
class Run:
  """One grid cell: a variant, a seed and extra config overrides."""
  variant: str
  seed: int
  overrides: tuple[tuple[str, str], ...] = ()

  @property
  def name(self) -> str:
    parts = [self.variant] + [f"{k.rsplit('.', 1)[-1]}{v}" for k, v in self.overrides]
    return "-".join(parts + [f"seed{self.seed}"])


def parse_assignment(text: str) -> tuple[str, str]:
  """`FIELD=VALUE` -> (FIELD, VALUE); ValueError naming the text otherwise."""
  field, sep, value = text.partition("=")
  if not sep or not field or not value:
    raise ValueError(f"{text!r} is not FIELD=VALUE")
  return field, value


def plan(variants: list[str], seeds: list[str], sweep: list[str]) -> list[Run]:
  """Every run of the grid, seeds outermost so that early runs cover every variant (the
  config file checks the variant names: `check_configs`)."""
  for seed in seeds:
    if not seed.isdigit():
      raise ValueError(f"seed={seed!r} is not a non-negative integer")
  axes = [[(field, v) for v in values.split(",")]
          for field, values in map(parse_assignment, sweep)]
  return [Run(variant, int(seed), tuple(cell))
          for seed in seeds for variant in variants for cell in itertools.product(*axes)]


def lane_of(runs: list[Run], lane: str) -> list[Run]:
  """The runs of lane `I/N`: every N-th run of the plan from the I-th (0-based), so that
  N grids side by side share the plan in its order."""
  index, sep, count = lane.partition("/")
  if not (sep and index.isdigit() and count.isdigit() and int(index) < int(count)):
    raise ValueError(f"lane={lane!r} is not I/N with 0 <= I < N")
  return runs[int(index)::int(count)]


def check_configs(runs: list[Run], config: str, sets: list[tuple[str, str]]) -> None:
  """Builds and validates every run's config as train.py would, before anything runs."""
  for run in runs:
    argv = ["train.py", f"--config={config}:{run.variant}", f"--config.seed={run.seed}",
            *[f"--config.{k}={v}" for k, v in (*sets, *run.overrides)]]
    parsed = flags.FlagValues()
    try:
      config_flags.DEFINE_config_file("config", None, flag_values=parsed, lock_config=True,
                                      sys_argv=argv)
      parsed(argv)
      config_lib.validate(parsed.config)
    except (AttributeError, KeyError) as e:
      raise ValueError(f"run {run.name}: {cli.unknown_field(e)}") from None
    except flags.Error as e:
      raise ValueError(f"run {run.name}: {cli.flag_error(e)}") from None
    except ValueError as e:
      raise ValueError(f"run {run.name}: {e}") from None


def check_source() -> None:
  """Raises unless the configs that config files import (`homeojax.configs`) come from the
  source tree of this code, whose commit `run.json` records; an uninstalled checkout has
  none to mix."""
  spec = importlib.util.find_spec("homeojax.configs")
  if spec is None:
    return
  configs = Path(spec.submodule_search_locations[0]).resolve()
  if not configs.is_relative_to(SOURCE_DIR):
    raise ValueError(  # A user error: the CLI prints it as one line.
        f"homeojax.configs comes from {configs}, outside this source tree {SOURCE_DIR} "
        "(another checkout's editable install), so runs would mix two versions: install "
        f"this checkout (pip install -e {SOURCE_DIR}) or run the grid from that one")


def _git_commit() -> str:
  result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=SOURCE_DIR, capture_output=True,
                          text=True)
  return result.stdout.strip() or "unknown"


def environment(workdir: Path) -> dict:
  """What a run's numbers may depend on besides its config and source: package versions,
  Python, the CPU, XLA_FLAGS, and the SHA-256 of each vocabulary in `workdir`."""
  versions = {}
  for package in RECORDED_PACKAGES:
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = None
  return {"packages": versions, "python": platform.python_version(),
          "cpu": process.cpu_description(),
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "vocab_sha256": {p.name: file_sha256(p) for p in sorted(workdir.glob("spm-*.model"))}}


def _run_logged(command: list[str], log: Path) -> float:
  """Runs `command`, appending its output to `log`; returns seconds."""
  start = time.time()
  with open(log, "a", encoding="utf-8") as f:
    f.write(f"$ {shlex.join(command)}\n")
    f.flush()
    code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT)
  if code:
    raise ChildProcessError(f"{' '.join(command)} exited with {code}; see {log}")
  return time.time() - start


def execute(run: Run, config: str, sets: list[tuple[str, str]], runs_dir: Path,
            results_dir: Path, split: str, beam: int, average_last: int = 1,
            train_sentences: int = 0) -> dict:
  """Trains and evaluates one run (on `split` and, if `train_sentences`, on that many
  training pairs), copies its outputs; returns its `run.json` record."""
  workdir = runs_dir / run.name
  workdir.mkdir(parents=True, exist_ok=True)
  train = [*COMMAND, "train", f"--config={config}:{run.variant}",
           f"--workdir={workdir}", f"--config.seed={run.seed}", "--progress=false"]
  train += [f"--config.{k}={v}" for k, v in (*sets, *run.overrides)]
  evaluation = lambda data, *more: [
      *COMMAND, "eval", f"--workdir={workdir}", f"--split={data}", *more, f"--beam={beam}",
      f"--average_last={average_last}", f"--output_dir={workdir / 'final'}"]
  evaluate = evaluation(split)
  train_seconds = _run_logged(train, workdir / "train.log")
  eval_seconds = _run_logged(evaluate, workdir / "eval.log")
  if train_sentences:
    eval_seconds += _run_logged(evaluation("train", f"--sentences={train_sentences}"),
                                workdir / "eval.log")
  out = results_dir / run.name
  out.mkdir(parents=True, exist_ok=True)
  for name in COPIED:
    shutil.copy(workdir / name, out / name)
  for path in (workdir / "final").iterdir():
    shutil.copy(path, out / path.name)
  record = {"name": run.name, "variant": run.variant, "seed": run.seed,
            "overrides": dict(sets + list(run.overrides)), "train_command": shlex.join(train),
            "eval_command": shlex.join(evaluate), "train_seconds": train_seconds,
            "eval_seconds": eval_seconds, "source_commit": _git_commit(),
            "environment": environment(workdir)}
  (out / "run.json").write_text(json.dumps(record, indent=1) + "\n")
  return record


def commit(path: Path, message: str) -> None:
  """Commits `path` alone (other staged changes stay staged), retrying a busy index."""
  repo = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path, text=True,
                        capture_output=True, check=True).stdout.strip()
  for attempt in range(5):
    add = subprocess.run(["git", "add", str(path)], cwd=repo, capture_output=True)
    done = add.returncode == 0 and subprocess.run(
        ["git", "commit", "-q", "-m", message, "--", str(path)], cwd=repo,
        capture_output=True).returncode == 0
    if done:
      return
    time.sleep(10 * (attempt + 1))
  print(f"warning: could not commit {path}", file=sys.stderr)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  check_source()
  f = flags.FLAGS
  sets = [parse_assignment(s) for s in f.set]
  runs = lane_of(plan(f.variants, f.seeds, f.sweep), f.lane)
  config = str(paths.absolute(paths.find_config(f.config)))
  if not Path(config).is_file():
    raise FileNotFoundError(f"config file {f.config!r} does not exist")
  check_configs(runs, config, sets)
  runs_dir, results_dir = paths.absolute(f.runs_dir), paths.absolute(f.results_dir)
  for i, run in enumerate(runs):
    done = (results_dir / run.name / "run.json").exists()
    print(f"[{i + 1}/{len(runs)}] {run.name}: {'done' if done else 'to run'}", flush=True)
    if done or f.dry_run:
      continue
    record = execute(run, config, sets, runs_dir, results_dir, f.split, f.beam,
                     f.average_last, f.train_sentences)
    print(f"  finished in {record['train_seconds'] / 60:.1f} + "
          f"{record['eval_seconds'] / 60:.1f} min", flush=True)
    if f.commit:
      commit(results_dir / run.name, f"Result: {results_dir.name}/{run.name} "
             f"({f.config}, {f.split}, beam {f.beam})")


def console_main() -> None:
  """`homeojax-grid`, also `python -m homeojax.grid`: defines the flags and runs `main`."""
  flags.DEFINE_string("config", None, "Experiment config file (no variant suffix); a name "
                      "such as tiny names a shipped config.")
  flags.DEFINE_list("variants", None, "The config's variants (arms), e.g. "
                    f"{', '.join(config_lib.VARIANTS)}.")
  flags.DEFINE_list("seeds", ["0"], "Seeds.")
  flags.DEFINE_multi_string("set", [], "FIELD=VALUE config override for every run.")
  flags.DEFINE_multi_string("sweep", [], "FIELD=V1,V2,...: one run per value; several "
                            "--sweep flags are crossed.")
  flags.DEFINE_string("runs_dir", None, "Where the training work dirs go.")
  flags.DEFINE_string("results_dir", None, "Where each run's outputs are copied.")
  flags.DEFINE_string("split", "validation", "Split eval.py decodes at the end.")
  flags.DEFINE_integer("beam", 5, "Beam size of the final evaluation.")
  flags.DEFINE_integer("average_last", 1, "The final evaluation averages the last N "
                       "checkpoints.")
  flags.DEFINE_integer("train_sentences", 0, "Also evaluate the first N training pairs "
                       "(memorization: BLEU and loss on data the model was fit to).")
  flags.DEFINE_bool("commit", False, "git-commit each finished run's results folder.")
  flags.DEFINE_string("lane", "0/1", "I/N: run only every N-th run of the plan from the "
                      "I-th, for N grids side by side (results/common.sh).")
  flags.DEFINE_bool("dry_run", False, "Print the runs and their state; run nothing.")
  flags.mark_flags_as_required(["config", "variants", "runs_dir", "results_dir"])
  cli.run(main)


if __name__ == "__main__":
  console_main()
