"""Flags and start-up shared by train.py and eval.py: logging and multi-host set-up."""

from absl import app, flags, logging

from homeojax import sharding

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "Multi-host: host:port of process 0 (auto-detected on TPU pods and clusters).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")


def start(argv: list[str]) -> None:
  """Rejects stray arguments, quiets library logs and joins a multi-host job if asked."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # Orbax and TFDS are chatty at INFO.
  sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
