"""Validation BLEU against training wall time, per run: the quality a CPU-hour buys.

  python results/quality_per_hour.py OUT_PREFIX RUN_DIR...

Writes OUT_PREFIX.png (BLEU against wall minutes) and OUT_PREFIX.md (a table). A run's
validation BLEU is the tokenized BLEU of greedy decoding logged in its `metrics.jsonl`.
Its wall time is the logged `wall_seconds` (the training loop's time, summed over resumes);
runs that predate that field get `run.json`'s `train_seconds` spread evenly over the steps,
marked "≈". All runs shared a noisy 2-core CPU with other work.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curve(run: Path) -> tuple[str, list[tuple[float, int, float]], bool]:
  """The run's name, its (wall minutes, step, validation BLEU) points, and whether the
  wall times are measured (else spread evenly)."""
  records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
             if line.strip()]
  info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
  measured = all("wall_seconds" in r for r in records)
  last = records[-1]["step"]
  points = [((r["wall_seconds"] if measured else info["train_seconds"] * r["step"] / last) / 60,
             r["step"], r["eval_bleu_tok"]) for r in records if "eval_bleu_tok" in r]
  return info.get("name", run.name), points, measured


def main(out: str, runs: list[str]) -> None:
  fig, ax = plt.subplots(figsize=(7, 4))
  rows = ["| run | step | wall min | validation BLEU (tok., greedy) |", "|---|---|---|---|"]
  for run in map(Path, runs):
    name, points, measured = curve(run)
    ax.plot([p[0] for p in points], [p[2] for p in points], marker="o",
            linestyle="-" if measured else "--", label=name)
    rows += [f"| {name} | {step} | {'' if measured else '≈'}{minutes:.0f} | {bleu:.2f} |"
             for minutes, step, bleu in points]
  ax.set(xlabel="training wall minutes (2-core CPU, shared)",
         ylabel="validation BLEU (tokenized, greedy)",
         title="Quality per CPU time: old (tiny) vs new (literature) recipe")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(f"{out}.png", dpi=120)
  Path(f"{out}.md").write_text("\n".join(rows) + "\n")
  print("\n".join(rows))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:])
