"""Packaging as users install it: declared imports, the wheel's contents, the installed
commands from another directory, and shipped configs."""

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import homeojax
from conftest import ROOT
from homeojax import cli, paths

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = {"homeojax-train": "homeojax.cli:train_main", "homeojax-eval": "homeojax.cli:eval_main",
           "homeojax-grid": "homeojax.grid:console_main",
           "homeojax-report": "homeojax.report:console_main"}


def imported_distributions(folders: list[Path]) -> set[str]:
  """The installed distributions that the Python files under `folders` import."""
  modules = set()
  for folder in folders:
    for file in folder.rglob("*.py"):
      for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
          modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
          modules.add(node.module.split(".")[0])
  owners = importlib.metadata.packages_distributions()
  return {dist for module in modules - {"homeojax", "conftest", "configs"}
          for dist in owners.get(module, [])}


def names(requirements: list[str]) -> set[str]:
  return {re.split(r"[<>=\[ ]", r)[0].lower().replace("_", "-") for r in requirements}


def test_every_imported_package_is_declared():
  runtime = names(PYPROJECT["project"]["dependencies"])
  test = names(PYPROJECT["project"]["optional-dependencies"]["test"])
  used = {d.lower().replace("_", "-")
          for d in imported_distributions([ROOT / "homeojax", ROOT / "configs"])}
  assert used <= runtime, used - runtime
  used_by_tests = {d.lower().replace("_", "-") for d in imported_distributions([ROOT / "tests"])}
  assert used_by_tests <= runtime | test, used_by_tests - runtime - test
  assert not test & runtime  # Test-only packages sit in the extra alone.


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
  """The wheel `pip install .` builds, built from a copy of the sources (offline)."""
  source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
  for name in ("pyproject.toml", "README.md", "LICENSE"):
    shutil.copy(ROOT / name, source / name)
  for name in ("homeojax", "configs"):
    shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "--quiet", "-w", str(out), str(source)], check=True, capture_output=True)
  return next(out.glob("homeojax-*.whl"))


def test_wheel_ships_configs_license_scripts_and_one_version(wheel):
  with zipfile.ZipFile(wheel) as z:
    files = set(z.namelist())
    dist_info = next(Path(f).parent for f in files if f.endswith(".dist-info/METADATA"))
    metadata = z.read(f"{dist_info}/METADATA").decode()
    entry_points = z.read(f"{dist_info}/entry_points.txt").decode()
    license_text = z.read(f"{dist_info}/licenses/LICENSE").decode()
  shipped = {f"homeojax/configs/{p.name}" for p in (ROOT / "configs").glob("*.py")}
  assert shipped and shipped <= files
  assert f"Version: {homeojax.__version__}\n" in metadata
  assert wheel.name.startswith(f"homeojax-{homeojax.__version__}-")
  assert "License-Expression: Apache-2.0" in metadata
  assert "Apache License" in license_text and "Version 2.0" in license_text
  assert license_text == (ROOT / "LICENSE").read_text()
  for script, target in SCRIPTS.items():
    assert f"{script} = {target}" in entry_points
  assert PYPROJECT["project"]["scripts"] == SCRIPTS


def test_installed_commands_run_from_another_directory(wheel, tmp_path):
  """The wheel alone (not this source tree) on the path, run from an empty directory: the
  shipped config is found by name, and the bad value is reported before any work."""
  site = tmp_path / "site"
  with zipfile.ZipFile(wheel) as z:
    z.extractall(site)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = {**os.environ, "PYTHONPATH": str(site)}
  where = subprocess.run([sys.executable, "-c", "import homeojax; print(homeojax.__file__)"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
  assert where.stdout.startswith(str(site))
  commands = [
      ["-m", "homeojax.cli", "train", "--config=configs/tiny.py", f"--workdir={tmp_path / 'w'}",
       "--config.mechanisms.kwta.sparsity=1.5"],
      ["-m", "homeojax.grid", "--config=tiny", "--variants=dropout", "--runs_dir=runs",
       "--results_dir=results", "--set=mechanisms.kwta.sparsity=1.5"]]
  for command in commands:
    result = subprocess.run([sys.executable, *command], cwd=elsewhere, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 1 and "kwta sparsity=1.5 is outside" in result.stderr
  assert not list(elsewhere.iterdir()) and not (tmp_path / "work").exists()
  for command, flag in ((["homeojax.cli", "train"], "--workdir"),
                        (["homeojax.cli", "eval"], "--source_file"),
                        (["homeojax.grid"], "--variants"), (["homeojax.report"], "--out_dir")):
    help_text = subprocess.run([sys.executable, "-m", *command, "--helpshort"], cwd=elsewhere,
                               env=env, capture_output=True, text=True).stdout
    assert f"{flag}:" in help_text, help_text


@pytest.mark.parametrize("given, found", [
    ("configs/tiny.py", "tiny.py"), ("tiny.py", "tiny.py"), ("tiny", "tiny.py"),
    ("/elsewhere/quick.py", None), ("configs/nope.py", None), ("__init__", None)])
def test_config_names_fall_back_to_the_shipped_configs(given, found, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  want = str(paths.shipped_configs() / found) if found else given
  assert paths.find_config(given) == want
  assert cli.with_shipped_config(["train", f"--config={given}:kwta", "--workdir=w"]) == [
      "train", f"--config={want}:kwta", "--workdir=w"]
  assert cli.with_shipped_config(["train", "--config", given]) == ["train", "--config", want]
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "tiny.py").write_text("")
  assert paths.find_config("configs/tiny.py") == "configs/tiny.py"  # A file here wins.


def test_paths_expand_home_and_become_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "höme"))
  assert paths.absolute("runs/wörk dir") == tmp_path / "runs" / "wörk dir"
  assert paths.absolute("~/a b/../c") == tmp_path / "höme" / "c"
  assert paths.absolute(Path("/x/y")) == Path("/x/y")
