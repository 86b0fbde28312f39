"""train.py then eval.py end to end, through the command lines, on a fake corpus, with the
paths a user types: relative, under `~`, with spaces and non-ASCII letters."""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import RUN_DIR, TINY, USES_TRAINED_RUN, run
from homeojax import checkpoints, eval_lib, process

SOURCES = "A dog runs.\nA child plays with the ball.\n"


@USES_TRAINED_RUN
def test_train_writes_checkpoints_metrics_and_resumes(trained_run):
  workdir = trained_run.workdir
  final = json.loads(trained_run.first.stdout.strip().splitlines()[-1])
  assert final["step"] == 4 and final["eval_bleu"] >= 0.0
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [2, 4]
  assert records[-1]["learning_rate"] == pytest.approx(2e-3 * 4 / 200, rel=1e-5)  # Warmup.
  assert any(k.startswith("homeostasis/") and k.endswith("entropy_ratio") for k in records[-1])
  assert any(k.endswith("rfb_kwta_0/clip_share") for k in records[-1])
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
      "2", "4"]
  assert list((workdir / "tensorboard").iterdir())
  assert list((trained_run.home / "tfds dïr").glob("multi30k/en-de/*/dataset_info.json"))
  # The checkpoint records the data dirs as absolute paths: eval may run from anywhere.
  meta = checkpoints.read_meta(eval_lib.checkpoint_step(workdir, "latest")[0], 4)
  assert meta["config"]["data"]["local_dir"] == str(trained_run.home / "corpus dïr")
  assert meta["config"]["data"]["tfds_dir"] == str(trained_run.home / "tfds dïr")
  again = trained_run.run("train.py", *trained_run.args)  # Same command: resumes.
  assert "Resumed from step 4" in again.stdout and "Nothing to train" in again.stdout
  assert json.loads(again.stdout.strip().splitlines()[-1]) == {"step": 4}


@USES_TRAINED_RUN
def test_eval_decodes_a_split_files_and_stdin_with_user_paths(trained_run):
  home = trained_run.home
  out = trained_run.run("eval.py", f"--workdir={RUN_DIR}", "--split=test_2016_flickr",
                        "--beam=2", "--output_dir=~/éval out")
  report = json.loads(out.stdout)
  assert report["sentences"] == 30 and report["step"] == 4
  assert report["workdir"] == str(trained_run.workdir)
  assert "nrefs:1" in report["sacrebleu"]["signature"] and report["bleu_tok"] >= 0
  assert 0 < report["bleu_tok_bp"] <= 1 and report["bleu_tok_ratio"] > 0
  assert 0 < report["sacrebleu"]["bp"] <= 1 and report["sacrebleu"]["ratio"] > 0
  saved = json.loads((home / "éval out" / "test_2016_flickr.beam2.json").read_text())
  rfb = [entry for path, entry in saved["homeostasis"].items() if path.endswith("rfb_kwta_0")]
  assert rfb and all(e["mechanism"] == "rfb_kwta" and e["site"].endswith("block_output")
                     and 0 <= e["clip_share"] <= 1 for e in rfb)
  hyps = (home / "éval out" / "test_2016_flickr.beam2.hyp.txt").read_text().splitlines()
  assert len(hyps) == 30

  (home / "src ü.en").write_text(SOURCES)
  (home / "ref ü.de").write_text("Ein Hund rennt.\nEin Kind spielt mit dem Ball.\n")
  out = trained_run.run("eval.py", f"--workdir={RUN_DIR}", "--checkpoint=best",
                        "--source_file=src ü.en", "--reference_file=ref ü.de", "--beam=1",
                        "--output_dir=öut")
  assert json.loads(out.stdout)["sentences"] == 2
  from_file = (home / "öut" / "src ü.en.beam1.hyp.txt").read_text()

  # Standard input: the translations alone on standard output, the report on stderr.
  out = trained_run.run("eval.py", f"--workdir={RUN_DIR}", "--checkpoint=best",
                        "--source_file=-", "--beam=1", "--output_dir=öut", stdin=SOURCES)
  assert out.stdout == from_file and len(out.stdout.splitlines()) == 2
  report = re.search(r"^\{$.*^\}$", out.stderr, re.MULTILINE | re.DOTALL).group(0)
  assert json.loads(report)["data"] == "stdin"


@USES_TRAINED_RUN
def test_translator_restores_exactly_and_translates(trained_run, monkeypatch):
  monkeypatch.chdir(trained_run.home)
  monkeypatch.setenv("HOME", str(trained_run.home))
  translator = eval_lib.Translator.from_workdir(RUN_DIR)
  assert translator.step == 4 and set(translator.variables) == {"params", "homeostasis"}
  abstract = translator.experiment.abstract_state()
  full, _ = checkpoints.restore(eval_lib.checkpoint_step(trained_run.workdir, "latest")[0],
                                abstract, 4)
  assert jax.tree.leaves(full.opt_state)  # The checkpoint does hold the optimizer state.
  for got, want in zip(jax.tree.leaves(translator.variables),
                       jax.tree.leaves({"homeostasis": full.homeostasis, "params": full.params})):
    np.testing.assert_array_equal(got, want)
  duty = [v for k, v in jax.tree_util.tree_leaves_with_path(translator.variables["homeostasis"])
          if "duty" in jax.tree_util.keystr(k)]
  assert duty and any(np.ptp(np.asarray(d)) > 0 for d in duty)  # Trained, not the init.

  texts = SOURCES.splitlines()
  best = translator.translate(texts, beam=3)
  n_best = translator.translate(texts, beam=3, n_best=3)
  assert len(best) == len(n_best) == 2 and all(len(hyps) == 3 for hyps in n_best)
  for one, hyps in zip(best, n_best):
    assert one == hyps[0] and isinstance(one.text, str) and one.score < 0
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
  assert translator.translate([]) == []
  for bad, message in (({"beam": 0}, "beam=0"), ({"beam": 2, "n_best": 3}, "n_best=3")):
    try:
      translator.translate(texts, **bad)
    except ValueError as e:
      assert message in str(e)
    else:
      raise AssertionError(f"{bad} did not raise")


@USES_TRAINED_RUN
def test_checkpoint_averaging_averages_params_and_statistics(trained_run):
  workdir = trained_run.workdir
  averaged = eval_lib.Translator.from_workdir(workdir, average_last=2)
  two, four = (eval_lib.Translator.from_workdir(workdir, checkpoint=s) for s in ("2", "4"))
  assert averaged.averaged_steps == (2, 4) and four.averaged_steps == (4,)
  leaves = jax.tree_util.tree_leaves_with_path(averaged.variables)
  for (path, got), a, b in zip(leaves, jax.tree.leaves(two.variables),
                               jax.tree.leaves(four.variables)):
    name = jax.tree_util.keystr(path)
    if np.issubdtype(got.dtype, np.floating):  # Params, duty cycles, boost strengths.
      np.testing.assert_allclose(got, (np.asarray(a) + np.asarray(b)) / 2, rtol=1e-6,
                                 err_msg=name)
    else:  # Step counts: the newest checkpoint's.
      np.testing.assert_array_equal(got, b, err_msg=name)
  assert any("duty" in jax.tree_util.keystr(p) for p, _ in leaves)
  for kwargs, message in (({"average_last": 3}, r"keeps only steps \[2, 4\] up to 4"),
                          ({"average_last": 2, "checkpoint": "best"}, "not 'best'"),
                          ({"average_last": 0}, "average_last=0 must be")):
    with pytest.raises(ValueError, match=message):
      eval_lib.Translator.from_workdir(workdir, **kwargs)


@USES_TRAINED_RUN
def test_eval_reports_the_teacher_forced_loss_and_decodes_a_train_subset(trained_run):
  workdir = trained_run.workdir
  last = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
  val = eval_lib.evaluate(workdir, split="validation", beam=1, output_dir=str(workdir / "m"))
  assert val["loss"] == pytest.approx(last["eval_loss"], rel=1e-5)  # Training's, same step.
  assert val["accuracy"] == pytest.approx(last["eval_accuracy"], rel=1e-5)
  train = eval_lib.evaluate(workdir, split="train", sentences=10, beam=1,
                            output_dir=str(workdir / "m"))
  assert train["sentences"] == 10 and train["loss"] > 0 and 0 <= train["accuracy"] <= 1
  assert (workdir / "m" / "train.first10.beam1.json").is_file()
  for kwargs, message in (({"split": "train", "sentences": -1}, "sentences=-1"),
                          ({"sources": ["A dog."], "sentences": 5}, "give --split")):
    with pytest.raises(ValueError, match=message):
      eval_lib.evaluate(workdir, **kwargs)


@USES_TRAINED_RUN
def test_alpha_is_tuned_on_validation(trained_run):
  result = eval_lib.tune_alpha(trained_run.workdir, [0.0, 1.0], beam=2)
  assert result["split"] == "validation" and [r["alpha"] for r in result["rows"]] == [0.0, 1.0]
  for row in result["rows"]:
    assert row["bleu_tok"] >= 0 and 0 < row["bleu_tok_bp"] <= 1 and row["bleu_tok_ratio"] > 0
  best = max(result["rows"], key=lambda r: r["bleu_tok"])
  assert result["best_alpha"] == best["alpha"]
  saved = trained_run.workdir / "eval" / "step_4" / "alpha_tuning.json"
  assert json.loads(saved.read_text()) == result


@USES_TRAINED_RUN
def test_readers_see_only_complete_checkpoints(trained_run, tmp_path):
  """While training saves step 6 (Orbax writes it to a temporary directory, renamed when
  complete), readers take step 4, and never delete the partial one."""
  copy = tmp_path / "run"
  shutil.copytree(trained_run.workdir, copy)
  partial = copy / "checkpoints" / "6.orbax-checkpoint-tmp-1234567"
  shutil.copytree(copy / "checkpoints" / "4", partial)
  for path in partial.rglob("*"):
    if path.is_file():
      path.write_bytes(b"")  # Half written.
  assert eval_lib.checkpoint_step(copy, "latest")[1] == 4
  assert eval_lib.Translator.from_workdir(copy).step == 4
  assert partial.is_dir()


def test_checkpoints_move_between_device_counts(fake_multi30k, tmp_path):
  """2 devices train to step 2, 1 device resumes to 4; 2 devices, 1 device and one per
  core (eval.py's default without XLA_FLAGS) find the same translations of step 4.

  The same config as `trained_run`, so the 1-device programs come from the compile cache.
  """
  args = ["--config=configs/quick.py:rfb_kwta_dropout", f"--workdir={tmp_path}",
          f"--config.data.local_dir={fake_multi30k}", *TINY]
  run("train.py", *args, "--config.num_train_steps=2", devices=2)
  one = run("train.py", *args, devices=1)
  assert "Resumed from step 2" in one.stdout
  assert json.loads(one.stdout.strip().splitlines()[-1])["step"] == 4
  hypotheses = {}
  for devices, env in ((2, None), (1, None), (len(os.sched_getaffinity(0)), {"XLA_FLAGS": ""})):
    out = tmp_path / f"eval_{devices}_{bool(env)}"
    report = json.loads(run("eval.py", f"--workdir={tmp_path}", "--split=validation",
                            "--beam=2", f"--output_dir={out}", devices=devices,
                            env=env).stdout)
    assert report["step"] == 4 and report["sentences"] == 40
    assert report["decode_devices"] == devices
    hypotheses[out.name] = (out / "validation.beam2.hyp.txt").read_text()
  assert len(set(hypotheses.values())) == 1, hypotheses


def test_cpu_devices_follow_the_request_unless_xla_flags_set_them():
  code = ("import jax; from homeojax import process; "
          "print(process.use_cpu_cores(3), jax.device_count())")
  for xla_flags, expected in (("", "3 3"), ("--xla_force_host_platform_device_count=2",
                                             "None 2")):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "XLA_FLAGS": xla_flags}, check=True)
    assert result.stdout.split() == expected.split()
  with pytest.raises(ValueError, match="devices=0"):
    process.use_cpu_cores(0)


@USES_TRAINED_RUN
def test_corrupt_latest_checkpoint_falls_back_to_previous(trained_run, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(trained_run.workdir, copy)
  for path in (copy / "checkpoints" / "4").rglob("*"):
    if path.is_file() and path.stat().st_size > 0 and "meta" not in str(path):
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # Truncated.
  args = [a if not a.startswith("--workdir") else f"--workdir={copy}"
          for a in trained_run.args]
  result = trained_run.run("train.py", *args)
  assert "Resumed from step 2" in result.stdout
  assert "checkpoint" in result.stderr and "/4 is unreadable" in result.stderr
  assert (copy / "checkpoints_unreadable" / "4").is_dir()  # Kept, out of the way.
  assert (copy / "checkpoints" / "4").is_dir()  # Saved anew from the resumed run.
  assert "Resumed from step 4" in trained_run.run("train.py", *args).stdout


def test_tok_convention_trains_decodes_and_scores_lowercased_tokenized_text(fake_multi30k,
                                                                           tmp_path):
  args = ["--config=configs/quick.py:dropout", f"--workdir={tmp_path}",
          f"--config.data.local_dir={fake_multi30k}", "--config.data.convention=tok", *TINY,
          "--config.data.vocab_size=50"]  # Lowercased text has fewer pieces.
  final = json.loads(run("train.py", *args).stdout.strip().splitlines()[-1])
  assert final["eval_bleu"] == final["eval_bleu_tok"]  # Tokenized BLEU is the metric.
  report = eval_lib.evaluate(tmp_path, split="test_2016_flickr", beam=1,
                             output_dir=str(tmp_path / "out"))
  assert report["convention"] == "tok" and "sacrebleu" not in report
  assert report["bleu_tok"] >= 0 and len(report["hypotheses"]) == 30
  translator = eval_lib.Translator.from_workdir(tmp_path)
  hyps = [h.text for h in translator.translate(["A Dog runs.", "The MAN sits."], beam=1)]
  # The vocabulary saw lowercased text only; raw input is tokenized as the data was.
  assert all(h == h.lower() for h in report["hypotheses"] + hyps)
  assert translator.translate(["A Dog runs."], beam=1) == translator.translate(
      ["a dog runs ."], beam=1, tokenized=True)
