"""The Linen modules: state handling, homeostasis at work, use inside a user's model."""

import json
from pathlib import Path

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import homeojax as hj
from homeojax.diagnostics import entropy_ratio

KEY = jax.random.PRNGKey(0)
CHAINS = ["kwta(sparsity=0.5)", "rfb_kwta(sparsity=0.5, beta=2.0), dropout(rate=0.1)",
          "smart_inhibition(sparsity=0.5, beta=1.0)",
          "smart_inhibition(sparsity=0.25, sampling=exact_k, method=statistical)"]


def train_apply(site, variables, x, key=KEY, valid=None):
  return site.apply(variables, x, valid, train=True, mutable=[hj.HOMEOSTASIS],
                    rngs={"dropout": key})


class SiteTest(chex.TestCase):

  @parameterized.parameters(*CHAINS)
  def test_init_creates_state_at_target_and_eval_freezes_it(self, chain):
    site = hj.Site(chain)
    x = jax.random.normal(KEY, (4, 6, 16))
    variables = site.init(KEY, x)
    state = variables[hj.HOMEOSTASIS]
    (mechanism,) = [v for v in state.values()]
    np.testing.assert_allclose(mechanism["duty"], mechanism["target"])
    self.assertEqual(int(mechanism["steps"]), 0)
    # Eval with the collection mutable: nothing changes.
    _, updates = site.apply(variables, x, train=False, mutable=[hj.HOMEOSTASIS])
    chex.assert_trees_all_equal(updates[hj.HOMEOSTASIS], state)
    # Training with the collection immutable is an error naming the mechanism, unless the
    # statistics are frozen on purpose; then the output is the mutable call's.
    name = next(iter(state))
    with self.assertRaisesRegex(ValueError, f"{name}: train=True updates the 'homeostasis' "
                                "statistics, but the collection is immutable"):
      site.apply(variables, x, train=True, rngs={"dropout": KEY})
    frozen = site.apply(variables, x, train=True, update_stats=False, rngs={"dropout": KEY})
    np.testing.assert_array_equal(frozen, train_apply(site, variables, x)[0])
    # Training with it mutable: the duty cycle moves, steps counts.
    _, updates = train_apply(site, variables, x)
    (new,) = updates[hj.HOMEOSTASIS].values()
    self.assertEqual(int(new["steps"]), 1)
    self.assertFalse(np.allclose(new["duty"], mechanism["duty"]))

  def test_empty_chain_is_identity_without_state(self):
    x = jax.random.normal(KEY, (3, 8))
    variables = hj.Site("").init(KEY, x)
    self.assertEqual(variables, {})
    np.testing.assert_array_equal(hj.Site(()).apply(variables, x, train=True), x)

  def test_smart_inhibition_and_dropout_are_identity_at_eval(self):
    x = jax.random.normal(KEY, (3, 8))
    for chain in ["smart_inhibition(sparsity=0.5)", "dropout(rate=0.5)"]:
      site = hj.Site(chain)
      np.testing.assert_array_equal(site.apply(site.init(KEY, x), x, train=False), x)

  def test_rfb_applies_frozen_boost_at_eval(self):
    site = hj.Site("rfb_kwta(sparsity=0.5, beta=3.0)")
    x = jax.random.normal(KEY, (2, 8))
    variables = site.init(KEY, x)
    duty = jnp.linspace(0.0, 1.0, 8)
    variables = {hj.HOMEOSTASIS: {"rfb_kwta_0": {**variables[hj.HOMEOSTASIS]["rfb_kwta_0"],
                                                 "duty": duty}}}
    expected, _ = hj.rfb_kwta(x, duty, 4, beta=3.0)
    np.testing.assert_allclose(site.apply(variables, x), expected)

  @parameterized.parameters(None, "per_key")
  def test_smart_inhibition_expected_gain_is_the_mean_training_output(self, mask):
    """At eval, `expected_gain` gives what training passes on on average; `identity` not."""
    n, s = 8, 0.25
    x = jax.random.normal(KEY, (2, n))
    valid = None if mask is None else jnp.array([[True] * n, [True] * 5 + [False] * 3])
    site = hj.Site(f"smart_inhibition(sparsity={s}, beta=2.0, scaling=uniform, "
                   "eval_scale=expected_gain)")
    state = site.init(KEY, x, valid)[hj.HOMEOSTASIS]
    duty = jnp.linspace(0.0, 1.0, n)
    variables = {hj.HOMEOSTASIS: {"smart_inhibition_0": {**state["smart_inhibition_0"],
                                                         "duty": duty}}}
    w = np.exp(np.clip(2.0 * (0.75 - np.linspace(0.0, 1.0, n)), -np.log(10), np.log(10)))
    rows = [w, np.where(np.arange(n) < 5, w, 0.0)] if mask else [w, w]
    n_valid = [n, 5] if mask else [n, n]
    keep = np.stack([np.minimum(1, (1 - s) * m * r / r.sum()) for r, m in zip(rows, n_valid)])
    gain = np.where(np.asarray(valid if mask else True), keep / (1 - s), 1.0)
    at_eval = site.apply(variables, x, valid)
    np.testing.assert_allclose(at_eval, x * gain, rtol=1e-5)
    train_mean = jax.vmap(lambda key: site.apply(
        variables, x, valid, train=True, mutable=[hj.HOMEOSTASIS], rngs={"dropout": key})[0])(
            jax.random.split(KEY, 20_000)).mean(0)
    live = np.asarray(valid if mask else jnp.ones_like(x, bool))
    np.testing.assert_allclose(train_mean[live], at_eval[live], atol=0.03)
    self.assertGreater(float(jnp.max(jnp.abs(train_mean - x)[live])), 0.3)  # Identity is off.

  def test_version_1_options_need_each_other(self):
    with self.assertRaisesRegex(ValueError, "scaling='uniform' \\(version 1\\) needs "
                                "sampling='bernoulli', not 'exact_k'"):
      hj.Site("smart_inhibition(sparsity=0.3, sampling=exact_k, scaling=uniform)")
    with self.assertRaisesRegex(ValueError, "eval_scale='expected_gain' corrects version 1"):
      hj.Site("smart_inhibition(sparsity=0.3, eval_scale=expected_gain)")

  @chex.variants(with_jit=True, without_jit=True)
  def test_end_epoch_decays_only_the_declared_betas_and_the_layers_use_them(self):
    site = hj.Site("kwta(sparsity=0.5), rfb_kwta(sparsity=0.5, beta=3.0, beta_decay=0.5), "
                   "smart_inhibition(sparsity=0.5, beta=2.0, beta_decay=0.25), "
                   "rfb_kwta(sparsity=0.5, beta=3.0)")
    x = jax.random.normal(KEY, (2, 8))
    variables = site.init(KEY, x)
    state = variables[hj.HOMEOSTASIS]
    duty = jnp.linspace(0.0, 1.0, 8)
    state = {**state, "rfb_kwta_1": {**state["rfb_kwta_1"], "duty": duty}}
    mechanisms = hj.find_mechanisms(site, x)
    self.assertEqual(sorted(mechanisms), [("kwta_0",), ("rfb_kwta_1",), ("rfb_kwta_3",),
                                          ("smart_inhibition_2",)])
    self.assertEqual(mechanisms[("rfb_kwta_1",)], site.chain[1])
    decayed = self.variant(lambda s: hj.end_epoch(s, mechanisms))(state)
    self.assertEqual(float(decayed["rfb_kwta_1"]["beta"]), 1.5)
    self.assertEqual(float(decayed["smart_inhibition_2"]["beta"]), 0.5)
    self.assertEqual(float(decayed["rfb_kwta_3"]["beta"]), 3.0)  # No decay declared.
    for name in state:  # Nothing else changes, kwta (which has no beta) included.
      for key in set(state[name]) - {"beta"}:
        np.testing.assert_array_equal(decayed[name][key], state[name][key])
    rfb = hj.Site("rfb_kwta(sparsity=0.5, beta=3.0)")  # Eval: the boost of beta 1.5.
    y = rfb.apply({hj.HOMEOSTASIS: {"rfb_kwta_0": decayed["rfb_kwta_1"]}}, x)
    np.testing.assert_allclose(y, hj.rfb_kwta(x, duty, 4, beta=1.5)[0])
    self.assertFalse(np.allclose(y, hj.rfb_kwta(x, duty, 4, beta=3.0)[0]))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*CHAINS)
  def test_jit_and_eager_agree_with_fixed_keys(self, chain):
    site = hj.Site(chain)
    x = jax.random.normal(KEY, (4, 6, 16))
    variables = site.init(KEY, x)
    valid = jnp.arange(6)[None, :, None] < jnp.array([6, 3, 1, 5])[:, None, None]
    fn = self.variant(lambda v, x, key: train_apply(site, v, x, key, valid))
    y1, s1 = fn(variables, x, jax.random.PRNGKey(3))
    y2, s2 = fn(variables, x, jax.random.PRNGKey(3))
    y3, s3 = train_apply(site, variables, x, jax.random.PRNGKey(3), valid)
    chex.assert_trees_all_equal((y1, s1), (y2, s2))
    chex.assert_trees_all_close((y1, s1), (y3, s3), rtol=1e-6)

  def test_stat_shape_wider_than_input_updates_only_its_slice(self):
    site = hj.Site("kwta(sparsity=0.5, period=1)", stat_shape=(2, 10))
    x = jax.random.normal(KEY, (3, 5, 2, 6))  # [batch, query, head, key]
    variables = site.init(KEY, x)
    _, updates = train_apply(site, variables, x)
    duty = updates[hj.HOMEOSTASIS]["kwta_0"]["duty"]
    self.assertEqual(duty.shape, (2, 10))
    np.testing.assert_allclose(duty[:, 6:], 0.5)
    np.testing.assert_allclose(duty[:, :6].mean(-1), 0.5, rtol=1e-6)  # 3 of 6 win, period 1.

  def test_padding_never_enters_statistics(self):
    site = hj.Site("kwta(sparsity=0.5, period=1)")
    x = jnp.concatenate([jnp.tile(jnp.arange(4.0), (3, 1)),
                         jnp.tile(-jnp.arange(4.0), (5, 1))])  # Padding favours others.
    valid = (jnp.arange(8) < 3)[:, None]
    _, updates = train_apply(site, site.init(KEY, x), x, valid=valid)
    np.testing.assert_allclose(updates[hj.HOMEOSTASIS]["kwta_0"]["duty"], [0, 0, 1, 1])

  @parameterized.parameters(
      ("kwta(sparsity=0)", "sparsity=0"), ("kwta(sparsity=1.2)", "sparsity=1.2"),
      ("dropout(rate=-0.1)", "rate=-0.1"), ("rfb_kwta(beta=-2)", "beta=-2"),
      ("kwta(period=0.5)", "period=0.5"), ("kwta(methods=exact)", "'methods'"),
      ("topk(sparsity=0.5)", "mechanism='topk'"), ("kwta(by=max)", "by='max'"),
      ("rfb_kwta(b_max=0.5)", "b_max=0.5"), ("kwta(sparsity)", "not key=value"),
      ("kwta(", "cannot parse"))
  def test_bad_config_raises_value_error_naming_it(self, chain, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
      hj.Site(chain)

  def test_bad_module_arguments_raise_at_construction(self):
    with pytest.raises(ValueError, match="sparsity=1.5"):
      hj.RFBKWTA(sparsity=1.5)
    with pytest.raises(ValueError, match="sampling='all'"):
      hj.SmartInhibition(sampling="all")

  def test_chain_round_trips_through_its_string(self):
    chain = hj.parse_chain("rfb_kwta(sparsity=0.5, beta=1.5, method='statistical'), dropout")
    self.assertEqual(hj.parse_chain(", ".join(map(str, chain))), chain)


class HomeostasisTest(chex.TestCase):
  """On input where 4 of 32 features always dominate, RFB-kWTA evens out the duty cycles."""

  def run_stream(self, mechanism, steps):
    n = 32
    bias = jnp.zeros(n).at[:4].set(2.0)
    module = hj.Site(mechanism)
    variables = module.init(KEY, jnp.zeros((64, n)))

    def step(variables, key):
      x = jax.random.normal(key, (64, n)) + bias
      _, updates = module.apply(variables, x, train=True, mutable=[hj.HOMEOSTASIS])
      return updates, None

    variables, _ = jax.lax.scan(step, variables, jax.random.split(KEY, steps))
    (state,) = variables[hj.HOMEOSTASIS].values()
    return state["duty"], float(entropy_ratio(state["duty"], state["target"]))

  def test_kwta_stays_skewed_and_rfb_kwta_approaches_uniform(self):
    duty, ratio = self.run_stream(hj.KWTA(sparsity=0.75, period=20), 300)
    self.assertLess(ratio, 0.85)
    self.assertGreater(float(duty[:4].min()), 0.75)
    duty, ratio = self.run_stream(hj.RFBKWTA(sparsity=0.75, period=20, beta=5.0), 100)
    self.assertGreater(ratio, 0.95)  # Crossed within 100 steps (5 periods).
    self.assertLess(float(duty[:4].max()), 0.5)

  @parameterized.named_parameters(
      ("positive_threshold_by_value", 3.0, "value", True),
      ("negative_threshold_by_value", -3.0, "value", False),
      ("negative_threshold_by_magnitude", -3.0, "magnitude", True))
  def test_boost_evens_duty_only_when_the_threshold_is_positive_or_by_magnitude(
      self, shift, by, evens):
    """A boost b > 1 on a loser below a negative threshold pushes it further down."""
    n, k = 32, 16
    mean_n = jnp.linspace(-1.0, 1.0, n) + shift

    @jax.jit
    def final_ratio(beta):
      def step(duty_n, key):
        x_BxN = mean_n + jax.random.normal(key, (64, n))
        _, mask_BxN = hj.ops.rfb_kwta(x_BxN, duty_n, k, beta=beta, by=by)
        return 0.95 * duty_n + 0.05 * mask_BxN.mean(0), None
      duty_n, _ = jax.lax.scan(step, jnp.full((n,), k / n), jax.random.split(KEY, 500))
      return entropy_ratio(duty_n, k / n)

    unboosted, boosted = float(final_ratio(0.0)), float(final_ratio(4.0))
    if evens:
      self.assertGreater(boosted, max(unboosted, 0.97))
    else:
      self.assertLess(boosted, unboosted - 0.1)


def test_diagnostics_exact_values_on_a_hand_made_state():
  """Two duty cycles at target, one dead, one saturated; the boosts clip at b_max."""
  duty = jnp.array([0.25, 0.25, 0.0, 1.0])
  state = {"encoder": {"site": {"rfb_kwta_0": {"duty": duty, "target": 0.25, "beta": 4.0,
                                               "b_max": 2.0}}},
           "decoder": {"kwta_0": {"duty": duty, "target": 0.25}}}
  mechanisms = {("encoder", "site", "rfb_kwta_0"): hj.RFBKWTA(sparsity=0.75, b_max=2.0),
                ("decoder", "kwta_0"): hj.KWTA(sparsity=0.75)}
  json_ready = hj.summary_json(state, mechanisms, bins=4)
  assert set(json_ready) == {"encoder/site/rfb_kwta_0", "decoder/kwta_0"}
  stats = json_ready["encoder/site/rfb_kwta_0"]
  assert (stats["mechanism"], stats["site"]) == ("rfb_kwta", "encoder/site")
  assert stats["clip_share"] == 0.5  # The dead feature's boost and the saturated one's.
  np.testing.assert_allclose(stats["entropy_ratio"], 0.5, rtol=1e-6)  # 2 of 4 at H(target).
  assert stats["dead_share"] == 0.25 and stats["realised_sparsity"] == 0.625
  # exp(4 * (0.25 - 1)) and exp(4 * 0.25), clipped to [1 / b_max, b_max].
  assert [stats["boost_min"], stats["boost_max"]] == [0.5, 2.0]
  assert stats["histogram"] == {"counts": [1, 2, 0, 1], "edges": [0.0, 0.25, 0.5, 0.75, 1.0]}
  assert "beta" not in json_ready["decoder/kwta_0"]
  assert json.loads(json.dumps(json_ready)) == json_ready


def test_watch_warns_once_per_site_and_share_after_a_whole_period_above_a_tenth():
  mechanisms = {("enc", "rfb_kwta_0"): hj.RFBKWTA(period=300),
                ("dec", "rfb_kwta_0"): hj.RFBKWTA(period=300),
                ("dec", "kwta_1"): hj.KWTA(period=200),
                ("dec", "smart_inhibition_2"): hj.SmartInhibition(period=100)}
  watch = hj.diagnostics.HomeostasisWatch(mechanisms)
  def summary(enc, dec, dead=0.0):
    return {"enc/rfb_kwta_0": {"clip_share": enc, "dead_share": dead},
            "dec/rfb_kwta_0": {"clip_share": dec, "dead_share": 0.0},
            "dec/kwta_1": {"entropy_ratio": 0.5, "dead_share": dead},
            "dec/smart_inhibition_2": {"clip_share": 0.0, "dead_share": 0.9}}
  assert watch.update(100, summary(0.5, 0.5)) == []
  assert watch.update(300, summary(0.5, 0.05)) == []  # dec dropped below 10%: restarts.
  (warning,) = watch.update(400, summary(0.11, 0.5))  # enc: a whole period (100 to 400).
  assert warning.startswith("enc/rfb_kwta_0: 11% of the boosts have sat at the clip since "
                            "step 100")
  assert watch.update(500, summary(0.5, 0.5)) == []  # Once per site and share.
  assert watch.update(700, summary(0.5, 0.5))[0].startswith("dec/rfb_kwta_0")
  # Dead features: watched for kWTA and RFB-kWTA, not for Smart Inhibition, whose duty
  # cycle records would-be winners only (all its features stay in use).
  assert watch.update(800, summary(0.5, 0.5, dead=0.2)) == []
  (kwta,) = watch.update(1000, summary(0.5, 0.5, dead=0.2))  # kWTA's period: 200.
  assert kwta.startswith("dec/kwta_1: 20% of the features have almost never won")
  (rfb,) = watch.update(1100, summary(0.5, 0.5, dead=0.2))
  assert rfb.startswith("enc/rfb_kwta_0: 20% of the features") and "lower beta" in rfb
  assert watch.update(5000, summary(0.5, 0.5, dead=0.2)) == []


def test_attention_key_statistics_target_the_share_of_visible_keys():
  """Where the valid features vary per vector, the target is 1 - s, not k / n of the
  statistics' full length (except for Smart Inhibition version 1, as it ran)."""
  x = jnp.ones((2, 3, 4, 10))
  for chain, target in (("rfb_kwta(sparsity=0.3)", 0.7), ("kwta(sparsity=0.45)", 0.55),
                        ("smart_inhibition(sparsity=0.3)", 0.7),
                        ("smart_inhibition(sparsity=0.3, scaling=uniform)", 45 / 64)):
    state = hj.Site(chain, stat_shape=(4, 64), per_vector_valid=True).init(KEY, x)
    (mechanism,) = state[hj.HOMEOSTASIS].values()
    np.testing.assert_allclose(mechanism["target"], target, rtol=1e-6)
    np.testing.assert_allclose(mechanism["duty"], target, rtol=1e-6)


class UserModel(nn.Module):
  """A user's own MLP with homeostatic layers inside."""

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.relu(nn.Dense(64)(x))
    x = hj.Site(hj.RFBKWTA(sparsity=0.5, beta=1.0, period=10))(x, train=train)
    x = hj.Site(hj.SmartInhibition(sparsity=0.25, beta=1.0))(x, train=train)
    return nn.Dense(1)(x)


def test_layers_train_inside_a_users_model():
  model = UserModel()
  x = jax.random.normal(KEY, (128, 8))
  target = jnp.sin(x.sum(-1, keepdims=True))
  variables = model.init(KEY, x, train=False)
  params, state = variables["params"], variables[hj.HOMEOSTASIS]
  optimizer = optax.adam(1e-2)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, state, opt_state, key):
    def loss_fn(params):
      y, updates = model.apply({"params": params, hj.HOMEOSTASIS: state}, x, train=True,
                               mutable=[hj.HOMEOSTASIS], rngs={"dropout": key})
      return jnp.mean((y - target) ** 2), updates[hj.HOMEOSTASIS]
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), state, opt_state, loss

  initial_state, losses = state, []
  for key in jax.random.split(KEY, 60):
    params, state, opt_state, loss = step(params, state, opt_state, key)
    losses.append(float(loss))
  assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
  rfb, smart = state["Site_0"]["rfb_kwta_0"], state["Site_1"]["smart_inhibition_0"]
  assert int(rfb["steps"]) == 60
  assert not np.allclose(rfb["duty"], initial_state["Site_0"]["rfb_kwta_0"]["duty"])
  assert not np.allclose(smart["duty"], initial_state["Site_1"]["smart_inhibition_0"]["duty"])


def test_readme_usage_example_runs_and_trains():
  """The README's code block, executed as written, then two of its train steps."""
  readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
  code = readme.split("```python\n", 1)[1].split("```", 1)[0]
  namespace: dict = {}
  exec(compile(code, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  x = jax.random.normal(KEY, (32, 784))
  y = jnp.arange(32) % 10
  params, stats, opt_state = namespace["params"], namespace["stats"], namespace["opt_state"]
  for key in jax.random.split(KEY, 2):
    params, new_stats, opt_state, loss = namespace["train_step"](params, stats, opt_state, x,
                                                                 y, key)
  assert np.isfinite(float(loss))
  assert not np.allclose(new_stats["Site_0"]["rfb_kwta_0"]["duty"],
                         stats["Site_0"]["rfb_kwta_0"]["duty"])
