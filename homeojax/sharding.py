"""Device layout: a 1-D `data` mesh, state shardings (replicated or FSDP), batch placement."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Array = jax.Array


def make_mesh() -> Mesh:
  """A 1-D mesh over all devices, axis `data`."""
  return Mesh(np.asarray(jax.devices()), ("data",))


def state_shardings(mesh: Mesh, abstract_state: Any, fsdp: bool) -> Any:
  """Replicated leaves, or (fsdp) each leaf split on its largest axis divisible by devices."""
  n = mesh.shape["data"]

  def spec(leaf):
    if not fsdp or leaf.ndim == 0:
      return NamedSharding(mesh, P())
    for axis in np.argsort(leaf.shape)[::-1]:
      if leaf.shape[axis] % n == 0 and leaf.shape[axis] >= n:
        parts = [None] * leaf.ndim
        parts[axis] = "data"
        return NamedSharding(mesh, P(*parts))
    return NamedSharding(mesh, P())

  return jax.tree.map(spec, abstract_state)


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, Array]:
  """Places a host batch on the mesh, split along the batch axis (this host's part)."""
  sharding = NamedSharding(mesh, P("data"))
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


