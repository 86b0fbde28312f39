"""Issue 26's pre-registered exploration (docs/results.md, "Version 2", stage 1): the
literature recipe (configs/literature.py) on a reduced budget, one arm per setting,
validation only. The budget is the recipe's first 5000 batches, its schedule unchanged
(the inverse-sqrt rate does not depend on the length of the run), so an arm's run is the
start of the same arm's full run and can be resumed into it.

Arm: `--config=configs/exploration.py:rfb_magnitude` (default `dropout`). Every RFB-kWTA
arm changes one thing from `rfb` (RFB-kWTA by value, s 0.5, beta 1, boosted values passed
on, at the sublayer outputs, before the recipe's dropout 0.3). Score each with
`eval.py --split=validation --average_last=5`.
"""

from homeojax.configs import literature

# Each arm: the literature variant it starts from, and its config overrides.
ARMS: dict[str, tuple[str, dict]] = {
    "dropout": ("dropout", {}),  # The recipe's dropout 0.3 (embeddings, sublayer outputs).
    "rfb": ("rfb_kwta_dropout", {}),  # The centre: RFB-kWTA at block_output, s 0.5.
    "rfb_s0.1": ("rfb_kwta_dropout", {"mechanisms.rfb_kwta.sparsity": 0.1}),  # v1's reading.
    "rfb_s0.7": ("rfb_kwta_dropout", {"mechanisms.rfb_kwta.sparsity": 0.7}),  # Sparser.
    "rfb_magnitude": ("rfb_kwta_dropout", {"mechanisms.rfb_kwta.by": "magnitude"}),  # |x|.
    "rfb_raw": ("rfb_kwta_dropout", {"mechanisms.rfb_kwta.transmit": "raw"}),  # Numenta's.
    "rfb_beta0": ("rfb_kwta_dropout", {"mechanisms.rfb_kwta.beta": 0.0}),  # Plain kWTA.
    "rfb_beta4": ("rfb_kwta_dropout", {"mechanisms.rfb_kwta.beta": 4.0}),  # Strong boost.
    "rfb_ffn_hidden": ("dropout", {"sites.*.ffn_hidden": "rfb_kwta"}),  # Post-ReLU, >= 0.
    "rfb_attn_weights": ("dropout", {"sites.*.attn_weights": "rfb_kwta"}),  # Over keys.
    "rfb_layer_output": ("dropout", {"sites.*.layer_output": "rfb_kwta"}),  # After add & LN.
    "si_s0.3_beta1": ("smart_inhibition", {"mechanisms.smart_inhibition.sparsity": 0.3}),
    "si_s0.3_beta4": ("smart_inhibition", {"mechanisms.smart_inhibition.sparsity": 0.3,
                                           "mechanisms.smart_inhibition.beta": 4.0}),
    "si_s0.1_beta1": ("smart_inhibition", {"mechanisms.smart_inhibition.sparsity": 0.1}),
    # Added after results (docs/results.md): rfb_attn_weights without its boost.
    "rfb_attn_weights_beta0": ("dropout", {"sites.*.attn_weights": "rfb_kwta",
                                           "mechanisms.rfb_kwta.beta": 0.0}),
}
# Arms added after results came in: reported, never selected.
POST_HOC = ("rfb_attn_weights_beta0",)


def _set(c, field: str, value) -> None:
  """Sets a dotted field; `sites.*.NAME` sets the site in both stacks."""
  *parents, name = field.split(".")
  targets = [c]
  for part in parents:
    targets = [t[key] for t in targets for key in (t.keys() if part == "*" else [part])]
  for t in targets:
    t[name] = value


def get_config(arm: str = "dropout"):
  if arm not in ARMS:
    raise ValueError(f"arm={arm!r} is not one of {tuple(ARMS)}")
  variant, overrides = ARMS[arm]
  c = literature.get_config(variant)
  c.variant = arm
  c.mechanisms.rfb_kwta.sparsity = 0.5  # The centre's s: its threshold is near 0, not below.
  for field, value in overrides.items():
    _set(c, field, value)
  c.num_train_steps = 5_000  # The recipe's first 5000 of 16,000 batches (2500 updates).
  c.keep_checkpoints = 5  # The last 5 epochs, for eval.py --average_last=5.
  return c


def realised_sparsity(evaluation: dict) -> float | None:
  """The mean realised sparsity of the RFB-kWTA sites in an evaluation's diagnostics
  (`eval.py`'s JSON), None without such a site."""
  values = [site["realised_sparsity"] for site in evaluation.get("homeostasis", {}).values()
            if site.get("mechanism") == "rfb_kwta"]
  return sum(values) / len(values) if values else None


def select(scores: dict[str, float], sparsity: dict[str, float]) -> dict[str, str | None]:
  """The pre-registered selection (docs/results.md) from validation BLEU per run name (an
  arm, or an arm with a dropout rate from stage 1b, e.g. `rfb_magnitude-rate0.2`): the
  best boosted RFB-kWTA + dropout run, the best Smart Inhibition arm, the best run of the
  `dropout` arm (its rate retuned as the RFB-kWTA arm's is; the amendment of 2026-12-06),
  and whether plain kWTA + dropout (`rfb_beta0`) beat every boosted run. Ties go to the
  arm listed first in `ARMS`, then to the recipe's rate, then to the lower rate; None
  where no such run has a score.

  An RFB-kWTA run takes part only if its kWTA selects: its entry in `sparsity` (each
  run's `realised_sparsity`) is at least half its arm's s (the deviation of 2026-12-05 in
  docs/results.md). Runs of `POST_HOC` arms take no part."""
  order = {arm: i for i, arm in enumerate(ARMS)}
  scores = {name: score for name, score in scores.items()
            if name.partition("-rate")[0] not in POST_HOC}
  def rank(name):
    arm, _, rate = name.partition("-rate")
    if arm not in order:
      raise ValueError(f"run {name!r} is not an arm of {tuple(ARMS)} (with -rateR)")
    return (-scores[name], order[arm], rate != "", float(rate or 0))
  def best(names):
    return min(names, key=rank) if names else None
  def selects(name):
    if name not in sparsity:
      raise ValueError(f"run {name!r} has no realised sparsity")
    arm = name.partition("-rate")[0]
    return sparsity[name] >= get_config(arm).mechanisms.rfb_kwta.sparsity / 2
  rfb_runs = [n for n in scores if n.startswith("rfb") and selects(n)]
  rfb = best([n for n in rfb_runs if not n.startswith("rfb_beta0")])
  beta0 = [scores[n] for n in rfb_runs if n.startswith("rfb_beta0")]
  return {"rfb_kwta_dropout": rfb,
          "smart_inhibition": best([n for n in scores if n.startswith("si_")]),
          "dropout": best([n for n in scores if n.partition("-rate")[0] == "dropout"]),
          "boost_does_not_help": bool(rfb and beta0 and max(beta0) > scores[rfb])}
