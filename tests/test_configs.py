"""The shipped experiment configs: the literature recipe's variants and issue 26's arms."""

import json

import pytest

from conftest import ROOT
from homeojax import config as config_lib
from homeojax.configs import confirmation, exploration, literature
from homeojax.model import SITE_NAMES


def flat(c) -> dict:
  """A config as `{dotted.field: value}`."""
  out = {}
  def walk(prefix, d):
    for key, value in d.items():
      if isinstance(value, dict):
        walk(f"{prefix}{key}.", value)
      else:
        out[prefix + key] = value
  walk("", c.to_dict())
  return out


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
  """The config fields where `arm` differs from `reference`, but the variant's name."""
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


def test_the_post_hoc_arm_is_rfb_attn_weights_without_its_boost():
  assert changed("rfb_attn_weights_beta0", "rfb_attn_weights") == {
      "mechanisms.rfb_kwta.beta": (0.0, 1.0)}


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
    full = literature.get_config()
    assert (c.num_train_steps, c.keep_checkpoints) == (5000, 5)
    assert c.optim == full.optim and c.checkpoint_every == full.checkpoint_every
    assert c.variant == arm and set(c.sites.encoder) == set(SITE_NAMES)
  with pytest.raises(ValueError, match="arm='rfb_s0.3'"):
    exploration.get_config("rfb_s0.3")


def test_selection_follows_the_pre_registered_rule():
  scores = {"dropout": 30.0, "rfb": 29.5, "rfb_magnitude": 30.2, "rfb_ffn_hidden": 30.2,
            "rfb_beta0": 30.1, "si_s0.3_beta1": 28.0, "si_s0.1_beta1": 28.4,
            "rfb_magnitude-rate0.2": 30.2}
  sparsity = {name: 0.5 for name in scores if name.startswith("rfb")}
  # A tie goes to the arm listed first (rfb_magnitude before rfb_ffn_hidden), then to the
  # recipe's rate; rfb_beta0 (kWTA + dropout) is never the RFB-kWTA choice.
  assert exploration.select(scores, sparsity) == {"rfb_kwta_dropout": "rfb_magnitude",
                                                  "smart_inhibition": "si_s0.1_beta1",
                                                  "dropout": "dropout",
                                                  "boost_does_not_help": False}
  scores["rfb_beta0"] = 31.0
  assert exploration.select(scores, sparsity)["boost_does_not_help"] is True
  scores["rfb_attn_weights_beta0"] = 40.0  # Post hoc: it never takes part.
  assert exploration.select(scores, sparsity)["rfb_kwta_dropout"] == "rfb_magnitude"
  # The dropout arm's rate is retuned by the same rule; ties go to the lower rate.
  scores |= {"dropout-rate0.2": 30.3, "dropout-rate0.1": 30.3}
  assert exploration.select(scores, sparsity)["dropout"] == "dropout-rate0.1"
  assert exploration.select({"dropout": 1.0}, {}) == {
      "rfb_kwta_dropout": None, "smart_inhibition": None, "dropout": "dropout",
      "boost_does_not_help": False}
  with pytest.raises(ValueError, match="arm='rfb_s0.3'"):
    exploration.select({"rfb_s0.3": 1.0}, {"rfb_s0.3": 0.3})
  with pytest.raises(ValueError, match="run 'rfb' has no realised sparsity"):
    exploration.select({"rfb": 1.0}, {})


def test_a_run_whose_kwta_does_not_select_takes_no_part():
  """Half the arm's s is the bar: rfb_s0.1 needs 0.05, the others 0.25."""
  scores = {"rfb": 30.0, "rfb_ffn_hidden": 31.0, "rfb_s0.1": 30.5, "rfb_beta0": 32.0}
  sparsity = {"rfb": 0.5, "rfb_ffn_hidden": 0.24, "rfb_s0.1": 0.05, "rfb_beta0": 0.01}
  assert exploration.select(scores, sparsity) == {
      "rfb_kwta_dropout": "rfb_s0.1", "smart_inhibition": None, "dropout": None,
      "boost_does_not_help": False}
  sparsity["rfb_ffn_hidden"] = 0.25
  assert exploration.select(scores, sparsity)["rfb_kwta_dropout"] == "rfb_ffn_hidden"


def test_realised_sparsity_averages_the_rfb_kwta_sites():
  site = lambda mechanism, value: {"mechanism": mechanism, "realised_sparsity": value}
  evaluation = {"homeostasis": {"a": site("rfb_kwta", 0.5), "b": site("rfb_kwta", 0.25),
                                "c": site("smart_inhibition", 0.9)}}
  assert exploration.realised_sparsity(evaluation) == 0.375
  assert exploration.realised_sparsity({"homeostasis": {"c": site("kwta", 0.5)}}) is None


@pytest.mark.parametrize("role, rfb_run, si_arm", [
    ("kwta", "rfb_magnitude-rate0.2", None), ("rfb_kwta_dropout", "rfb_layer_output", None),
    ("rfb_kwta_dropout", "rfb_s0.7-rate0.1", None), ("smart_inhibition", None, "si_s0.3_beta4"),
    ("rfb_kwta_smart_inhibition", "rfb_ffn_hidden", "si_s0.3_beta4")])
def test_confirmation_roles_are_the_literature_recipe_but_for_mechanisms(role, rfb_run,
                                                                        si_arm):
  c = confirmation.build(role, rfb_run, si_arm)
  base = flat(literature.get_config("dropout"))
  assert {k for k, v in flat(c).items() if base[k] != v} <= {
      k for k in base if k.startswith(("sites.", "mechanisms.")) or k == "variant"}
  chains = site_chains(c)
  names = {m.split("(")[0] for text in chains.values() for m in text.split(", ")
           if "(" in m}
  expected = {"kwta": {"kwta"}, "rfb_kwta_dropout": {"rfb_kwta", "dropout"},
              "smart_inhibition": {"smart_inhibition"},
              "rfb_kwta_smart_inhibition": {"rfb_kwta", "smart_inhibition"}}[role]
  assert names == expected and c.variant == role


def test_confirmation_takes_each_selected_setting():
  kwta = site_chains(confirmation.build("kwta", "rfb_magnitude-rate0.2", None))
  assert kwta["encoder.block_output"] == (
      "kwta(sparsity=0.5, period=1000, method='exact', by='magnitude')")
  rate = confirmation.build("rfb_kwta_dropout", "rfb_s0.7-rate0.1", None)
  assert (rate.mechanisms.dropout.rate, rate.mechanisms.rfb_kwta.sparsity) == (0.1, 0.7)
  both = confirmation.build("rfb_kwta_smart_inhibition", "rfb_ffn_hidden", "si_s0.3_beta4")
  assert (both.mechanisms.smart_inhibition.sparsity, both.mechanisms.smart_inhibition.beta) \
      == (0.3, 4.0)
  recipe = literature.get_config("dropout")
  for run in (None, "dropout"):
    assert confirmation.build("dropout", None, None, run) == recipe
  retuned = confirmation.build("dropout", None, None, "dropout-rate0.2")
  assert retuned.mechanisms.dropout.rate == 0.2 and recipe.mechanisms.dropout.rate == 0.3
  assert site_chains(retuned) == {site: chain.replace("rate=0.3", "rate=0.2")
                                  for site, chain in site_chains(recipe).items()}


def test_confirmation_needs_the_selection():
  with pytest.raises(ValueError, match="variant='kwta' needs stage 1's selection"):
    confirmation.build("kwta", None, "si_s0.3_beta1")
  with pytest.raises(ValueError, match="variant='nope' is not one of"):
    confirmation.build("nope", "rfb", "si_s0.3_beta1")
  with pytest.raises(ValueError, match="dropout run 'rfb-rate0.2' is not"):
    confirmation.build("dropout", None, None, "rfb-rate0.2")


@pytest.mark.parametrize("role, run", [("rfb_kwta_dropout", "rfb_s0.7-rate0.1"),
                                       ("rfb_kwta_dropout", "rfb"),
                                       ("rfb_kwta_dropout", "rfb_attn_weights-rate0.1"),
                                       ("smart_inhibition", "si_s0.1_beta1"),
                                       ("dropout", "dropout-rate0.1")])
def test_a_selected_role_continues_its_exploration_run(role, run):
  """Only the budget differs, so results/run_confirmation.sh may resume the arm's run."""
  arm, _, rate = run.partition("-rate")
  explored = exploration.get_config(arm)
  if rate:
    explored.mechanisms.dropout.rate = float(rate)
  confirmed = confirmation.build(role, run, run, run)
  before, after = flat(explored), flat(confirmed)
  assert before.keys() == after.keys()
  assert {k for k in after if before[k] != after[k]} - {"variant"} == {
      "num_train_steps", "keep_checkpoints"}


def test_selected_is_stage_1s_choice_and_builds_every_role():
  """SELECTED is what the selection rule wrote, and the confirmation can build each role."""
  chosen = json.loads((ROOT / "results/exploration/selection.json").read_text())
  assert confirmation.SELECTED == {role: chosen[role] for role in confirmation.SELECTED}
  for role in confirmation.ROLES:
    c = confirmation.get_config(role)
    assert c.variant == role and c.num_train_steps == literature.get_config().num_train_steps
