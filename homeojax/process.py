"""Process-wide concerns of the commands: one trainer per work dir, a clean stop on a
signal, library warnings that mean nothing to a user kept quiet, freed memory kept for
reuse, the CPU cores JAX uses, and a description of the CPU for run records."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import platform
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import jax
from absl import logging

LOCK_FILE = ".lock"
# glibc's mallopt options (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_memory() -> bool:
  """Makes the C allocator keep freed memory for reuse instead of returning it to the
  operating system; True if applied (glibc), False elsewhere (a no-op).

  On CPU, XLA allocates each call's temporaries as one block (about 280 MB for a `tiny`
  train step). glibc maps blocks over 32 MB afresh and unmaps them when freed, so every
  step page-faults its whole working set back in (70k faults, about a fifth of the step;
  `docs/performance.md`). One arena without mmap and without trimming reuses the block.
  Call it before JAX starts its threads (before the first computation). The price is a
  larger resident set: freed blocks stay mapped, and fragmentation grows the heap over
  the first tens of steps to a few times the working set before it settles.
  `HOMEOJAX_KEEP_FREED_MEMORY=0` turns it off.
  """
  if os.environ.get("HOMEOJAX_KEEP_FREED_MEMORY", "1") == "0":
    return False
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return False
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
  return all([mallopt(option, value) == 1 for option, value in settings])


def use_cpu_cores(devices: int | None = None) -> int | None:
  """Makes JAX's CPU backend expose `devices` devices (default: the cores this process
  may run on), unless XLA_FLAGS already sets a count; returns the count set, or None.

  One CPU device runs a decoding step's small ops on about one core; decoding gives each
  device batches of its own (`decode.translate_split`), so N devices use N cores. It
  changes nothing on GPU or TPU. Call it before JAX's first computation.
  """
  if devices is not None and devices < 1:
    raise ValueError(f"cpu devices={devices} must be at least 1")
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return None
  if devices is None:
    devices = len(os.sched_getaffinity(0))
  jax.config.update("jax_num_cpu_devices", devices)
  return devices


def cpu_description() -> str:
  """This machine's CPU model and core count, e.g. "AMD EPYC 7B13, 2 cores"."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    model = platform.processor() or platform.machine()
  return f"{model}, {os.cpu_count()} cores"


class Interrupted(Exception):
  """Training stopped on a signal, after saving the checkpoint of `step` (if any)."""

  def __init__(self, signal_name: str, exit_code: int, step: int, checkpoints: str):
    where = (f"after step {step}; its checkpoint is in {checkpoints!r}" if step
             else "before the first step")
    super().__init__(f"stopped by {signal_name} {where}: run the same command again to "
                     "resume")
    self.exit_code = exit_code


@contextlib.contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
  """Holds an exclusive lock on `workdir` (its `.lock` file) while the block runs.

  Raises OSError naming the holder at once if another process holds it. The operating
  system releases the lock when the holder exits in any way, `kill -9` included, so a
  stale lock never blocks a re-run.
  """
  fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
      raise OSError(f"work dir {str(workdir)!r} is in use by another training process "
                    f"({holder}); wait for it to end or stop it (Ctrl-C or SIGTERM saves a "
                    "checkpoint first)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)


@contextlib.contextmanager
def only_errors_logged() -> Iterator[None]:
  """Logs only errors (of absl logging, which Orbax and TFDS use) while the block runs."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(verbosity)


class StopSignals:
  """While active, SIGINT (Ctrl-C) and SIGTERM ask for a stop instead of killing.

  `received` is the name of the first such signal, or None; the training loop checks it
  after every step, saves a checkpoint and stops. A second signal acts as it normally
  would, at once. Outside the main thread (where Python cannot handle signals), nothing
  changes.
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.received: str | None = None
    self.exit_code = 0
    self._previous: dict[int, object] = {}

  def _handle(self, signum: int, frame) -> None:  # pylint: disable=unused-argument
    if self.received is None:
      self.received, self.exit_code = signal.Signals(signum).name, 128 + signum
      print(f"\n{self.received}: stopping after this step with a checkpoint (send it again "
            "to stop at once, without one)", file=sys.stderr, flush=True)
    signal.signal(signum, self._previous[signum])

  def __enter__(self) -> StopSignals:
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
