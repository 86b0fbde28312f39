"""Start-up shared by the command-line tools: one-line errors, logging, multi-host set-up."""

import os
import sys
from typing import Callable

from absl import app, flags, logging

from homeojax import sharding



def define_multihost_flags() -> None:
  """Defines --coordinator_address, --num_processes and --process_id (for `start`)."""
  flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0 "
                      "(auto-detected on TPU pods and clusters).")
  flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
  flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.")


def start(argv: list[str]) -> None:
  """Rejects stray arguments, quiets library logs and joins a multi-host job if asked."""
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # Orbax and TFDS are chatty at INFO.
  f = flags.FLAGS
  sharding.initialize_distributed(f.coordinator_address, f.num_processes, f.process_id)


# Errors caused by the user's input, the disk or a diverging run: one line, no traceback.
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def _fail(message: str) -> None:
  print(f"error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(1)


def _parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a bad flag (or a config file that fails to load) is one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if "Traceback (most recent call last):" in lines:  # A config file raised: keep its error.
      lines = [lines[0], lines[-1]]
    _fail(f"{' '.join(lines)} (see --helpshort)")
  except (AttributeError, KeyError) as e:  # A --config.FIELD override names no field.
    _fail(f"{unknown_field(e)} (see --helpshort)")


def unknown_field(e: AttributeError | KeyError) -> str:
  """The message of a `--config.FIELD` override that names no field."""
  while e.args and isinstance(e.args[0], Exception):
    e = e.args[0]
  return f"unknown config field {e.args[0] if e.args else e}"


def run(main: Callable[[list[str]], None]) -> None:
  """`app.run(main)`, printing `error: ...` and exiting 1 on a user error.

  Set HOMEOJAX_TRACEBACK=1 to get the full traceback instead.
  """
  def guarded(argv: list[str]) -> None:
    try:
      main(argv)
    except USER_ERRORS as e:
      if os.environ.get("HOMEOJAX_TRACEBACK"):
        raise
      _fail(str(e))

  app.run(guarded, flags_parser=_parse_flags)
