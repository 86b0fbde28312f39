"""The shipped experiment configs: the literature recipe's variants and issue 26's arms."""

import pytest

from homeojax import config as config_lib
from homeojax.configs import exploration, literature
from homeojax.model import SITE_NAMES


def site_chains(c) -> dict[str, str]:
  """`stack.site` -> the parsed chain in the compact syntax, for non-empty sites."""
  model = config_lib.validate(c)
  return {f"{stack}.{name}": text
          for stack in ("encoder", "decoder")
          for name, text in getattr(model, f"{stack}_sites").to_dict().items() if text}


def test_literature_moves_attention_chains_to_the_embeddings():
  dropout = site_chains(literature.get_config("dropout"))
  assert set(dropout) == {f"{s}.{n}" for s in ("encoder", "decoder")
                          for n in ("embedding", "block_output")}
  assert all(text.startswith("dropout(rate=0.3") for text in dropout.values())
  smart = site_chains(literature.get_config("smart_inhibition"))
  assert smart.keys() == dropout.keys()
  assert all(text.startswith("smart_inhibition(") for text in smart.values())
  assert site_chains(literature.get_config("classic")) == {}  # No dropout anywhere.
  assert set(site_chains(literature.get_config("kwta"))) == {"encoder.block_output",
                                                             "decoder.block_output"}


def changed(arm: str, reference: str) -> dict[str, tuple]:
  """The config fields (flattened) where `arm` differs from `reference`, ignoring the
  variant's name."""
  def flat(c):
    items = {}
    def walk(prefix, d):
      for key, value in d.items():
        if isinstance(value, dict):
          walk(f"{prefix}{key}.", value)
        else:
          items[prefix + key] = value
    walk("", c.to_dict())
    return items
  a, b = flat(exploration.get_config(arm)), flat(exploration.get_config(reference))
  return {k: (a[k], b[k]) for k in a if a[k] != b[k] and k != "variant"}


@pytest.mark.parametrize("arm, difference", [
    ("rfb_s0.1", {"mechanisms.rfb_kwta.sparsity": (0.1, 0.5)}),
    ("rfb_s0.7", {"mechanisms.rfb_kwta.sparsity": (0.7, 0.5)}),
    ("rfb_magnitude", {"mechanisms.rfb_kwta.by": ("magnitude", "value")}),
    ("rfb_raw", {"mechanisms.rfb_kwta.transmit": ("raw", "boosted")}),
    ("rfb_beta0", {"mechanisms.rfb_kwta.beta": (0.0, 1.0)}),
    ("rfb_beta4", {"mechanisms.rfb_kwta.beta": (4.0, 1.0)}),
])
def test_each_exploration_arm_changes_one_thing_from_the_centre(arm, difference):
  assert changed(arm, "rfb") == difference


@pytest.mark.parametrize("arm, site", [("rfb_ffn_hidden", "ffn_hidden"),
                                       ("rfb_attn_weights", "attn_weights"),
                                       ("rfb_layer_output", "layer_output")])
def test_site_arms_add_rfb_kwta_at_one_site_to_the_dropout_arm(arm, site):
  assert changed(arm, "dropout") == {f"sites.{stack}.{site}": ("rfb_kwta", "")
                                     for stack in ("encoder", "decoder")}
  assert site_chains(exploration.get_config(arm))[f"decoder.{site}"].startswith(
      "rfb_kwta(sparsity=0.5,")


def test_every_arm_is_valid_on_the_reduced_budget_and_validates_the_name():
  for arm in exploration.ARMS:
    c = exploration.get_config(arm)
    config_lib.validate(c)
    assert (c.num_train_steps, c.optim.warmup_steps, c.keep_checkpoints) == (3000, 375, 5)
    assert c.variant == arm and set(c.sites.encoder) == set(SITE_NAMES)
  with pytest.raises(ValueError, match="arm='rfb_s0.3'"):
    exploration.get_config("rfb_s0.3")


def test_selection_follows_the_pre_registered_rule():
  scores = {"dropout": 30.0, "rfb": 29.5, "rfb_magnitude": 30.2, "rfb_ffn_hidden": 30.2,
            "rfb_beta0": 30.1, "si_s0.3_beta1": 28.0, "si_s0.1_beta1": 28.4,
            "rfb_magnitude-rate0.2": 30.2}
  # A tie goes to the arm listed first (rfb_magnitude before rfb_ffn_hidden), then to the
  # recipe's rate; rfb_beta0 (kWTA + dropout) is never the RFB-kWTA choice.
  assert exploration.select(scores) == {"rfb_kwta_dropout": "rfb_magnitude",
                                        "smart_inhibition": "si_s0.1_beta1",
                                        "boost_does_not_help": False}
  scores["rfb_beta0"] = 31.0
  assert exploration.select(scores)["boost_does_not_help"] is True
  assert exploration.select({"dropout": 1.0}) == {
      "rfb_kwta_dropout": None, "smart_inhibition": None, "boost_does_not_help": False}
  with pytest.raises(ValueError, match="run 'rfb_s0.3' is not an arm"):
    exploration.select({"rfb_s0.3": 1.0})
