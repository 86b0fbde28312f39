"""homeojax: homeostatic sparsity (kWTA, RFB-kWTA, Smart Inhibition) for JAX/Flax Transformers."""

from homeojax.diagnostics import summarize, summary_json
from homeojax.layers import HOMEOSTASIS, MechanismLayer, Site, end_epoch, find_mechanisms
from homeojax.mechanisms import (KWTA, RFBKWTA, Dropout, Mechanism, SmartInhibition,
                                 parse_chain)
from homeojax.ops import (boost_factors, kwta, num_winners, rfb_kwta, smart_inhibition,
                          threshold, update_duty_cycle)

__version__ = "0.2.0.dev0"  # The one source of the version (pyproject.toml reads it).
__all__ = [
    "HOMEOSTASIS", "KWTA", "RFBKWTA", "Dropout", "Hypothesis", "Mechanism", "MechanismLayer",
    "Site", "SmartInhibition", "Translator", "boost_factors", "end_epoch", "find_mechanisms",
    "kwta", "num_winners", "parse_chain", "rfb_kwta", "smart_inhibition", "summarize",
    "summary_json", "threshold", "update_duty_cycle",
]


def __getattr__(name: str):
  """`Translator` and `Hypothesis`, imported on first use (they bring in the data and
  checkpoint libraries, which the layers alone do not need)."""
  if name in ("Translator", "Hypothesis"):
    from homeojax import eval_lib  # pylint: disable=import-outside-toplevel
    return getattr(eval_lib, name)
  raise AttributeError(f"module 'homeojax' has no attribute {name!r}")
