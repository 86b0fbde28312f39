"""The command-line tools `homeojax-train` and `homeojax-eval` (also `train.py`, `eval.py`)
and the start-up they share with `homeojax-grid` and `homeojax-report`: one-line errors,
clean stops on SIGINT/SIGTERM, logging, shipped configs, multi-host set-up.

`python -m homeojax.cli train FLAGS...` and `python -m homeojax.cli eval FLAGS...` run
them too.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Callable

from absl import app, flags, logging

from homeojax import paths, process, sharding
from homeojax.process import Interrupted


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


def _fail(message: str, code: int = 1) -> None:
  print(f"error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(code)


def with_shipped_config(argv: list[str]) -> list[str]:
  """`argv` with `--config=PATH[:VARIANT]` pointing at the shipped config of that name
  when PATH is no file (see `paths.find_config`)."""
  out, i = list(argv), 1
  while i < len(out):
    arg = out[i]
    if arg == "--config" and i + 1 < len(out):
      i += 1
      arg, prefix = out[i], ""
    elif arg.startswith("--config="):
      arg, prefix = arg[len("--config="):], "--config="
    else:
      i += 1
      continue
    path, sep, variant = arg.partition(":")
    out[i] = f"{prefix}{paths.find_config(path)}{sep}{variant}"
    i += 1
  return out


def _parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a bad flag (or a config file that fails to load) is one line."""
  try:
    return flags.FLAGS(with_shipped_config(argv))
  except flags.Error as e:
    _fail(f"{flag_error(e)} (see --helpshort)")
  except (AttributeError, KeyError) as e:  # A --config.FIELD override names no field.
    _fail(f"{unknown_field(e)} (see --helpshort)")


def flag_error(e: flags.Error) -> str:
  """The message of a bad flag in one line (a config file that raised: its error)."""
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  if "Traceback (most recent call last):" in lines:
    lines = [lines[0], lines[-1]]
  return " ".join(lines)


def unknown_field(e: AttributeError | KeyError) -> str:
  """The message of a `--config.FIELD` override that names no field."""
  while e.args and isinstance(e.args[0], Exception):
    e = e.args[0]
  return f"unknown config field {e.args[0] if e.args else e}"


def run(main: Callable[[list[str]], None]) -> None:
  """`app.run(main)`, printing `error: ...` and exiting 1 on a user error, and 128 + the
  signal's number (130 for Ctrl-C) after a training run stopped by a signal.

  Set HOMEOJAX_TRACEBACK=1 to get the full traceback instead.
  """
  process.keep_freed_memory()
  # The commands define their flags in functions of this package's modules; `--helpshort`
  # lists the key flags of the program run (sys.argv[0]): make them that.
  for module, defined in flags.FLAGS.flags_by_module_dict().items():
    if module.startswith("homeojax."):
      for flag in defined:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

  def guarded(argv: list[str]) -> None:
    try:
      main(argv)
    except Interrupted as e:
      print(str(e), file=sys.stderr)
      sys.exit(e.exit_code)
    except USER_ERRORS as e:
      if os.environ.get("HOMEOJAX_TRACEBACK"):
        raise
      _fail(str(e))

  app.run(guarded, flags_parser=_parse_flags)


def train_main() -> None:
  """`homeojax-train`: trains (or resumes) a run in --workdir; prints the final metrics."""
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  from homeojax import train_lib  # pylint: disable=import-outside-toplevel

  config = config_flags.DEFINE_config_file(
      "config", None, "Experiment config file (path[:variant]); a name such as tiny or "
      "configs/tiny.py that is no file names a shipped config.", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, vocabulary.")
  progress = flags.DEFINE_bool("progress", True, "Show a progress bar.")
  flags.mark_flags_as_required(["config", "workdir"])
  define_multihost_flags()

  def main(argv: list[str]) -> None:
    start(argv)
    record = train_lib.train_and_evaluate(config.value, workdir.value,
                                          progress=progress.value)
    print(json.dumps({k: v for k, v in record.items() if not k.startswith("homeostasis/")}))

  run(main)


def eval_main() -> None:
  """`homeojax-eval`: decodes a split or a file with a checkpoint; prints the report."""
  from homeojax import decode as decode_lib  # pylint: disable=import-outside-toplevel
  from homeojax import eval_lib  # pylint: disable=import-outside-toplevel

  workdir = flags.DEFINE_string("workdir", None, "Training run directory.")
  checkpoint = flags.DEFINE_string("checkpoint", "latest", "latest, best, or a step number.")
  split = flags.DEFINE_string("split", None, "Multi30K split to decode (e.g. "
                              "test_2016_flickr).")
  source = flags.DEFINE_string("source_file", None, "Source sentences, one per line (instead "
                               "of --split); - reads standard input and writes the "
                               "hypotheses to standard output.")
  reference = flags.DEFINE_string("reference_file", None, "Detokenized references for "
                                  "sacreBLEU.")
  reference_tok = flags.DEFINE_string("reference_tok_file", None, "Lowercased, tokenized "
                                      "references for tokenized BLEU.")
  beam = flags.DEFINE_integer("beam", None, "Beam size (1 is greedy); default from the "
                              "config.")
  alpha = flags.DEFINE_float("alpha", None, "Length-penalty exponent; default from the config.")
  penalty = flags.DEFINE_enum("penalty", None, list(decode_lib.PENALTIES), "Length penalty: "
                              "((5 + |y|) / 6)^alpha or |y|^alpha; default from the config.")
  local_dir = flags.DEFINE_string("data_dir", None, "Local Multi30K copy (overrides the "
                                  "run's).")
  tokens = flags.DEFINE_integer("tokens_per_batch", None, "Source tokens per decoding batch; "
                                "default from the config (raise it on a GPU).")
  output = flags.DEFINE_string("output_dir", None, "Where to write hypotheses and the report.")
  eval_scale = flags.DEFINE_string("eval_scale", None, "Smart Inhibition at eval: identity or "
                                   "expected_gain (overrides the run's; names the outputs).")
  average = flags.DEFINE_integer("average_last", 1, "Average the parameters (and statistics) "
                                 "of the N newest kept checkpoints up to --checkpoint.")
  sentences = flags.DEFINE_integer("sentences", 0, "Decode the first N sentences of --split "
                                   "(0: all), e.g. --split=train --sentences=1000 to "
                                   "measure memorization.")
  tune = flags.DEFINE_list("tune_alpha", None, "Length-penalty exponents to try on the "
                           "validation split (instead of decoding --split or a file).")
  cpu_devices = flags.DEFINE_integer(
      "cpu_devices", None, "On CPU, decode on this many devices at once, one batch each "
      "(default: the cores this process may use; XLA_FLAGS' device count wins).", lower_bound=1)
  flags.mark_flag_as_required("workdir")
  define_multihost_flags()

  def main(argv: list[str]) -> None:
    process.use_cpu_cores(cpu_devices.value)
    start(argv)
    if tune.value is not None:
      if split.value not in (None, "validation") or source.value is not None:
        raise ValueError("--tune_alpha decodes the validation split only (never a test "
                         f"split): drop --split={split.value} / --source_file")
      try:
        alphas = [float(a) for a in tune.value]
      except ValueError:
        raise ValueError(f"--tune_alpha={','.join(tune.value)} is not a list of "
                         "numbers") from None
      print(json.dumps(eval_lib.tune_alpha(
          workdir.value, alphas, checkpoint=checkpoint.value, beam=beam.value,
          penalty=penalty.value, local_dir=local_dir.value, tokens_per_batch=tokens.value,
          average_last=average.value), indent=1))
      return
    stdin = source.value == "-"
    report = eval_lib.evaluate(
        workdir.value, checkpoint=checkpoint.value, split=split.value,
        source_file=None if stdin else source.value,
        sources=eval_lib.read_stdin() if stdin else None, reference_file=reference.value,
        reference_tok_file=reference_tok.value, beam=beam.value, alpha=alpha.value,
        penalty=penalty.value,
        local_dir=local_dir.value, output_dir=output.value, tokens_per_batch=tokens.value,
        eval_scale=eval_scale.value, average_last=average.value, sentences=sentences.value)
    summary = json.dumps({k: v for k, v in report.items()
                          if k not in ("homeostasis", "hypotheses")}, indent=1)
    if stdin:  # Standard output carries the translations alone.
      sys.stdout.write("".join(h + "\n" for h in report["hypotheses"]))
      print(summary, file=sys.stderr)
    else:
      print(summary)

  run(main)


if __name__ == "__main__":
  _COMMAND = sys.argv.pop(1) if len(sys.argv) > 1 else ""
  if _COMMAND not in ("train", "eval"):
    _fail(f"usage: python -m homeojax.cli {{train,eval}} FLAGS... (got {_COMMAND!r})")
  (train_main if _COMMAND == "train" else eval_main)()
