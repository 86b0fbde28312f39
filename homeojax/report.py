r"""Tables and plots from training runs: BLEU mean ± std per variant, memorization against
generalization, significance against a baseline, and the homeostasis at work.

  python -m homeojax.report results/grid/* --out_dir=docs/results \
      --data_dir=../shared/data/multi30k --doc=docs/results.md

A run directory is a training work dir (`metrics.jsonl`, `eval/step_N/*.json`) or a
results folder from `homeojax.grid` (`metrics.jsonl`, `run.json`, `SPLIT.beamB.json`).
Runs that differ only in their seed form one group. With `--doc`, the text between
`<!-- report:SECTION -->` and `<!-- /report:SECTION -->` in that file is replaced.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import app, flags

from homeojax import analysis, cli, metrics, paths

BEGIN, END = "<!-- report:{} -->", "<!-- /report:{} -->"  # Around a section of --doc.
# BLEU reported by the paper (on a 0-1 scale) per variant, the split and language pair.
PAPER_BLEU = {"classic": 0.2768, "dropout": 0.3007, "rfb_kwta_dropout": 0.3062}
PAPER_SPLIT = "test_2016_flickr"
PAPER_PAIR = ("en", "de")
TRAIN_LOSS_WINDOW = 5  # Logged losses averaged for "train loss at the end".
ALPHA = 0.05  # Significance level of the pre-registered t-test over seeds.


@dataclasses.dataclass
class Run:
  """One run's logs and evaluations."""
  path: Path
  group: str
  seed: int
  metrics: list[dict]
  evals: dict[str, dict]  # split -> eval.py report (the latest step's, largest beam).
  hyps: dict[str, list[str]]
  info: dict  # run.json of homeojax.grid, if any.

  def val_curve(self) -> list[tuple[int, float]]:
    return [(r["step"], r["eval_bleu_tok"]) for r in self.metrics if "eval_bleu_tok" in r]

  def final_train_loss(self) -> float:
    losses = [r["loss"] for r in self.metrics if "loss" in r]
    return float(np.mean(losses[-TRAIN_LOSS_WINDOW:]))

  def train_minutes(self) -> float | None:
    """The training loop's wall time over every resumption (the last logged
    `wall_seconds`), else the grid's time for its last train command."""
    seconds = self.final("wall_seconds") or self.info.get("train_seconds")
    return seconds / 60 if seconds else None

  def final(self, key: str) -> float | None:
    values = [r[key] for r in self.metrics if key in r]
    return values[-1] if values else None


def _eval_files(path: Path) -> list[Path]:
  files = list(path.glob("*.beam*.json"))
  steps = sorted(path.glob("eval/step_*"), key=lambda p: int(p.name.split("_")[1]))
  return files + (list(steps[-1].glob("*.beam*.json")) if steps else [])


def load_run(path: str | Path) -> Run:
  """Reads a run directory; ValueError naming it if it holds no `metrics.jsonl`."""
  path = Path(path)
  if not (path / "metrics.jsonl").is_file():
    raise ValueError(f"{str(path)!r} has no metrics.jsonl: not a run directory")
  metrics = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()
             if line.strip()]
  info = json.loads((path / "run.json").read_text()) if (path / "run.json").is_file() else {}
  evals, hyps = {}, {}
  reports = [(json.loads(file.read_text()), file) for file in _eval_files(path)]
  for report, file in sorted(reports, key=lambda pair: pair[0]["beam"]):
    if report.get("eval_scale"):  # An `eval.py --eval_scale` re-evaluation, not the run's.
      continue
    for entry_path, entry in report.get("homeostasis", {}).items():
      entry.setdefault("site", entry_path.rsplit("/", 1)[0])  # Reports before v2 lack it.
    evals[report["data"]] = report
    hyp_file = file.with_name(file.name.replace(".json", ".hyp.txt"))
    if hyp_file.is_file():
      hyps[report["data"]] = hyp_file.read_text().splitlines()
  name = info.get("name") or path.name
  seed = info.get("seed", next((e["seed"] for e in evals.values()), 0))
  group = re.sub(r"-seed\d+$", "", name)
  return Run(path, group, int(seed), metrics, evals, hyps, info)


def environment_note(runs: Sequence[Run]) -> str | None:
  """Which runs trained in which environment (package versions, Python, CPU, XLA_FLAGS, as
  `homeojax.grid` records them), naming only the fields that differ; None if no run
  records one."""
  recorded = [r for r in runs if "environment" in r.info]
  if not recorded:
    return None
  # (run folder name, its environment's fields with the packages flattened); a list, since
  # runs of different directions share folder names.
  fields_of = [(r.path.name, {**r.info["environment"]["packages"],
                              **{k: v for k, v in r.info["environment"].items()
                                 if k not in ("packages", "vocab_sha256")}})
               for r in recorded]
  unrecorded = len(runs) - len(recorded)
  missing = (f"; {unrecorded} earlier {'run records' if unrecorded == 1 else 'runs record'} none"
             if unrecorded else "")
  keys = dict.fromkeys(k for _, fields in fields_of for k in fields)
  varying = [k for k in keys if len({json.dumps(f.get(k)) for _, f in fields_of}) > 1]
  if not varying:
    shared = ", ".join(f"{k} {v}" for k, v in fields_of[0][1].items() if v)
    holders = "1 run records" if len(recorded) == 1 else f"{len(recorded)} runs share"
    return f"Environment: {holders} one ({shared}){missing}."
  by_env: dict[str, list[str]] = {}
  for name, f in fields_of:
    by_env.setdefault(" | ".join(str(f.get(k) or "–") for k in varying), []).append(name)
  rows = [f"| {env} | {', '.join(sorted(names))} |" for env, names in sorted(by_env.items())]
  return "\n".join([f"Environments differ between runs{missing}:", "",
                    f"| {' | '.join(varying)} | runs |", "|" + "---|" * (len(varying) + 1),
                    *rows])


def mean_std(values: Sequence[float | None]) -> str:
  """`mean ± std` of the known values (`–` if none), with `(n of m)` if some are unknown."""
  known = [v for v in values if v is not None]
  if not known:
    return "–"
  text = (f"{known[0]:.2f}" if len(known) == 1
          else f"{statistics.mean(known):.2f} ± {statistics.stdev(known):.2f}")
  return text if len(known) == len(values) else f"{text} ({len(known)} of {len(values)})"


def groups_of(runs: Sequence[Run]) -> dict[str, list[Run]]:
  out: dict[str, list[Run]] = {}
  for run in sorted(runs, key=lambda r: (r.group, r.seed)):
    out.setdefault(run.group, []).append(run)
  return out


def bleu_table(groups: dict[str, list[Run]], split: str,
               pair: tuple[str, str] = PAPER_PAIR) -> str:
  """BLEU (both conventions), losses and wall time, mean ± std over seeds; the paper's
  BLEU beside its variants on its split and language pair (`(source, target)`)."""
  lines = [f"| variant | seeds | val BLEU tok. (greedy) | {split} BLEU tok. | {split} "
           "sacreBLEU | paper (test) | train loss (end) | val loss | train min |",
           "|---|---|---|---|---|---|---|---|---|"]
  for group, runs in groups.items():
    variant = group.split("-")[0]
    paper = (f"{100 * PAPER_BLEU[variant]:.2f}"
             if variant in PAPER_BLEU and group == variant and split == PAPER_SPLIT
             and pair == PAPER_PAIR else "–")
    tests = [r.evals.get(split) for r in runs]
    minutes = [r.train_minutes() for r in runs]
    lines.append(
        f"| {group} | {len(runs)} | {mean_std([r.final('eval_bleu_tok') for r in runs])} | "
        f"{mean_std([t.get('bleu_tok') if t else None for t in tests])} | "
        f"{mean_std([t['sacrebleu']['score'] if t and 'sacrebleu' in t else None for t in tests])} | "
        f"{paper} | {mean_std([r.final_train_loss() for r in runs])} | "
        f"{mean_std([r.final('eval_loss') for r in runs])} | {mean_std(minutes)} |")
  return "\n".join(lines)


def memorization_table(groups: dict[str, list[Run]], split: str) -> str:
  """Fit to the training data (`eval.py --split=train --sentences=N`: BLEU and the
  teacher-forced loss) beside `split`'s, mean ± std over seeds; empty if no run has it."""
  if not any("train" in r.evals for runs in groups.values() for r in runs):
    return ""
  lines = [f"| variant | seeds | train-subset BLEU tok. | train-subset loss | {split} BLEU "
           f"tok. | {split} loss |", "|---|---|---|---|---|---|"]
  for group, runs in groups.items():
    cell = lambda data, key: mean_std([r.evals[data].get(key) if data in r.evals else None
                                       for r in runs])
    lines.append(f"| {group} | {len(runs)} | {cell('train', 'bleu_tok')} | "
                 f"{cell('train', 'loss')} | {cell(split, 'bleu_tok')} | {cell(split, 'loss')} |")
  return "\n".join(lines)


HOMEOSTASIS_COLUMNS = (  # (header, diagnostic, reduction over a run's sites)
    ("entropy ratio (mean)", "entropy_ratio", np.mean),
    ("entropy ratio (lowest)", "entropy_ratio", min),
    ("at clip (mean)", "clip_share", np.mean),
    ("at clip (highest)", "clip_share", max),
    ("dead (mean)", "dead_share", np.mean),
    ("dead (highest)", "dead_share", max),
    ("realised sparsity", "realised_sparsity", np.mean),
    ("keep rate", "keep_rate", np.mean),
    ("keep probability (lowest)", "keep_probability_min", min))
# The mechanisms with per-feature statistics, one table row each per group.
HOMEOSTATIC = ("kwta", "rfb_kwta", "smart_inhibition")


def homeostasis_table(groups: dict[str, list[Run]], split: str) -> str:
  """Per group and homeostatic mechanism (kWTA, RFB-kWTA, Smart Inhibition), from `split`'s
  evaluation (the statistics at the end of training), over the mechanism's sites: the
  duty-cycle entropy ratio (mean and lowest site), the share of features whose boost sits
  at the clip and the share that almost never win (duty cycle under a hundredth of the
  target; mean and highest site), the realised sparsity, and for Smart Inhibition the keep
  rate and lowest keep probability; mean over seeds. Empty if no group has such sites."""
  lines = ["| variant | mechanism | sites | " +
           " | ".join(h for h, _, _ in HOMEOSTASIS_COLUMNS) + " |",
           "|---|---|---|" + "---|" * len(HOMEOSTASIS_COLUMNS)]
  for group, runs in groups.items():
    for mechanism in HOMEOSTATIC:
      per_run = [[e for path, e in r.evals[split]["homeostasis"].items()
                  if path.rsplit("/", 1)[-1].rsplit("_", 1)[0] == mechanism]
                 for r in runs if split in r.evals]
      per_run = [entries for entries in per_run if entries]
      if not per_run:
        continue
      cells = [mean_std([reduce([e[key] for e in entries]) for entries in per_run
                         if all(key in e for e in entries)])
               for _, key, reduce in HOMEOSTASIS_COLUMNS]
      lines.append(f"| {group} | {mechanism} | {len(per_run[0])} | " + " | ".join(cells) + " |")
  return "\n".join(lines) if len(lines) > 2 else ""


def texts(data_dir: str, kind: str, split: str, lang: str) -> list[str]:
  """A split's sentences in one language, `raw` or `tok` (lc.norm.tok), from the local copy."""
  from homeojax.data import multi30k  # pylint: disable=import-outside-toplevel
  path = multi30k.local_file(data_dir, kind, split, lang)
  if path is None:
    raise FileNotFoundError(f"no {kind} {split}.{lang} sentences under {data_dir!r}")
  return multi30k.read_lines(path)


def convention_of(runs: Sequence[Run], split: str) -> tuple[str, str, str]:
  """The runs' common data convention and language pair on `split` (eval reports before
  these fields: raw, en-de); ValueError if the runs mix them."""
  found = {(e.get("convention", "raw"), e.get("source_lang", "en"), e.get("target_lang", "de"))
           for r in runs if (e := r.evals.get(split))}
  if len(found) > 1:
    raise ValueError(f"the runs mix conventions or language pairs on {split}: {sorted(found)}")
  return found.pop() if found else ("raw", "en", "de")


def score(run: Run, split: str, convention: str) -> float:
  """The run's BLEU on `split` in its convention: sacreBLEU for raw, tokenized for tok."""
  e = run.evals[split]
  return e["sacrebleu"]["score"] if convention == "raw" else e["bleu_tok"]


def significance_table(groups: dict[str, list[Run]], baseline: str, split: str,
                       refs: list[str] | None, convention: str = "raw",
                       samples: int = 1000) -> str:
  """Per variant: BLEU difference to the baseline (sacreBLEU for `raw` runs, tokenized
  BLEU against `lc.norm.tok` references for `tok` runs) with sacreBLEU's paired bootstrap
  (per seed pair, same seed), a paired t-test over seeds, and the pre-registered reading
  of that test: `higher` or `lower` than the baseline at p < `ALPHA`, else `no difference
  shown`."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  from sacrebleu.metrics import BLEU  # pylint: disable=import-outside-toplevel
  from sacrebleu.significance import PairedTest  # pylint: disable=import-outside-toplevel
  base = {r.seed: r for r in groups.get(baseline, []) if split in r.evals}
  metric = "sacreBLEU" if convention == "raw" else "BLEU tok."
  bleu = BLEU() if convention == "raw" else BLEU(tokenize="none", force=True)
  lines = [f"| variant | Δ {metric} vs {baseline} (mean over seeds) | paired bootstrap p "
           f"per seed | paired t-test over seeds | t-test at p < {ALPHA} |",
           "|---|---|---|---|---|"]
  for group, runs in groups.items():
    pairs = [(base[r.seed], r) for r in runs if r.seed in base and split in r.evals]
    if group == baseline or not pairs:
      continue
    deltas = [score(r, split, convention) - score(b, split, convention) for b, r in pairs]
    p_boot = []
    for b, r in pairs:
      if refs is None or split not in b.hyps or split not in r.hyps:
        continue
      test = PairedTest([(baseline, b.hyps[split]), (group, r.hyps[split])],
                        {"BLEU": bleu}, [refs], test_type="bs", n_samples=samples)
      p_boot.append(f"{test()[1]['BLEU'][1].p_value:.3f} (seed {r.seed})")
    if len(pairs) > 1:
      t_test = stats.ttest_rel([score(r, split, convention) for _, r in pairs],
                               [score(b, split, convention) for b, _ in pairs])
      t_text = f"t={t_test.statistic:.2f}, p={t_test.pvalue:.3f} (n={len(pairs)})"
      reading = (("higher" if t_test.statistic > 0 else "lower")
                 if t_test.pvalue < ALPHA else "no difference shown")
    else:
      t_text = reading = "needs ≥ 2 seeds"
    lines.append(f"| {group} | {statistics.mean(deltas):+.2f} | "
                 f"{', '.join(p_boot) or '–'} | {t_text} | {reading} |")
  return "\n".join(lines) if len(lines) > 2 else ""


def subtle_patterns(groups: dict[str, list[Run]], baseline: str, split: str, data_dir: str,
                    convention: str, source_lang: str, target_lang: str,
                    examples: int = 2) -> str:
  """Every group against the baseline on `split`: target-word F-measure by training
  frequency and BLEU by source length (each the mean over the group's seeds), and the
  sentences of their lowest common seed where the group wins and loses most."""
  refs = texts(data_dir, "tok", split, target_lang)
  sources = texts(data_dir, "tok", split, source_lang)
  train_counts = analysis.word_counts(texts(data_dir, "tok", "train", target_lang))

  def tokenized(run: Run) -> list[str]:
    hyps = run.hyps[split]
    return hyps if convention == "tok" else [metrics.moses_tokenize(h, target_lang)
                                             for h in hyps]

  scored = {g: {r.seed: tokenized(r) for r in runs if split in r.hyps}  # Group -> seed -> hyps.
            for g, runs in groups.items()}
  scored = {g: by_seed for g, by_seed in scored.items() if by_seed}
  if baseline not in scored or len(scored) < 2:
    return ""
  order = [baseline] + [g for g in scored if g != baseline]

  def table(title: str, per_run, count_key: str, value_key: str, count_name: str) -> str:
    rows = {g: [per_run(h) for h in scored[g].values()] for g in order}  # Seeds' buckets.
    buckets = list(dict.fromkeys(b["bucket"] for runs in rows.values() for r in runs
                                 for b in r))
    def mean(g, bucket):
      values = [b[value_key] for r in rows[g] for b in r if b["bucket"] == bucket]
      return statistics.mean(values) if values else None
    lines = [f"**{title}** (mean over seeds; Δ against {baseline})", "",
             f"| bucket | {count_name} | {baseline} | "
             + " | ".join(f"{g} (Δ)" for g in order[1:]) + " |",
             "|---|---|---|" + "---|" * (len(order) - 1)]
    for bucket in buckets:
      count = next(b[count_key] for b in rows[baseline][0] if b["bucket"] == bucket)
      base = mean(baseline, bucket)
      cells = []
      for g in order[1:]:
        value = mean(g, bucket)
        cells.append("–" if value is None or base is None
                     else f"{value:.2f} ({value - base:+.2f})")
      base_text = "–" if base is None else f"{base:.2f}"
      lines.append(f"| {bucket} | {count} | {base_text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

  scale = lambda rows: [{**r, "f": 100 * r["f"]} for r in rows]
  parts = [
      table("Target-word F-measure (×100) by frequency in the training targets",
            lambda h: scale(analysis.word_f_by_frequency(h, refs, train_counts)),
            "reference_words", "f", "reference words"),
      table("BLEU (tokenized) by source length in tokens",
            lambda h: analysis.bleu_by_length(h, refs, sources), "sentences", "bleu",
            "sentences")]
  for g in order[1:]:
    common = sorted(scored[baseline].keys() & scored[g].keys())
    if not common:
      continue
    shown = analysis.differing_examples(sources, refs, scored[baseline][common[0]],
                                        scored[g][common[0]], examples)
    lines = [f"**Where {g} and {baseline} differ most** (seed {common[0]}, sentence BLEU)", ""]
    for e in shown:
      lines += [f"- #{e['index']} ({'win' if e['delta'] > 0 else 'loss'}, "
                f"{e['delta']:+.1f}): {e['source']}",
                f"  - reference: {e['reference']}", f"  - {baseline}: {e['baseline']}",
                f"  - {g}: {e['other']}"]
    parts.append("\n".join(lines))
  return "\n\n".join(parts)


def plot_all(groups: dict[str, list[Run]], out_dir: Path) -> list[str]:
  """Writes the PNG plots; returns their file names."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  out_dir.mkdir(parents=True, exist_ok=True)
  written = []

  def save(fig, name):
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    written.append(name)

  fig, ax = plt.subplots(figsize=(7, 4))
  for group, runs in groups.items():
    curves = [dict(r.val_curve()) for r in runs]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    if steps:
      values = np.array([[c[s] for s in steps] for c in curves])
      ax.plot(steps, values.mean(0), marker="o", label=f"{group} (n={len(runs)})")
      if len(runs) > 1:
        ax.fill_between(steps, values.min(0), values.max(0), alpha=0.15)
  ax.set(xlabel="step", ylabel="validation BLEU (tokenized, greedy)",
         title="Validation BLEU during training (band: min–max over seeds)")
  ax.legend(fontsize=7)
  save(fig, "val_bleu.png")

  fig, ax = plt.subplots(figsize=(7, 4))
  for group, runs in groups.items():
    series = []
    for r in runs:
      points = [(m["step"], np.mean([v for k, v in m.items() if k.endswith("entropy_ratio")]))
                for m in r.metrics if any(k.endswith("entropy_ratio") for k in m)]
      series.append(dict(points))
    if series and series[0]:
      steps = sorted(series[0])
      ax.plot(steps, [np.mean([s.get(t, np.nan) for s in series]) for t in steps],
              label=group)
  ax.set(xlabel="step", ylabel="mean duty-cycle entropy ratio", ylim=(0, 1.02),
         title="Homeostasis: duty-cycle entropy / max entropy, mean over sites")
  if ax.lines:
    ax.legend(fontsize=7)
    save(fig, "entropy_ratio.png")
  else:  # No run has homeostatic sites.
    plt.close(fig)

  compared = [g for g in ("kwta", "rfb_kwta_dropout") if g in groups]
  sites = list(dict.fromkeys(  # In order, once each.
      e["site"] for e in next((r.evals[s]["homeostasis"] for g in compared
                               for r in groups[g] for s in r.evals), {}).values()
      if e["site"].endswith("block_output")))
  if compared and sites:
    fig, axes = plt.subplots(len(sites) // 4 + bool(len(sites) % 4), 4,
                             figsize=(13, 2 * (len(sites) // 4 + 1)), squeeze=False)
    for ax, site in zip(axes.flat, sites):
      for group in compared:
        run = groups[group][0]
        report = next(iter(run.evals.values()))["homeostasis"]
        match = next((v for v in report.values() if v["site"] == site), None)
        if match:
          hist = match["histogram"]
          ax.stairs(hist["counts"], hist["edges"], label=group)
      ax.set_title(site.replace("_block/block_output", "").replace("_layers", ""), fontsize=7)
      ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6)
    fig.suptitle("Duty-cycle histograms per block-output site (end of training, lowest seed)",
                 fontsize=9)
    save(fig, "duty_histograms.png")

  fig, ax = plt.subplots(figsize=(7, 4))
  names = list(groups)
  x = np.arange(len(names))
  for offset, label, loss in ((-0.2, "train loss (end)", Run.final_train_loss),
                              (0.2, "validation loss", lambda r: r.final("eval_loss"))):
    values = [np.array([loss(r) for r in groups[g]], float) for g in names]  # None: nan.
    ax.bar(x + offset, [v.mean() for v in values], 0.4, label=label,
           yerr=[v.std(ddof=1) if len(v) > 1 else 0 for v in values], capsize=3)
  ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
  ax.set(ylabel="loss (label-smoothed cross-entropy)",
         title="Train–validation gap (bars: mean, whiskers: std over seeds)")
  ax.set_ylim(0, ax.get_ylim()[1] * 1.15)  # Room for the legend above the bars.
  ax.legend(fontsize=7, loc="upper center", ncol=2)
  save(fig, "train_test_gap.png")
  return written


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give one or more run directories")
  f = flags.FLAGS
  runs = [load_run(paths.absolute(p)) for p in argv[1:]]
  groups = groups_of(runs)
  for baseline in f.baseline:
    if baseline not in groups:
      raise ValueError(f"--baseline={baseline!r} is not among the runs' groups "
                       f"{list(groups)}; give one of them, or --baseline= for no comparison")
  found = sorted({split for r in runs for split in r.evals})
  if found and f.split not in found:
    raise ValueError(f"--split={f.split!r}: no run has an evaluation of it (found: "
                     f"{', '.join(found)})")
  begin, end = BEGIN.format(f.section), END.format(f.section)
  doc_path = paths.absolute(f.doc) if f.doc else None
  doc = doc_path.read_text(encoding="utf-8") if doc_path else None
  if doc is not None and (begin not in doc or end not in doc):
    raise ValueError(f"{f.doc!r} has no {begin} ... {end} section")
  out_dir = paths.absolute(f.out_dir)
  convention, source_lang, target_lang = convention_of(runs, f.split)
  data_dir = str(paths.absolute(f.data_dir)) if f.data_dir else None
  refs = (texts(data_dir, convention, f.split, target_lang) if data_dir else None)
  plots = plot_all(groups, out_dir)
  rel = Path(os.path.relpath(out_dir, doc_path.parent)) if doc_path else out_dir
  parts = [f"Runs: {len(runs)} in {len(groups)} groups.",
           bleu_table(groups, f.split, (source_lang, target_lang))]
  parts += [t for t in (environment_note(runs), memorization_table(groups, f.split),
                        homeostasis_table(groups, f.split)) if t]
  if len(groups) > 1:
    parts += [significance_table(groups, baseline, f.split, refs, convention) or
              f"(No run shares a seed with a {baseline!r} run.)" for baseline in f.baseline]
  if f.baseline and data_dir and f.subtle:
    parts.append(subtle_patterns(groups, f.baseline[0], f.split, data_dir, convention,
                                 source_lang, target_lang))
  parts.append("\n".join(f"![{p}]({rel / p})" for p in plots))
  text = "\n\n".join(parts) + "\n"
  (out_dir / "report.md").write_text(text, encoding="utf-8")
  if doc is not None:
    head, rest = doc.split(begin, 1)
    doc_path.write_text(f"{head}{begin}\n{text}{end}{rest.split(end, 1)[1]}",
                        encoding="utf-8")
  print(text)


def console_main() -> None:
  """`homeojax-report`, also `python -m homeojax.report`: defines the flags, runs `main`."""
  flags.DEFINE_string("out_dir", "report", "Where the tables (report.md) and PNGs go.")
  flags.DEFINE_string("split", "test_2016_flickr", "Split of the final table.")
  flags.DEFINE_list("baseline", ["dropout"], "Groups the others are compared with, one "
                    "table each (--subtle uses the first); empty for no comparison.")
  flags.DEFINE_string("data_dir", None, "Local Multi30K copy, for the references of the "
                      "paired bootstrap and --subtle (skipped without it).")
  flags.DEFINE_bool("subtle", False, "With --data_dir and a baseline: word F-measure by "
                    "training frequency, BLEU by source length, and differing examples, "
                    "against the first baseline.")
  flags.DEFINE_string("doc", None, "Markdown file whose report section is replaced.")
  flags.DEFINE_string("section", "grid", "Name of that section.")
  cli.run(main)


if __name__ == "__main__":
  console_main()
