"""Property tests (hypothesis): shapes, float32/bfloat16 and extreme values for the ops."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

from homeojax import ops
from homeojax.layers import HOMEOSTASIS, Site
from homeojax.mechanisms import RFBKWTA, SmartInhibition

DTYPES = st.sampled_from([jnp.float32, jnp.bfloat16])
SHAPES = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 40))
# Magnitudes from tiny to huge, both signs, zeros, and repeated values (ties).
SCALES = st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e30])
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, database=None)


def values(draw, shape, dtype, scale):
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(shape) * scale
  x[rng.random(shape) < 0.1] = 0.0
  if draw(st.booleans()):  # Repeats: few distinct values, many ties.
    x = np.round(x / scale) * scale
  return jnp.asarray(x, dtype)


@st.composite
def features(draw):
  shape, dtype, scale = draw(SHAPES), draw(DTYPES), draw(SCALES)
  return values(draw, shape, dtype, scale), draw(st.floats(0.01, 0.99))


@PROPERTY
@given(features(), st.sampled_from(ops.METHODS))
def test_kwta_keeps_shape_dtype_and_the_largest(data, method):
  x, sparsity = data
  k = ops.num_winners(x.shape[-1], sparsity)
  y, mask = ops.kwta(x, k, method=method)
  assert y.shape == x.shape and y.dtype == x.dtype and mask.dtype == jnp.bool_
  assert bool(jnp.all(jnp.isfinite(y.astype(jnp.float32))))
  assert bool(jnp.all(jnp.where(mask, y, 0) == jnp.where(mask, x, 0)))
  assert bool(jnp.all(jnp.where(mask, 0, y) == 0))
  if method != "statistical":
    x32 = np.asarray(x, np.float32)
    kept = np.asarray(mask)
    assert np.all(kept.sum(-1) >= k)  # Ties at the threshold may add winners.
    lowest_winner = np.where(kept, x32, np.inf).min(-1)
    highest_loser = np.where(kept, -np.inf, x32).max(-1)
    assert np.all(lowest_winner > highest_loser)
    top = np.sort(x32, -1)[..., ::-1][..., k - 1]
    np.testing.assert_array_equal(lowest_winner, top)


@PROPERTY
@given(st.lists(st.sampled_from([-1e30, -1.0, 0.0, 0.3, 1.0, 2.0, 1e30]), min_size=1,
                max_size=16), st.floats(0.0, 1e6), st.floats(1.0, 1e6),
       st.floats(1e-3, 0.999), DTYPES)
def test_boost_factors_never_overflow(duties, beta, b_max, target, dtype):
  duty = jnp.asarray(sorted(duties), dtype)
  b = ops.boost_factors(duty, target, beta, b_max)
  assert b.shape == duty.shape and bool(jnp.all(jnp.isfinite(b)))
  assert bool(jnp.all((b >= 1 / b_max * (1 - 1e-6)) & (b <= b_max * (1 + 1e-6))))
  assert bool(jnp.all(jnp.diff(b) <= 0))  # Rarer features get larger boosts.


@PROPERTY
@given(features(), st.floats(0.0, 1.0), st.integers(1, 10_000), st.booleans())
def test_duty_cycle_stays_in_unit_interval(data, duty_value, period, masked):
  x, _ = data
  duty = jnp.full(x.shape[-1:], duty_value, jnp.float32)
  valid = (x != 0) if masked else None
  for mask in (x > 0, jnp.ones(x.shape, bool), jnp.zeros(x.shape, bool)):
    new = ops.update_duty_cycle(duty, mask, valid, period)
    assert new.shape == duty.shape
    assert bool(jnp.all((new >= 0) & (new <= 1)))


@PROPERTY
@given(features(), st.sampled_from([0.0, 1.0, 1e30]), st.floats(0.0, 100.0),
       st.sampled_from(["bernoulli", "exact_k"]), st.integers(0, 1000))
def test_smart_inhibition_keeps_valid_finite_entries(data, duty_value, beta, sampling, seed):
  x, sparsity = data
  x = x / 4  # Leave headroom for the 1 / (1 - s) rescaling.
  duty = jnp.full(x.shape[-1:], duty_value, jnp.float32)
  valid = jnp.arange(x.shape[-1]) < max(1, x.shape[-1] // 2)
  inhibit = jax.jit(ops.smart_inhibition, static_argnames=("sparsity", "sampling"))
  y, mask = inhibit(x, duty, jax.random.PRNGKey(seed), sparsity=sparsity, beta=beta,
                    sampling=sampling, valid=valid)
  assert y.shape == x.shape and y.dtype == x.dtype
  assert bool(jnp.all(jnp.isfinite(y.astype(jnp.float32))))
  assert not bool(jnp.any(mask & ~valid))


@PROPERTY
@given(features(), st.floats(0.0, 1e3), st.sampled_from(["exact", "statistical"]),
       st.sampled_from(list(ops.SAMPLING)))
def test_modules_keep_state_in_range_under_extreme_inputs(data, beta, method, sampling):
  x, sparsity = data
  for mechanism in (RFBKWTA(sparsity=sparsity, beta=beta, method=method, period=2),
                    SmartInhibition(sparsity=sparsity, beta=beta, period=2, method=method,
                                    sampling=sampling)):
    module = Site(mechanism)
    variables = jax.jit(module.init)({"params": jax.random.PRNGKey(0)}, x)
    train_step = jax.jit(lambda variables, x, key: module.apply(
        variables, x, train=True, mutable=[HOMEOSTASIS], rngs={"dropout": key}))
    for step in range(3):
      y, updates = train_step(variables, x * (10.0 ** step), jax.random.PRNGKey(step))
      variables = {**variables, **updates}
      (state,) = updates[HOMEOSTASIS].values()
      duty = state["duty"]
      assert bool(jnp.all((duty >= 0) & (duty <= 1))), (mechanism, duty)
      if "keep_rate" in state:
        assert 0 <= float(state["keep_rate"]) <= 1
      assert y.dtype == x.dtype
