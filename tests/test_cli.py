"""train.py then eval.py end to end, through the command lines, on a fake corpus."""

import json
import shutil

import jax
import numpy as np

from conftest import TINY, run
from homeojax import eval_lib, train_lib


def test_train_writes_checkpoints_metrics_and_resumes(trained_run):
  workdir, args, first = trained_run
  final = json.loads(first.stdout.strip().splitlines()[-1])
  assert final["step"] == 4 and final["eval_bleu"] >= 0.0
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [2, 4]
  assert any(k.startswith("homeostasis/") and k.endswith("entropy_ratio") for k in records[-1])
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
      "2", "4"]
  assert list((workdir / "tensorboard").iterdir())
  again = run("train.py", *args)  # Same command: resumes, nothing left to do.
  assert "Resumed from step 4" in again.stdout


def test_eval_decodes_a_split_and_files(trained_run, fake_multi30k, tmp_path):
  workdir, _, _ = trained_run
  out = run("eval.py", f"--workdir={workdir}", "--split=test_2016_flickr", "--beam=2",
            f"--output_dir={tmp_path}")
  report = json.loads(out.stdout)
  assert report["sentences"] == 30 and report["step"] == 4
  assert "nrefs:1" in report["sacrebleu"]["signature"] and report["bleu_tok"] >= 0
  saved = json.loads((tmp_path / "test_2016_flickr.beam2.json").read_text())
  assert any(path.endswith("rfb_kwta_0") for path in saved["homeostasis"])
  hyps = (tmp_path / "test_2016_flickr.beam2.hyp.txt").read_text().splitlines()
  assert len(hyps) == 30
  src = tmp_path / "src.en"
  src.write_text("A dog runs.\nA child plays with the ball.\n")
  out = run("eval.py", f"--workdir={workdir}", "--checkpoint=best", f"--source_file={src}",
            "--beam=1", f"--output_dir={tmp_path}")
  assert json.loads(out.stdout)["sentences"] == 2


def test_load_run_restores_exactly_the_trained_params_and_homeostasis(trained_run):
  workdir, _, _ = trained_run
  loaded = eval_lib.Translator.from_workdir(workdir)
  assert loaded.step == 4 and set(loaded.variables) == {"params", "homeostasis"}
  c = loaded.config
  optimizer = train_lib.make_optimizer(c.optim, c.num_train_steps)
  abstract = train_lib.abstract_state(loaded.model, optimizer, c.seed, loaded.mesh, False)
  full, _ = train_lib.restore(eval_lib.checkpoint_step(workdir, "latest")[0], abstract, 4)
  assert jax.tree.leaves(full.opt_state)  # The checkpoint does hold the optimizer state.
  for got, want in zip(jax.tree.leaves(loaded.variables),
                       jax.tree.leaves({"homeostasis": full.homeostasis, "params": full.params})):
    np.testing.assert_array_equal(got, want)
  duty = [v for k, v in jax.tree_util.tree_leaves_with_path(loaded.variables["homeostasis"])
          if "duty" in jax.tree_util.keystr(k)]
  assert duty and any(np.ptp(np.asarray(d)) > 0 for d in duty)  # Trained, not the init.


def test_checkpoints_move_between_device_counts(fake_multi30k, tmp_path):
  """4 devices train to step 2, 1 device resumes to 4, 4 devices resume to 6 and evaluate.

  The same config as `trained_run`, so the 1-device programs come from the compile cache.
  """
  args = ["--config=configs/quick.py:rfb_kwta_dropout", f"--workdir={tmp_path}",
          f"--config.data.local_dir={fake_multi30k}", *TINY]
  run("train.py", *args, "--config.num_train_steps=2", devices=4)
  one = run("train.py", *args, devices=1)
  assert "Resumed from step 2" in one.stdout
  four = run("train.py", *args, "--config.num_train_steps=6", devices=4)
  assert "Resumed from step 4" in four.stdout
  assert json.loads(four.stdout.strip().splitlines()[-1])["step"] == 6
  report = json.loads(run("eval.py", f"--workdir={tmp_path}", "--split=validation",
                          "--beam=1", devices=4).stdout)
  assert report["step"] == 6 and report["sentences"] == 40


def test_corrupt_latest_checkpoint_falls_back_to_previous(trained_run, tmp_path):
  workdir, args, _ = trained_run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  for path in (copy / "checkpoints" / "4").rglob("*"):
    if path.is_file() and path.stat().st_size > 0 and "meta" not in str(path):
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # Truncated.
  args = [a if not a.startswith("--workdir") else f"--workdir={copy}" for a in args]
  result = run("train.py", *args)
  assert "Resumed from step 2" in result.stdout
  assert "checkpoint" in result.stderr and "/4 is unreadable" in result.stderr
  assert (copy / "checkpoints_unreadable" / "4").is_dir()  # Kept, out of the way.
  assert (copy / "checkpoints" / "4").is_dir()  # Saved anew from the resumed run.
  assert "Resumed from step 4" in run("train.py", *args).stdout
