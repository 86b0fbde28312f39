"""The NNX modules against the Linen ones: same outputs and state updates for the same
inputs, keys and state; NNX transforms, split/merge, Orbax; the README's NNX example."""

import dataclasses
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import homeojax as hj
import homeojax.nnx as hjnnx
from homeojax import layers

KEY = jax.random.PRNGKey(0)
N = 16
CHAINS = [
    "kwta(sparsity=0.5)", "kwta(sparsity=0.25, method=statistical, by=magnitude)",
    "rfb_kwta(sparsity=0.5, beta=2.0)", "rfb_kwta(sparsity=0.3, beta=4.0, transmit=raw)",
    "smart_inhibition(sparsity=0.3, beta=2.0)",
    "smart_inhibition(sparsity=0.4, beta=1.0, sampling=exact_k)",
    "smart_inhibition(sparsity=0.3, beta=3.0, scaling=uniform, eval_scale=expected_gain)",
    "dropout(rate=0.3)",
]


def inputs() -> tuple[jax.Array, jax.Array, jax.Array]:
  """x [3, 5, N], a padding mask over features (3, 9 and N valid), and skewed duties."""
  x = jax.random.normal(KEY, (3, 5, N))
  valid = (jnp.arange(N) < jnp.array([3, 9, N])[:, None, None]) & jnp.ones((3, 5, 1), bool)
  duty = jax.random.uniform(jax.random.PRNGKey(1), (N,), minval=0.01, maxval=0.99)
  return x, valid, duty


def options(mechanism: hj.Mechanism) -> dict:
  return {f.name: getattr(mechanism, f.name) for f in dataclasses.fields(mechanism)}


def nnx_module_of(mechanism: hj.Mechanism) -> nnx.Module:
  return (hjnnx.Dropout(**options(mechanism)) if mechanism.name == "dropout"
          else hjnnx.MODULES[mechanism.name](N, **options(mechanism)))


def linen_and_nnx(chain: str) -> tuple[hj.Mechanism, nnx.Module, dict]:
  """The mechanism, the NNX module with the same (skewed) state as the Linen one, and
  that state."""
  (mechanism,) = hj.parse_chain(chain)
  x, _, duty = inputs()
  state = dict(layers.MechanismLayer(mechanism).init(KEY, x).get(hj.HOMEOSTASIS, {}))
  if state:
    state["duty"] = duty
  nnx_module = nnx_module_of(mechanism)
  for name, value in state.items():
    getattr(nnx_module, name)[...] = value
  return mechanism, nnx_module, state


def nnx_state(module: nnx.Module) -> dict:
  return {name: np.asarray(getattr(module, name)[...])
          for name in getattr(module, "state_names", ())}


@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("train", [True, False])
def test_nnx_matches_linen_with_padding(chain, train):
  mechanism, nnx_module, state = linen_and_nnx(chain)
  x, valid, _ = inputs()
  key = jax.random.PRNGKey(7)
  variables = {hj.HOMEOSTASIS: state} if state else {}
  y_linen, updates = layers.MechanismLayer(mechanism).apply(
      variables, x, valid, train=train, rng=key, mutable=[hj.HOMEOSTASIS])
  y_nnx = nnx_module(x, valid, deterministic=not train, rngs=key)
  np.testing.assert_array_equal(y_nnx, y_linen)
  np.testing.assert_array_equal(y_nnx != 0, y_linen != 0)  # The masks.
  expected = updates.get(hj.HOMEOSTASIS, state) if train else state
  chex.assert_trees_all_equal(nnx_state(nnx_module), jax.device_get(dict(expected)))
  if state and train and mechanism.name != "dropout":
    assert int(nnx_module.steps[...]) == 1  # The statistics did move.


def test_initial_state_and_options_match_linen():
  for chain in CHAINS[:-1]:
    (mechanism,) = hj.parse_chain(chain)
    linen = layers.MechanismLayer(mechanism).init(KEY, jnp.zeros((2, N)))[hj.HOMEOSTASIS]
    nnx_module = nnx_module_of(mechanism)
    chex.assert_trees_all_equal(nnx_state(nnx_module), jax.device_get(dict(linen)))
  with pytest.raises(ValueError, match="sparsity=1.5 is outside"):
    hjnnx.KWTA(N, sparsity=1.5)
  with pytest.raises(ValueError, match="unknown option 'bogus'"):
    hjnnx.RFBKWTA(N, bogus=1)
  with pytest.raises(ValueError, match="rate=-0.1 is outside"):
    hjnnx.Dropout(-0.1)


def test_train_eval_convention_rngs_and_frozen_statistics():
  site = hjnnx.Site("rfb_kwta(sparsity=0.5), smart_inhibition(sparsity=0.3), dropout(rate=0.2)",
                    N, rngs=nnx.Rngs(dropout=3))
  x = jax.random.normal(KEY, (4, N))
  first, second = site(x), site(x)  # Training by default: fresh keys for every call.
  assert not np.array_equal(first, second)
  assert [int(m.steps[...]) for m in site.mechanisms[:2]] == [2, 2]
  site(x, update_stats=False)
  assert int(site.mechanisms[0].steps[...]) == 2  # Frozen on request.
  site.eval()
  np.testing.assert_array_equal(site(x), site(x))
  assert int(site.mechanisms[0].steps[...]) == 2  # Eval reads the statistics only.
  site.train()
  site(x)
  assert int(site.mechanisms[0].steps[...]) == 3
  with pytest.raises(ValueError, match="smart_inhibition: training draws random keys"):
    hjnnx.SmartInhibition(N, sparsity=0.3)(x)
  # A Linen site within a Linen model: the same chain, the same statistics' names.
  linen = hj.Site(site.chain).init(KEY, x)[hj.HOMEOSTASIS]
  assert set(linen["rfb_kwta_0"]) == set(site.mechanisms[0].state_names)


def test_nnx_jit_split_merge_and_orbax_round_trip(tmp_path):
  def make():
    return hjnnx.Site("rfb_kwta(sparsity=0.5, beta=2.0), dropout(rate=0.1)", N,
                      rngs=nnx.Rngs(0))

  eager, jitted = make(), make()
  x = jax.random.normal(KEY, (8, N))
  step = nnx.jit(lambda module, x: module(x))
  for _ in range(3):
    np.testing.assert_array_equal(step(jitted, x), eager(x))
  chex.assert_trees_all_equal(nnx.state(jitted, hjnnx.Homeostasis),
                              nnx.state(eager, hjnnx.Homeostasis))
  graphdef, stats, rest = nnx.split(jitted, hjnnx.Homeostasis, ...)
  assert int(stats["mechanisms"][0]["steps"][...]) == 3
  merged = nnx.merge(graphdef, stats, rest)
  np.testing.assert_array_equal(merged.mechanisms[0].duty[...], eager.mechanisms[0].duty[...])

  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp_path / "state", nnx.state(jitted))
  fresh = make()
  abstract = nnx.state(fresh)
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(tmp_path / "state", abstract)
  nnx.update(fresh, restored)
  chex.assert_trees_all_equal(nnx.state(fresh), nnx.state(jitted))
  fresh.eval(), jitted.eval()
  np.testing.assert_array_equal(fresh(x), jitted(x))


def test_readme_nnx_example_trains_and_the_optimizer_skips_statistics():
  readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
  blocks = [block.split("```", 1)[0] for block in readme.split("```python\n")[1:]]
  (code,) = [block for block in blocks if "nnx.Optimizer" in block]
  namespace: dict = {}
  exec(compile(code, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  model, optimizer = namespace["model"], namespace["optimizer"]
  assert not jax.tree.leaves(nnx.state(optimizer, hjnnx.Homeostasis))
  x = jax.random.normal(KEY, (32, 784))
  y = jnp.arange(32) % 10
  params = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
  duty = np.asarray(model.site.mechanisms[0].duty[...])
  for _ in range(2):
    loss = namespace["train_step"](model, optimizer, x, y)
  assert np.isfinite(float(loss)) and int(model.site.mechanisms[0].steps[...]) == 2
  assert not np.allclose(model.site.mechanisms[0].duty[...], duty)
  assert not all(np.allclose(a, b) for a, b in zip(
      jax.tree.leaves(params), jax.tree.leaves(nnx.state(model, nnx.Param))))


def test_linen_site_through_the_nnx_bridge_refuses_to_train_silently():
  bridged = nnx.bridge.ToNNX(hj.Site("kwta(sparsity=0.5)"), rngs=nnx.Rngs(0))
  x = jnp.ones((2, 8))
  nnx.bridge.lazy_init(bridged, x)
  with pytest.raises(ValueError, match="kwta_0: train=True updates the 'homeostasis' "
                     "statistics, but the collection is immutable"):
    bridged(x, train=True)
  np.testing.assert_array_equal(bridged(x, train=True, update_stats=False),
                                bridged(x, train=False))


def test_nnx_summarize_and_end_epoch_match_linen():
  chain = "rfb_kwta(sparsity=0.5, beta=2.0, beta_decay=0.5), smart_inhibition(sparsity=0.3)"
  site = hjnnx.Site(chain, N, rngs=nnx.Rngs(dropout=1))
  x = jax.random.normal(KEY, (4, N))
  for _ in range(3):
    site(x)
  summary = hjnnx.summarize(site)
  assert sorted(summary) == ["mechanisms/0", "mechanisms/1"]
  linen_site = hj.Site(site.chain)
  stats = {f"{m.mechanism.name}_{i}": m.state() for i, m in enumerate(site.mechanisms)}
  expected = hj.summarize(stats, hj.find_mechanisms(linen_site, x))
  chex.assert_trees_all_close(list(summary.values()), list(expected.values()))
  assert 0 <= float(summary["mechanisms/0"]["clip_share"]) <= 1
  assert "keep_rate" in summary["mechanisms/1"]
  hjnnx.end_epoch(site)
  assert float(site.mechanisms[0].beta[...]) == 1.0  # 2.0 halved; no decay for the other.
  assert float(site.mechanisms[1].beta[...]) == 1.0
