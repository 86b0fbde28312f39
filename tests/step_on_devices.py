"""Runs two train steps of a small model with every mechanism on the devices JAX sees.

Usage: python tests/step_on_devices.py OUT.npz [fsdp]. Run under
XLA_FLAGS=--xla_force_host_platform_device_count=N to simulate N devices.
"""

import sys

import flax
import jax
import numpy as np

from homeojax import config as config_lib
from homeojax import experiment, sharding

SITES = {
    "embedding": "dropout(rate=0.1)",
    "attn_weights": "rfb_kwta(sparsity=0.5, beta=2.0, period=2)",
    "attn_output": "smart_inhibition(sparsity=0.3, period=2)",
    "ffn_hidden": "kwta(sparsity=0.5, method=statistical, period=2), "
                  "smart_inhibition(sparsity=0.2, sampling=exact_k, period=2)",
    "block_output": "rfb_kwta(sparsity=0.3, period=2), dropout(rate=0.1)",
}


def main(out: str, fsdp: bool) -> None:
  c = config_lib.base_config()
  c.model.update(d_model=32, d_ff=64, heads=4, encoder_layers=1, decoder_layers=1, max_len=16)
  c.data.vocab_size = 32
  for stack in ("encoder", "decoder"):
    c.sites[stack].update(SITES)
  c.num_train_steps, c.mesh.fsdp = 10, fsdp
  exp = experiment.build(c)
  mesh = exp.mesh
  state, shardings = exp.init_state()
  step = exp.jit_train_step(shardings)
  rng = np.random.default_rng(0)
  for _ in range(2):
    lengths = rng.integers(2, 12, 8)
    batch = {k: np.zeros((8, 12), np.int32) for k in ("src", "tgt_in", "tgt_out")}
    for i, n in enumerate(lengths):
      for k in batch:
        batch[k][i, :n] = rng.integers(4, 32, n)
    state, _ = step(state, sharding.shard_batch(batch, mesh))
  flat = flax.traverse_util.flatten_dict(
      flax.serialization.to_state_dict(jax.device_get(state)), sep="/")
  np.savez(out, devices=len(jax.devices()), **{k: np.asarray(v) for k, v in flat.items()})


if __name__ == "__main__":
  main(sys.argv[1], fsdp=len(sys.argv) > 2 and sys.argv[2] == "fsdp")
