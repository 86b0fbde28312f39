"""homeojax.grid: the plan of runs, their names, and skipping finished runs."""

import subprocess
import sys

import pytest

from conftest import ROOT
from homeojax import grid


def test_plan_puts_seeds_outermost_and_crosses_sweeps():
  runs = grid.plan(["dropout", "kwta"], ["0", "1"],
                   ["regularizer.sparsity=0.1,0.5", "regularizer.beta=2"])
  assert [r.name for r in runs] == [
      "dropout-sparsity0.1-beta2-seed0", "dropout-sparsity0.5-beta2-seed0",
      "kwta-sparsity0.1-beta2-seed0", "kwta-sparsity0.5-beta2-seed0",
      "dropout-sparsity0.1-beta2-seed1", "dropout-sparsity0.5-beta2-seed1",
      "kwta-sparsity0.1-beta2-seed1", "kwta-sparsity0.5-beta2-seed1"]
  assert runs[1].overrides == (("regularizer.sparsity", "0.5"), ("regularizer.beta", "2"))


@pytest.mark.parametrize("args, message", [
    ((["nope"], ["0"], []), "variant='nope'"),
    ((["dropout"], ["x"], []), "seed='x'"),
    ((["dropout"], ["0"], ["regularizer.sparsity"]), "'regularizer.sparsity' is not FIELD=VALUE"),
])
def test_plan_rejects_bad_input(args, message):
  with pytest.raises(ValueError, match=message):
    grid.plan(*args)


def test_finished_runs_are_skipped(tmp_path):
  (tmp_path / "results" / "dropout-seed1").mkdir(parents=True)
  (tmp_path / "results" / "dropout-seed1" / "run.json").write_text("{}")
  out = subprocess.run(
      [sys.executable, "-m", "homeojax.grid", "--config=configs/quick.py",
       "--variants=dropout", "--seeds=0,1", f"--runs_dir={tmp_path / 'runs'}",
       f"--results_dir={tmp_path / 'results'}", "--dry_run"],
      cwd=ROOT, capture_output=True, text=True, check=True).stdout
  assert "[1/2] dropout-seed0: to run" in out and "[2/2] dropout-seed1: done" in out
