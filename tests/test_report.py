"""homeojax.report on fabricated run directories: exact table values, plots, the doc."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, fake_pairs
from homeojax import report

SITES = [f"{stack}_layers_{i}/ffn_block/block_output/{{mech}}_0"
         for stack in ("encoder", "decoder") for i in range(2)]


def make_run(root, variant, seed, test_bleu, val_bleu, losses, hyps, convention="raw"):
  """A results folder like homeojax.grid writes (a `tok` run has no sacreBLEU)."""
  path = root / f"{variant}-seed{seed}"
  path.mkdir(parents=True)
  records = [{"step": 100 * (i + 1), "loss": loss} for i, loss in enumerate(losses)]
  records[-1].update({"eval_bleu": val_bleu, "eval_bleu_tok": val_bleu, "eval_loss": 2.0})
  mech = "rfb_kwta" if variant.startswith("rfb") else "kwta"
  if variant != "dropout":
    for r in records:
      r.update({f"homeostasis/{s.format(mech=mech)}/entropy_ratio": 0.9 for s in SITES})
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  homeostasis = {} if variant == "dropout" else {
      s.format(mech=mech): {"entropy_ratio": 0.9, "dead_share": 0.25 * i, "histogram": {
          "counts": [1, 2, 3, 4], "edges": [0, 0.25, 0.5, 0.75, 1.0]}}
      for i, s in enumerate(SITES)}
  (path / "test_2016_flickr.beam5.json").write_text(json.dumps({
      "data": "test_2016_flickr", "beam": 5, "seed": seed, "variant": variant,
      "bleu_tok": test_bleu, "homeostasis": homeostasis, "convention": convention,
      **({"sacrebleu": {"score": test_bleu - 1}} if convention == "raw" else {})}))
  (path / "test_2016_flickr.beam5.hyp.txt").write_text("".join(h + "\n" for h in hyps))
  (path / "run.json").write_text(json.dumps({"name": path.name, "variant": variant,
                                             "seed": seed, "train_seconds": 600 * (seed + 1)}))
  return path


@pytest.fixture
def runs(tmp_path):
  refs = [p[1] for p in fake_pairs(30, 2)]  # The fake corpus's test_2016_flickr targets.
  worse = [" ".join(r.split()[:2]) for r in refs]
  paths = [make_run(tmp_path, "dropout", s, 30 + s, 29 + s, [3.0, 2.0], refs)
           for s in (0, 1)]
  paths += [make_run(tmp_path, v, s, 20 + 2 * s, 19, [2.0, 1.0], worse)
            for v in ("kwta", "rfb_kwta_dropout") for s in (0, 1)]
  # An `eval.py --eval_scale` re-evaluation beside the run's own: not in the tables.
  (paths[0] / "test_2016_flickr.expected_gain.beam6.json").write_text(json.dumps({
      "data": "test_2016_flickr", "beam": 6, "seed": 0, "eval_scale": "expected_gain",
      "bleu_tok": 99.0, "sacrebleu": {"score": 99.0}, "homeostasis": {}}))
  return paths


def add_smart_inhibition(path, keep_probability_min):
  """Two Smart Inhibition sites beside a run's others, as in RFB-kWTA + Smart Inhibition."""
  eval_json = path / "test_2016_flickr.beam5.json"
  e = json.loads(eval_json.read_text())
  for i in range(2):
    e["homeostasis"][f"encoder_layers_{i}/attention_block/block_output/smart_inhibition_0"] = {
        "entropy_ratio": 0.8, "dead_share": 0.0, "keep_rate": 0.7,
        "keep_probability_min": keep_probability_min + 0.1 * i}
  eval_json.write_text(json.dumps(e))


def test_tables_hold_exact_means_stds_and_tests(runs, fake_multi30k):
  add_smart_inhibition(runs[4], 0.6)  # rfb_kwta_dropout, seeds 0 and 1.
  add_smart_inhibition(runs[5], 0.5)
  groups = report.groups_of([report.load_run(p) for p in runs])
  assert list(groups) == ["dropout", "kwta", "rfb_kwta_dropout"]
  table = report.bleu_table(groups, "test_2016_flickr")
  # dropout: test tok. BLEU 30, 31 -> 30.50 ± 0.71; sacre 29, 30; paper 30.07; train loss
  # is the mean of the last logged losses, 2.50; train minutes 10 and 20.
  assert ("| dropout | 2 | 29.50 ± 0.71 | 30.50 ± 0.71 | 29.50 ± 0.71 | 30.07 | 2.50 ± 0.00 | "
          "2.00 ± 0.00 | 15.00 ± 7.07 |") in table
  assert "| kwta | 2 | 19.00 ± 0.00 | 21.00 ± 1.41 | 20.00 ± 1.41 | – | 1.50 ± 0.00 |" in table
  assert "| dropout | 2 | 29.50 ± 0.71 | – | – | – |" in report.bleu_table(groups, "validation")
  # The paper's numbers are en->de: not beside an en->fr run of the same variant.
  assert "| dropout | 2 | 29.50 ± 0.71 | 30.50 ± 0.71 | 29.50 ± 0.71 | – |" in report.bleu_table(
      groups, "test_2016_flickr", ("en", "fr"))
  homeostasis = report.homeostasis_table(groups, "test_2016_flickr")
  # Dead shares 0, 0.25, 0.5 and 0.75 over the sites; no clip, sparsity or keep recorded.
  assert ("| kwta | kwta | 4 | 0.90 ± 0.00 | 0.90 ± 0.00 | – | – | 0.38 ± 0.00 | 0.75 ± 0.00 "
          "| – | – | – |") in homeostasis
  assert "| dropout |" not in homeostasis
  assert "| rfb_kwta_dropout | rfb_kwta | 4 | 0.90 ± 0.00 |" in homeostasis
  # Its Smart Inhibition sites in a row of their own: lowest keep probabilities 0.6 and 0.5.
  assert ("| rfb_kwta_dropout | smart_inhibition | 2 | 0.80 ± 0.00 | 0.80 ± 0.00 | – | – | "
          "0.00 ± 0.00 | 0.00 ± 0.00 | – | 0.70 ± 0.00 | 0.55 ± 0.07 |") in homeostasis
  refs = report.texts(str(fake_multi30k), "raw", "test_2016_flickr", "de")
  sig = report.significance_table(groups, "dropout", "test_2016_flickr", refs, samples=200)
  row = next(l for l in sig.splitlines() if l.startswith("| kwta |"))
  assert "| -9.50 |" in row and "(seed 0)" in row and "(seed 1)" in row
  assert "p=" in row and "(n=2)" in row
  # Deltas -10 and -9: t = -19 with one degree of freedom, p = 0.033 < 0.05.
  assert "t=-19.00, p=0.033 (n=2) | lower |" in row
  against_kwta = report.significance_table(groups, "kwta", "test_2016_flickr", None).splitlines()
  assert next(l for l in against_kwta if l.startswith("| dropout |")).endswith("| higher |")
  assert next(l for l in against_kwta if l.startswith("| rfb_kwta_dropout |")).endswith(
      "| +0.00 | – | t=nan, p=nan (n=2) | no difference shown |")  # Equal scores.
  boot = [float(x.split()[0]) for x in row.split("|")[3].split(",")]
  assert all(p < 0.05 for p in boot)  # Truncated outputs are significantly worse.


def test_cli_writes_plots_and_rewrites_the_doc_reproducibly(runs, fake_multi30k, tmp_path):
  """With the paths a user types: relative, under `~`, with spaces and non-ASCII letters."""
  doc = tmp_path / "résults doc.md"
  begin, end = report.BEGIN.format("grid"), report.END.format("grid")
  doc.write_text(f"# Results\n\nIntro.\n\n{begin}\nold\n{end}\n\nConclusion.\n")
  command = [sys.executable, "-m", "homeojax.report",
             *(os.path.relpath(r, tmp_path) for r in runs), "--out_dir=plöts",
             f"--data_dir={os.path.relpath(fake_multi30k, tmp_path)}", "--doc=~/résults doc.md"]
  env = {**os.environ, "HOME": str(tmp_path)}
  subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True)
  first = doc.read_text()
  assert first.startswith("# Results\n\nIntro.") and first.endswith("Conclusion.\n")
  assert "old" not in first and "| dropout | 2 |" in first
  for png in ("val_bleu.png", "entropy_ratio.png", "duty_histograms.png",
              "train_test_gap.png"):
    assert (tmp_path / "plöts" / png).stat().st_size > 1000
    assert f"(plöts/{png})" in first
  subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True)
  assert doc.read_text() == first


def test_train_minutes_count_every_resumption(tmp_path):
  """A resumed run's `wall_seconds` carries the earlier stretches; the grid's
  `train_seconds` times only the last train command."""
  path = make_run(tmp_path, "dropout", 0, 30, 29, [3.0, 2.0], ["x"])
  run = report.load_run(path)
  assert run.train_minutes() == 10.0  # No wall_seconds logged: the grid's 600 s.
  with open(path / "metrics.jsonl", "a", encoding="utf-8") as f:
    f.write(json.dumps({"step": 300, "loss": 1.0, "wall_seconds": 1500.0}) + "\n")
  assert report.load_run(path).train_minutes() == 25.0


def test_rejects_a_directory_without_metrics(tmp_path):
  with pytest.raises(ValueError, match="has no metrics.jsonl"):
    report.load_run(tmp_path)


@pytest.mark.parametrize("baselines", ["", "kwta,dropout"])
def test_one_comparison_table_per_baseline(runs, tmp_path, baselines):
  """Each group of `--baseline` in its own table, in order; empty for none."""
  command = [sys.executable, "-m", "homeojax.report", *map(str, runs),
             f"--out_dir={tmp_path / 'plots'}", f"--baseline={baselines}"]
  out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
  assert "| kwta | 2 |" in out
  headers = [l.split("|")[2].strip() for l in out.splitlines() if "| Δ sacreBLEU vs" in l]
  expected = [f"Δ sacreBLEU vs {b} (mean over seeds)" for b in baselines.split(",") if b]
  assert headers == expected and "shares a seed" not in out


def test_rejects_an_unknown_baseline_among_several(runs, tmp_path):
  command = [sys.executable, "-m", "homeojax.report", *map(str, runs),
             f"--out_dir={tmp_path / 'plots'}", "--baseline=dropout,dropot"]
  done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 1 and "--baseline='dropot' is not among" in done.stderr
  assert not (tmp_path / "plots").exists()


def test_tok_runs_compare_tokenized_bleu_and_show_the_subtle_patterns(fake_multi30k,
                                                                      tmp_path):
  refs = [p[1].lower()[:-1] + " ." for p in fake_pairs(30, 2)]  # lc.norm.tok targets.
  worse = [" ".join(r.split()[:2]) for r in refs]
  runs = [make_run(tmp_path, "dropout", s, 40 + s, 39, [3.0, 2.0], refs, "tok")
          for s in (0, 1)]
  runs += [make_run(tmp_path, "kwta", s, 30, 29, [2.0, 1.0], worse, "tok") for s in (0, 1)]
  for i, path in enumerate(runs):  # eval.py --split=train --sentences=10: the fit to data.
    (path / "train.first10.beam5.json").write_text(json.dumps({
        "data": "train", "beam": 5, "seed": i % 2, "bleu_tok": 50 + 10 * (i // 2) + i % 2,
        "loss": 1.0 - 0.5 * (i // 2), "convention": "tok", "homeostasis": {}}))
  command = [sys.executable, "-m", "homeojax.report", *map(str, runs), "--subtle",
             f"--out_dir={tmp_path / 'plots'}", f"--data_dir={fake_multi30k}"]
  out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
  row = next(l for l in out.splitlines() if l.startswith("| kwta | -10.50 |"))
  assert "Δ BLEU tok. vs dropout" in out and "(n=2)" in row
  assert "| kwta | 2 | 60.50 ± 0.71 | 0.50 ± 0.00 | 30.00 ± 0.00 | – |" in out  # Memorization.
  assert all(float(p.split()[0]) < 0.05 for p in row.split("|")[3].split(","))
  f_table = out.split("**Target-word F-measure")[1].split("**BLEU")[0]
  f_rows = [l.split(" | ") for l in f_table.splitlines() if l.startswith("| 100-999")]
  # Dropout's outputs are the references: F 100; kWTA's keep two words of each.
  assert f_rows and all(r[2] == "100.00" and r[3].split()[1].startswith("(-") for r in f_rows)
  assert "| 1-9 | 30 | 100.00 |" in out  # Every fake source has 3-7 words and a period.
  assert "**Where kwta and dropout differ most** (seed 0" in out and "(loss, -" in out


def test_a_mean_over_some_seeds_says_how_many(runs):
  assert report.mean_std([1.0, None, 3.0]) == "2.00 ± 1.41 (2 of 3)"
  assert report.mean_std([1.0, 3.0]) == "2.00 ± 1.41"
  assert report.mean_std([None, None]) == "–"
  # The fit to the training data evaluated for dropout's seed 0 only.
  (runs[0] / "train.first2.beam5.json").write_text(json.dumps({
      "data": "train", "beam": 5, "seed": 0, "bleu_tok": 80.0, "loss": 0.25,
      "homeostasis": {}}))
  groups = report.groups_of([report.load_run(p) for p in runs])
  table = report.memorization_table(groups, "test_2016_flickr")
  assert "| dropout | 2 | 80.00 (1 of 2) | 0.25 (1 of 2) | 30.50 ± 0.71 | – |" in table
  assert "| kwta | 2 | – | – | 21.00 ± 1.41 | – |" in table


def test_environment_note_names_what_differs_and_which_runs(runs):
  def record(path, **env):
    info = json.loads((path / "run.json").read_text())
    info["environment"] = {"packages": {"jax": env.pop("jax", "0.10.2"), "numpy": "2.4.6"},
                           "python": "3.11.7", "cpu": env.pop("cpu", "Xeon, 2 cores"),
                           "xla_flags": "", "vocab_sha256": {"spm-1.model": env.pop("vocab")}}
    (path / "run.json").write_text(json.dumps(info))

  load = lambda: [report.load_run(p) for p in runs]
  assert report.environment_note(load()) is None  # Nothing recorded: no line.
  shared = "(jax 0.10.2, numpy 2.4.6, python 3.11.7, cpu Xeon, 2 cores)"
  record(runs[0], vocab="a")
  assert report.environment_note(load()) == (
      f"Environment: 1 run records one {shared}; 5 earlier runs record none.")
  record(runs[1], vocab="b")  # The vocabulary's hash is not an environment.
  assert report.environment_note(load()) == (
      f"Environment: 2 runs share one {shared}; 4 earlier runs record none.")
  assert report.environment_note(load()[:3]) == (
      f"Environment: 2 runs share one {shared}; 1 earlier run records none.")
  for path in runs[2:]:
    record(path, jax="0.11.0", vocab="a")
  info = json.loads((runs[5] / "run.json").read_text())
  info["environment"]["packages"]["optax"] = "0.2.8"  # A package recorded by later runs only.
  (runs[5] / "run.json").write_text(json.dumps(info))
  record(runs[3], jax="0.11.0", cpu="EPYC, 2 cores", vocab="a")
  assert report.environment_note(load()).splitlines() == [
      "Environments differ between runs:", "", "| jax | cpu | optax | runs |",
      "|---|---|---|---|",
      "| 0.10.2 | Xeon, 2 cores | – | dropout-seed0, dropout-seed1 |",
      "| 0.11.0 | EPYC, 2 cores | – | kwta-seed1 |",
      "| 0.11.0 | Xeon, 2 cores | 0.2.8 | rfb_kwta_dropout-seed1 |",
      "| 0.11.0 | Xeon, 2 cores | – | kwta-seed0, rfb_kwta_dropout-seed0 |"]
