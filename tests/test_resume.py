"""Stops and resumes: Ctrl-C, SIGTERM and kill -9 mid-run, each resumed to the result of
an uninterrupted run; one trainer per work dir; which configs may resume."""

import json
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

STEPS = 40
# Larger batches and a decaying beta: the run crosses epoch ends between the stops.
ARGS = [a for a in TINY if not a.startswith(("--config.num_train_steps",
                                             "--config.data.tokens_per_batch"))] + [
    f"--config.num_train_steps={STEPS}", "--config.checkpoint_every=4",
    "--config.eval_every=100", "--config.data.tokens_per_batch=2048",
    "--config.mechanisms.rfb_kwta.beta_decay=0.5",
    # Boosts clipped at once, averaged over 2 steps: the clip warning fires within a run.
    "--config.mechanisms.rfb_kwta.b_max=1.0001", "--config.mechanisms.rfb_kwta.period=2"]
ENV = {**os.environ, "HOMEOJAX_MULTI30K": ""}


def final_state(workdir: Path) -> dict:
  with ocp.CheckpointManager(workdir / "checkpoints") as manager:
    step = manager.latest_step()
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state["state"]))[0]
  return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def saved_steps(workdir: Path) -> list[int]:
  folder = workdir / "checkpoints"
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def command(workdir: Path, corpus: Path) -> list[str]:
  return [sys.executable, str(ROOT / "train.py"), "--config=configs/quick.py:rfb_kwta_dropout",
          f"--workdir={workdir}", f"--config.data.local_dir={corpus}", *ARGS]


def start_and_signal(workdir: Path, corpus: Path, after: int, signum: int,
                     try_second: bool) -> tuple[subprocess.CompletedProcess | None,
                                                subprocess.Popen]:
  """Starts training; once a checkpoint past step `after` is saved, sends `signum`.
  Returns a second trainer's attempt on the same work dir meanwhile (if `try_second`),
  and the process."""
  proc = subprocess.Popen(command(workdir, corpus), env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while not any(s > after for s in saved_steps(workdir)) and time.time() < deadline:
    assert proc.poll() is None, f"training ended before the signal: {proc.communicate()}"
    time.sleep(0.02)
  proc.send_signal(signal.SIGSTOP)  # Hold it mid-run while the second trainer tries.
  second = subprocess.run(command(workdir, corpus), env=ENV, capture_output=True, text=True,
                          timeout=600) if try_second else None
  proc.send_signal(signum)
  proc.send_signal(signal.SIGCONT)
  proc.wait(timeout=600)
  return second, proc


def test_stops_by_signal_and_kill_resume_bitwise_identically(fake_multi30k, tmp_path):
  out = subprocess.run(command(tmp_path / "straight", fake_multi30k), check=True, env=ENV,
                       capture_output=True, text=True, timeout=600).stdout
  epoch = int(re.search(r"(\d+) batches per epoch", out).group(1))
  assert STEPS // epoch >= 3
  workdir = tmp_path / "stopped"
  last = 0
  for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)):
    second, proc = start_and_signal(workdir, fake_multi30k, last, signum,
                                    try_second=signum == signal.SIGINT)
    if second:  # A second trainer on a work dir in use fails at once, naming the holder.
      assert second.returncode == 1 and "Traceback" not in second.stderr
      assert f"is in use by another training process (pid {proc.pid} " in second.stderr
    stderr = proc.stderr.read()
    assert proc.returncode == code, stderr
    if signum != signal.SIGKILL:  # A clean stop with a checkpoint of the step it ended.
      stopped = int(re.search(rf"stopped by {signal.Signals(signum).name} after step (\d+); "
                              "its checkpoint is in", stderr).group(1))
      assert "Traceback" not in stderr and last < stopped < STEPS
      assert saved_steps(workdir)[-1] == stopped
    last = saved_steps(workdir)[-1]
    if last:  # Resumes where the last one stopped (a stale lock does not block it).
      assert last < STEPS
  resumed = subprocess.run(command(workdir, fake_multi30k), check=True, env=ENV,
                           capture_output=True, text=True, timeout=600)
  assert f"Resumed from step {last}" in resumed.stdout
  assert re.search(r"warning: encoder_layers_0/attention_block/block_output/rfb_kwta_0: "
                   r"\d+% of the boosts have sat at the clip since step \d+", resumed.stdout)
  straight, again = final_state(tmp_path / "straight"), final_state(workdir)
  assert straight.keys() == again.keys() and int(again["['step']"]) == STEPS
  for key in straight:
    np.testing.assert_array_equal(again[key], straight[key], err_msg=key)
  betas = [v for k, v in straight.items() if k.endswith("['beta']")]
  assert betas and all(b == 0.5 ** (STEPS // epoch) for b in betas)  # Halved per epoch.
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  steps = [r["step"] for r in records]
  assert steps == sorted(set(steps))  # No duplicated log records after the resumes.
  walls = [r["wall_seconds"] for r in records]
  assert walls == sorted(walls) and walls[0] > 0  # Wall time adds up across the resumes.


def test_resume_compares_site_chains_by_meaning_and_names_the_site():
  def meta(chain, d_ff=64, spec=2):
    return {"model": {"d_ff": d_ff, "encoder_sites": {"embedding": "", "block_output": chain}},
            **({"spec": spec} if spec else {})}

  saved = meta("kwta(sparsity=0.1), dropout")
  check_compatible(saved, meta("kwta(method=exact, sparsity=0.10), dropout(rate=0.1)"))
  check_compatible(meta("smart_inhibition(sparsity=0.3, scaling=uniform)"),  # Eval-only.
                   meta("smart_inhibition(sparsity=0.3, scaling=uniform, "
                        "eval_scale=expected_gain)"))
  # A checkpoint of homeojax 0.1 (no spec version) trained Smart Inhibition version 1.
  v1 = meta("smart_inhibition(sparsity=0.3)", spec=None)
  check_compatible(v1, meta("smart_inhibition(sparsity=0.3, scaling='uniform', "
                            "method='exact')"))
  with pytest.raises(ValueError, match="differs from the config's 'smart_inhibition"):
    check_compatible(v1, meta("smart_inhibition(sparsity=0.3)"))
  with pytest.raises(ValueError, match=r"model\.encoder_sites\.block_output="
                     r"'kwta\(sparsity=0.1\), dropout' differs from the config's 'kwta"):
    check_compatible(saved, meta("kwta(sparsity=0.2), dropout"))
  with pytest.raises(ValueError, match="model.d_ff=64 differs from the config's 96"):
    check_compatible(saved, meta("kwta(sparsity=0.1), dropout", d_ff=96))


FAULTS_PER_CALL = """
import resource, statistics, sys
from homeojax import process
assert process.keep_freed_memory() == (sys.argv[1] == "keep")
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jnp.cumsum(x, 0) * jnp.cumsum(x, 1)))  # 2 x 64 MB temporaries.
x = jnp.ones((4096, 4096))
faults = []
for _ in range(48):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
# Once the heap has settled: fragmentation makes glibc grow it for some of the first ~20
# calls (rarely later), until a freed hole fits every call's temporaries.
print(statistics.median(faults[16:]))
"""


def test_kept_freed_memory_stops_page_faults_and_the_variable_turns_it_off():
  faults = {mode: float(subprocess.run(
      [sys.executable, "-c", FAULTS_PER_CALL, mode], check=True, capture_output=True,
      text=True, env={**ENV, "HOMEOJAX_KEEP_FREED_MEMORY": "1" if mode == "keep" else "0"},
  ).stdout) for mode in ("keep", "default")}
  assert faults["default"] > 30_000  # 128 MB of temporaries mapped afresh at every call...
  assert faults["keep"] < 500  # ... and reused once kept.
