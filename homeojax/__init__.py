"""homeojax: homeostatic sparsity (kWTA, RFB-kWTA, Smart Inhibition) for JAX/Flax Transformers."""

from homeojax.diagnostics import summarize, summary_json
from homeojax.layers import (HOMEOSTASIS, KWTA, RFBKWTA, Dropout, Mechanism, Site,
                             SmartInhibition, decay_beta, parse_chain)
from homeojax.ops import (boost_factors, kwta, num_winners, rfb_kwta, smart_inhibition,
                          threshold, update_duty_cycle)

__version__ = "0.1.0"
__all__ = [
    "HOMEOSTASIS", "KWTA", "RFBKWTA", "Dropout", "Mechanism", "Site", "SmartInhibition",
    "boost_factors", "decay_beta", "kwta", "num_winners", "parse_chain", "rfb_kwta",
    "smart_inhibition", "summarize", "summary_json", "threshold", "update_duty_cycle",
]
