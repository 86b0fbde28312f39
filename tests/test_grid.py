"""homeojax.grid: the plan of runs, their names, their records, and skipping finished runs."""

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys

import jax
import numpy as np
import pytest

from homeojax import grid


def test_plan_puts_seeds_outermost_and_crosses_sweeps():
  runs = grid.plan(["dropout", "kwta"], ["0", "1"],
                   ["mechanisms.rfb_kwta.sparsity=0.1,0.5", "mechanisms.rfb_kwta.beta=2"])
  assert [r.name for r in runs] == [
      "dropout-sparsity0.1-beta2-seed0", "dropout-sparsity0.5-beta2-seed0",
      "kwta-sparsity0.1-beta2-seed0", "kwta-sparsity0.5-beta2-seed0",
      "dropout-sparsity0.1-beta2-seed1", "dropout-sparsity0.5-beta2-seed1",
      "kwta-sparsity0.1-beta2-seed1", "kwta-sparsity0.5-beta2-seed1"]
  assert runs[1].overrides == (("mechanisms.rfb_kwta.sparsity", "0.5"),
                               ("mechanisms.rfb_kwta.beta", "2"))


def test_lanes_share_the_plan_in_its_order():
  runs = grid.plan(["a", "b", "c"], ["0", "1"], [])
  lanes = [grid.lane_of(runs, f"{i}/2") for i in range(2)]
  assert [r.name for r in lanes[0]] == ["a-seed0", "c-seed0", "b-seed1"]
  assert [r.name for r in lanes[1]] == ["b-seed0", "a-seed1", "c-seed1"]
  assert grid.lane_of(runs, "0/1") == runs
  for bad in ("2/2", "1", "-1/2", "a/b", "0/0"):
    with pytest.raises(ValueError, match=f"lane={bad!r} is not I/N"):
      grid.lane_of(runs, bad)


@pytest.mark.parametrize("args, message", [
    ((["dropout"], ["x"], []), "seed='x'"),
    ((["dropout"], ["0"], ["mechanisms.rfb_kwta.sparsity"]),
     "'mechanisms.rfb_kwta.sparsity' is not FIELD=VALUE"),
])
def test_plan_rejects_bad_input(args, message):
  with pytest.raises(ValueError, match=message):
    grid.plan(*args)


def test_the_config_file_checks_variant_names_in_one_line():
  config = str(grid.SOURCE_DIR / "configs" / "exploration.py")
  grid.check_configs(grid.plan(["rfb_layer_output"], ["0"], []), config, [])
  with pytest.raises(ValueError) as error:
    grid.check_configs(grid.plan(["rfb", "nope"], ["0"], []), config, [])
  message = str(error.value)
  assert message.startswith("run nope-seed0: ") and "arm='nope' is not one of" in message
  assert "\n" not in message and "Traceback" not in message


def test_configs_must_come_from_the_same_source_tree(tmp_path, monkeypatch):
  grid.check_source()  # This checkout's own install.
  monkeypatch.setattr(grid, "SOURCE_DIR", tmp_path)  # As a clone using another's install.
  with pytest.raises(ValueError, match=f"outside this source tree {tmp_path} "):
    grid.check_source()
  monkeypatch.setattr(grid.importlib.util, "find_spec", lambda name: None)
  grid.check_source()  # An uninstalled checkout: its config files import no shipped ones.


def test_finished_runs_are_skipped(tmp_path):
  """From another directory (the shipped config), with a results dir under `~`."""
  (tmp_path / "résults dir" / "dropout-seed1").mkdir(parents=True)
  (tmp_path / "résults dir" / "dropout-seed1" / "run.json").write_text("{}")
  out = subprocess.run(
      [sys.executable, "-m", "homeojax.grid", "--config=configs/quick.py",
       "--variants=dropout", "--seeds=0,1", "--runs_dir=rüns", "--results_dir=~/résults dir",
       "--dry_run"], cwd=tmp_path, env={**os.environ, "HOME": str(tmp_path)},
      capture_output=True, text=True, check=True).stdout
  assert "[1/2] dropout-seed0: to run" in out and "[2/2] dropout-seed1: done" in out


def test_runs_train_and_evaluate_through_the_installed_commands(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(grid, "_run_logged", lambda command, log: calls.append(command) or 1.0)
  workdir = tmp_path / "rüns" / "dropout-seed0"
  workdir.mkdir(parents=True)
  for name in grid.COPIED:
    (workdir / name).write_text("")
  (workdir / "final").mkdir()
  (workdir / "spm-0123.model").write_bytes(b"vocabulary")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  record = grid.execute(grid.Run("dropout", 0), "/c/tiny.py", [("data.local_dir", "d ü")],
                        tmp_path / "rüns", tmp_path / "res", "validation", 5, 3, 100)
  train, evaluate, fit = calls
  assert evaluate[4:] == [f"--workdir={workdir}", "--split=validation", "--beam=5",
                          "--average_last=3", f"--output_dir={workdir / 'final'}"]
  assert fit[4:] == [evaluate[4], "--split=train", "--sentences=100", *evaluate[6:]]
  assert train[:4] == [sys.executable, "-m", "homeojax.cli", "train"]
  assert evaluate[:4] == [sys.executable, "-m", "homeojax.cli", "eval"]
  assert f"--workdir={workdir}" in train and "--config.data.local_dir=d ü" in train
  assert record["train_command"] == shlex.join(train)  # Spaces quoted: it can be re-run.
  saved = json.loads((tmp_path / "res" / "dropout-seed0" / "run.json").read_text())
  assert saved == record
  env = record["environment"]  # What else the numbers depend on.
  assert env["packages"]["jax"] == jax.__version__
  assert env["packages"]["numpy"] == np.__version__
  assert set(env["packages"]) == set(grid.RECORDED_PACKAGES)
  assert env["python"] == platform.python_version()
  assert env["cpu"].endswith(f", {os.cpu_count()} cores") and len(env["cpu"]) > 9
  assert env["xla_flags"] == "--xla_force_host_platform_device_count=2"
  assert env["vocab_sha256"] == {"spm-0123.model": hashlib.sha256(b"vocabulary").hexdigest()}
