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
  """Places a global host batch on the mesh, split along the batch axis.

  Every process builds the same global batch (it depends only on the step); each one
  contributes its contiguous block of rows, so hosts feed only their local devices.
  """
  sharding = NamedSharding(mesh, P("data"))
  index, count = jax.process_index(), jax.process_count()

  def local_rows(x: np.ndarray) -> np.ndarray:
    rows = x.shape[0] // count
    return x[index * rows:(index + 1) * rows]

  return {k: jax.make_array_from_process_local_data(sharding, local_rows(v), v.shape)
          for k, v in batch.items()}


def initialize_distributed(coordinator_address: str | None, num_processes: int | None,
                           process_id: int | None) -> None:
  """Joins a multi-host job (`jax.distributed.initialize`); a no-op for one process.

  On TPU pods and SLURM/MPI clusters JAX finds the values itself: pass none of them.
  """
  given = [v is not None for v in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    raise ValueError("give all of coordinator_address, num_processes and process_id, or none")
  if all(given):
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


