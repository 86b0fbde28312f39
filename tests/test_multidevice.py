"""Training on 4 simulated devices equals training on 1 with the same global batch.

Each configuration runs in a subprocess with XLA_FLAGS, so the rest of the suite keeps one
device. Tolerance: 1e-5 relative / 1e-6 absolute (reductions are ordered differently
across devices; masks and statistics come out identical).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent


def run_step(tmp_path: Path, devices: int, *extra: str) -> dict:
  out = tmp_path / f"state_{devices}_{'_'.join(extra)}.npz"
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  subprocess.run([sys.executable, str(HERE / "step_on_devices.py"), str(out), *extra],
                 env=env, check=True, timeout=600)
  with np.load(out) as data:
    assert int(data["devices"]) == devices
    return {k: data[k] for k in data.files if k != "devices"}


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  return run_step(tmp_path_factory.mktemp("one"), 1)


@pytest.mark.parametrize("mode", ["replicated", "fsdp"])
def test_four_devices_match_one(one_device, tmp_path, mode):
  four = run_step(tmp_path, 4, *(["fsdp"] if mode == "fsdp" else []))
  assert four.keys() == one_device.keys()
  homeostasis = [k for k in four if k.startswith("homeostasis/") and k.endswith("/duty")]
  assert len(homeostasis) >= 10  # Every mechanism with state, in both stacks.
  for key, value in one_device.items():
    np.testing.assert_allclose(four[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
  # The statistics moved: the comparison is not between two initial states.
  assert any(not np.allclose(one_device[k], one_device[k].mean()) for k in homeostasis)
