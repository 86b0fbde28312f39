"""Paths given by users: `~` expanded and made absolute; the configs shipped with the package."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path


def absolute(path: str | os.PathLike) -> Path:
  """`path` with `~` expanded, made absolute against the current directory (normalized)."""
  return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def shipped_configs() -> Path:
  """The directory of the configs installed with the package (`configs/` in the source)."""
  return Path(str(resources.files("homeojax.configs")))


def find_config(path: str) -> str:
  """The config file `path` names: itself if it is a file, else the shipped config of
  that name (`configs/tiny.py`, `tiny.py` and `tiny` all name the shipped `tiny.py`), so
  the commands work from any directory after a `pip install`. Anything else is returned
  as given, for the config loader's own error."""
  given = os.path.expanduser(path)
  if os.path.isfile(given) or Path(path).parent not in (Path("."), Path("configs")):
    return given
  name = Path(path).name if path.endswith(".py") else f"{Path(path).name}.py"
  shipped = shipped_configs() / name
  return str(shipped) if shipped.is_file() and name != "__init__.py" else path
