"""Resume: kill -9 mid-run and get the uninterrupted result; which configs may resume."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, TINY
from homeojax.train_lib import check_compatible

# Larger batches and a decaying beta: the 24 steps cross epoch ends, before and after the kill.
ARGS = [a for a in TINY if not a.startswith(("--config.num_train_steps",
                                             "--config.data.tokens_per_batch"))] + [
    "--config.num_train_steps=24", "--config.checkpoint_every=4", "--config.eval_every=100",
    "--config.data.tokens_per_batch=2048", "--config.regularizer.beta_decay=0.5"]


def final_state(workdir: Path) -> dict:
  with ocp.CheckpointManager(workdir / "checkpoints") as manager:
    step = manager.latest_step()
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state["state"]))[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def command(workdir: Path, corpus: Path) -> list[str]:
  return [sys.executable, str(ROOT / "train.py"), "--config=configs/quick.py:rfb_kwta_dropout",
          f"--workdir={workdir}", f"--config.data.local_dir={corpus}", *ARGS]


def test_kill_and_resume_is_bitwise_identical(fake_multi30k, tmp_path):
  env = {**os.environ, "HOMEOJAX_MULTI30K": ""}
  out = subprocess.run(command(tmp_path / "straight", fake_multi30k), check=True, env=env,
                       capture_output=True, text=True, timeout=600).stdout
  epoch = int(re.search(r"(\d+) batches per epoch", out).group(1))
  assert 24 // epoch >= 2
  killed = tmp_path / "killed"
  proc = subprocess.Popen(command(killed, fake_multi30k), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while not (killed / "checkpoints" / "8").is_dir() and time.time() < deadline:
    assert proc.poll() is None, "training ended before it could be killed"
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)  # Somewhere after step 8, before the end.
  proc.wait()
  with ocp.CheckpointManager(killed / "checkpoints") as manager:
    assert manager.latest_step() < 24  # Killed mid-run.
  resumed = subprocess.run(command(killed, fake_multi30k), check=True, env=env,
                           capture_output=True, text=True, timeout=600)
  assert "Resumed from step" in resumed.stdout
  straight, again = final_state(tmp_path / "straight"), final_state(killed)
  assert straight.keys() == again.keys() and int(again["['step']"]) == 24
  for key in straight:
    np.testing.assert_array_equal(again[key], straight[key], err_msg=key)
  betas = [v for k, v in straight.items() if k.endswith("['beta']")]
  assert betas and all(b == 0.5 ** (24 // epoch) for b in betas)  # beta 1, halved per epoch.
  steps = [int(l.split('"step": ')[1].split(",")[0])
           for l in (killed / "metrics.jsonl").read_text().splitlines()]
  assert steps == sorted(set(steps))  # No duplicated log records after the resume.


def test_resume_compares_site_chains_by_meaning_and_names_the_site():
  def meta(chain, d_ff=64):
    return {"model": {"d_ff": d_ff, "encoder_sites": {"embedding": "", "block_output": chain}}}

  saved = meta("kwta(sparsity=0.1), dropout")
  check_compatible(saved, meta("kwta(method=exact, sparsity=0.10), dropout(rate=0.1)"))
  check_compatible(meta("smart_inhibition(sparsity=0.3)"),  # An eval-only option.
                   meta("smart_inhibition(sparsity=0.3, eval_scale=expected_gain)"))
  with pytest.raises(ValueError, match=r"model\.encoder_sites\.block_output="
                     r"'kwta\(sparsity=0.1\), dropout' differs from the config's 'kwta"):
    check_compatible(saved, meta("kwta(sparsity=0.2), dropout"))
  with pytest.raises(ValueError, match="model.d_ff=64 differs from the config's 96"):
    check_compatible(saved, meta("kwta(sparsity=0.1), dropout", d_ff=96))
