"""Issue 26's confirmation (docs/results.md, "Version 2", stage 2): the paper's variants on
the full literature recipe, built from the arms stage 1 selected.

Variant: `--config=configs/confirmation.py:rfb_kwta_dropout` (default `dropout`), one of
`ROLES`. `SELECTED` holds stage 1's choice (`results/exploration/selection.json`, 2026-12-06);
with it empty, only `classic` and `dropout` (the literature recipe's own) can be built.
Evaluate as the baseline: `eval.py --split=test_2016_flickr --average_last=10`.
"""

from homeojax.configs import exploration, literature
from homeojax.mechanisms import parse_chain

ROLES = ("classic", "dropout", "kwta", "rfb_kwta_dropout", "smart_inhibition",
         "rfb_kwta_smart_inhibition")
# Stage 1's choice: the RFB-kWTA + dropout run (an arm, or `ARM-rateR` from stage 1b), the
# Smart Inhibition arm, and the dropout run (`dropout`, or `dropout-rateR` from stage 1b).
SELECTED: dict[str, str | None] = {"rfb_kwta_dropout": "rfb_attn_weights-rate0.1",
                                   "smart_inhibition": "si_s0.1_beta1",
                                   "dropout": "dropout-rate0.1"}


def _renamed(chain: str, names: dict[str, str]) -> str:
  """A chain of bare mechanism names (options come from the config's groups) with each
  name of `names` replaced by its value (dropped if that is empty)."""
  if "(" in chain:
    raise ValueError(f"chain {chain!r} names options; the confirmation expects bare names")
  renamed = [names.get(m.name, m.name) for m in parse_chain(chain)]
  return ", ".join(name for name in renamed if name)


def _explored(run: str):
  """Stage 1's config of a run: an arm, or `ARM-rateR` (its dropout at R, stage 1b)."""
  arm, _, rate = run.partition("-rate")
  c = exploration.get_config(arm)
  if rate:
    c.mechanisms.dropout.rate = float(rate)
  return c


def build(role: str, rfb_run: str | None, si_arm: str | None,
          dropout_run: str | None = None):
  """The config of `role` with the full literature budget, from the runs stage 1
  selected: RFB-kWTA + dropout (an arm, or `ARM-rateR`), Smart Inhibition, and dropout
  (`dropout-rateR` retunes the recipe's rate; None or `dropout` keeps it)."""
  if role not in ROLES:
    raise ValueError(f"variant={role!r} is not one of {ROLES}")
  if role == "classic" or (role == "dropout" and dropout_run in (None, "dropout")):
    return literature.get_config(role)  # Dropout at the recipe's rate: the baseline seeds.
  if role == "dropout" and dropout_run.partition("-rate")[0] != "dropout":
    raise ValueError(f"dropout run {dropout_run!r} is not `dropout` or `dropout-rateR`")
  needed = {"dropout": (dropout_run,), "smart_inhibition": (si_arm,),
            "rfb_kwta_smart_inhibition": (rfb_run, si_arm)}.get(role, (rfb_run,))
  if not all(needed):
    raise ValueError(f"variant={role!r} needs stage 1's selection: fill in "
                     "configs/confirmation.py SELECTED from results/exploration/selection.json")
  c = _explored({"dropout": dropout_run, "smart_inhibition": si_arm}.get(role, rfb_run))
  names = {}
  if role == "kwta":  # The selected winners, without boost, and no dropout anywhere.
    for option in ("sparsity", "period", "method", "by"):
      c.mechanisms.kwta[option] = c.mechanisms.rfb_kwta[option]
    names = {"rfb_kwta": "kwta", "dropout": ""}
  elif role == "rfb_kwta_smart_inhibition":  # The selected Smart Inhibition for dropout.
    c.mechanisms.smart_inhibition = exploration.get_config(si_arm).mechanisms.smart_inhibition
    names = {"dropout": "smart_inhibition"}
  for stack in ("encoder", "decoder"):
    for site, chain in c.sites[stack].items():
      c.sites[stack][site] = _renamed(chain, names)
  full = literature.get_config()
  for field in ("num_train_steps", "checkpoint_every", "keep_checkpoints", "eval_every"):
    c[field] = full[field]
  c.optim.warmup_steps = full.optim.warmup_steps
  c.variant = role
  return c


def get_config(role: str = "dropout"):
  return build(role, SELECTED["rfb_kwta_dropout"], SELECTED["smart_inhibition"],
               SELECTED["dropout"])
