"""Every row of docs/errors.md: the command fails with its one-line message, losing nothing."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, TINY, USES_TRAINED_RUN
from homeojax import experiment, train_lib


def doc_rows() -> list[tuple[str, str, str, str]]:
  """(section, case, command, message) of every table row of docs/errors.md."""
  rows, section = [], ""
  for line in (ROOT / "docs" / "errors.md").read_text().splitlines():
    if line.startswith("## "):
      section = line[3:].strip()
    elif line.startswith("| ") and not line.startswith("| Case"):
      cells = [c.strip().strip("`").replace("\\|", "|")
               for c in re.split(r"(?<!\\)\|", line)[1:-1]]
      rows.append((section, *cells))
  return rows


ROWS = doc_rows()


def checkpoint_steps(workdir: Path) -> list[str]:
  return sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_the_doc_has_every_kind_of_row():
  sections = {row[0] for row in ROWS}
  assert sections == {"Configuration", "Data", "Command line and files", "Checkpoints",
                      "Numerics"}
  assert len(ROWS) >= 40


# Rows on a copy of the trained run share its worker (it is trained once per worker).
@pytest.mark.parametrize("section, case, command, message", [
    pytest.param(*row, id=row[1], marks=[USES_TRAINED_RUN] if "$RUN" in row[2] else [])
    for row in ROWS])
def test_error_row(section, case, command, message, fake_multi30k, tmp_path, request):
  env = {**os.environ, "HOMEOJAX_MULTI30K": "", "HOMEOJAX_TRACEBACK": "",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
         "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
         "DATA": str(tmp_path / "data"), "WORK": str(tmp_path / "work"),
         "TINY": " ".join(TINY + ["--config.checkpoint_every=1000"]),
         "RUN": str(tmp_path / "run")}
  shutil.copytree(fake_multi30k, env["DATA"])
  if "$RUN" in command:
    trained_run = request.getfixturevalue("trained_run")
    shutil.copytree(trained_run.workdir, env["RUN"])
    replaced = {"--workdir": env["RUN"], "--config.data.local_dir": env["DATA"],
                "--config.data.tfds_dir": str(tmp_path / "tfds")}  # $RUN_ARGS splits at spaces.
    env["RUN_ARGS"] = " ".join(
        f"{a.split('=')[0]}={replaced[a.split('=')[0]]}" if a.split("=")[0] in replaced
        else a for a in trained_run.args)
    before = checkpoint_steps(Path(env["RUN"]))
  result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
  expected = message.replace("$WORK", env["WORK"])
  errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert result.returncode == 1, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  assert len(errors) == 1 and expected in errors[0], result.stderr
  if section == "Configuration" or "-m homeojax." in command:
    assert not Path(env["WORK"]).exists()  # Failed before writing anything.
  if "$RUN" in command:
    assert checkpoint_steps(Path(env["RUN"])) == before
  if section == "Numerics":
    bad_step = int(re.search(r"at step (\d+)", errors[0]).group(1))
    kept = checkpoint_steps(Path(env["WORK"]))
    assert kept and all(int(s) < bad_step for s in kept)


def test_nonfinite_statistic_names_its_step_and_site(tmp_path):
  good = {"finite": True, "finite_stats": True}
  state = experiment.TrainState(step=12, params={}, opt_state={}, homeostasis={
      "encoder": {"ffn": {"duty": jnp.array([0.5, np.nan]), "steps": jnp.array(3)}}})
  train_lib.check_finite_steps([good, good], 11, state, tmp_path)  # All finite: no error.
  with pytest.raises(FloatingPointError,
                     match=r"statistic encoder/ffn/duty at step 12; the last good"):
    train_lib.check_finite_steps([good, {**good, "finite_stats": False}], 11, state,
                                 tmp_path)
  with pytest.raises(FloatingPointError, match="loss or gradient at step 11"):
    train_lib.check_finite_steps([{**good, "finite": False}, good], 11, state, tmp_path)
