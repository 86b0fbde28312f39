"""Properties of the pure ops in homeojax.ops."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from homeojax import ops

KEY = jax.random.PRNGKey(0)


def tie_free(shape, seed=0):
  """Distinct values: a random permutation of 0..size-1, scaled and centred."""
  values = np.random.default_rng(seed).permutation(np.prod(shape)).reshape(shape)
  return jnp.asarray(values / np.prod(shape) - 0.5, jnp.float32)


def lax_top_k_threshold(x, k):
  return jax.lax.top_k(x, k)[0][..., k - 1:k]


class KWTATest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(("value", 1, "exact"), ("value", 7, "top_k"),
                            ("magnitude", 5, "exact"), ("value", 32, "exact"),
                            ("magnitude", 9, "top_k"))
  def test_exact_keeps_the_k_largest(self, by, k, method):
    x = tie_free((3, 4, 32))
    y, mask = self.variant(functools.partial(ops.kwta, k=k, by=by, method=method))(x)
    scores = np.asarray(x if by == "value" else jnp.abs(x))
    expected = scores >= np.sort(scores, axis=-1)[..., -k:][..., :1]
    np.testing.assert_array_equal(mask.sum(-1), k)
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(y, np.where(expected, x, 0.0))

  @chex.variants(with_jit=True, without_jit=True)
  def test_invalid_entries_never_win(self):
    x = tie_free((6, 16))
    valid = jnp.arange(16) < jnp.array([16, 12, 8, 4, 2, 0])[:, None]
    for method in ops.METHODS:
      _, mask = self.variant(functools.partial(ops.kwta, k=4, method=method))(x, valid=valid)
      self.assertFalse(bool(jnp.any(mask & ~valid)))
      if method != "statistical":
        # Exactly k among the valid entries, or all of them when fewer than k are valid.
        np.testing.assert_array_equal(mask.sum(-1), [4, 4, 4, 4, 2, 0])

  def test_statistical_keeps_about_k_on_gaussian_input(self):
    """Tolerance: mean count within 2% of k, every vector within 20%."""
    n, k = 1024, 256
    x = jax.random.normal(KEY, (64, n))
    _, mask = jax.jit(functools.partial(ops.kwta, k=k, method="statistical"))(x)
    counts = np.asarray(mask.sum(-1))
    self.assertLess(abs(counts.mean() - k), 0.02 * k)
    self.assertLess(np.abs(counts - k).max(), 0.2 * k)

  def test_statistical_with_padding_uses_valid_entries_only(self):
    n, k = 512, 128
    x = jax.random.normal(KEY, (32, n))
    valid = jnp.arange(n) < 256
    x = jnp.where(valid, x, 100.0)  # Huge padded values must not shift the threshold.
    _, mask = ops.kwta(x, k, method="statistical", valid=valid)
    counts = np.asarray(mask.sum(-1))  # k among the 256 valid entries, as exact does.
    self.assertFalse(bool(jnp.any(mask & ~valid)))
    self.assertLess(abs(counts.mean() - k), 0.03 * k)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("exact", "statistical")
  def test_gradient_is_the_winner_mask(self, method):
    x = jax.random.normal(KEY, (4, 64))
    cot = jax.random.normal(jax.random.PRNGKey(1), x.shape)
    fn = lambda x: jnp.sum(ops.kwta(x, 16, method=method)[0] * cot)
    grad = self.variant(jax.grad(fn))(x)
    _, mask = ops.kwta(x, 16, method=method)
    np.testing.assert_allclose(grad, np.where(mask, cot, 0.0), rtol=0, atol=0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("boosted", "raw")
  def test_rfb_gradient_is_boost_times_mask(self, transmit):
    x = jax.random.normal(KEY, (8, 32))
    duty = jnp.linspace(0.0, 1.0, 32)
    fn = lambda x: jnp.sum(ops.rfb_kwta(x, duty, 8, beta=3.0, transmit=transmit)[0])
    grad = self.variant(jax.grad(fn))(x)
    _, mask = ops.rfb_kwta(x, duty, 8, beta=3.0)
    boost = ops.boost_factors(duty, 8 / 32, 3.0) if transmit == "boosted" else 1.0
    np.testing.assert_allclose(grad, np.where(mask, boost * np.ones_like(x), 0.0), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("exact", "statistical")
  def test_a_per_vector_mask_equals_the_same_mask_per_feature(self, method):
    x = tie_free((6, 5, 32))
    valid = jnp.arange(5)[None, :, None] < jnp.array([5, 3, 1, 0, 4, 2])[:, None, None]
    fn = self.variant(functools.partial(ops.kwta, k=8, method=method))
    y, mask = fn(x, valid=valid)
    y_full, mask_full = fn(x, valid=jnp.broadcast_to(valid, x.shape))
    np.testing.assert_array_equal(mask, mask_full)
    np.testing.assert_array_equal(y, y_full)
    assert not mask[~valid[..., 0]].any() and mask[valid[..., 0]].sum(-1).min() > 0


class RFBTest(chex.TestCase):

  def test_boost_factors_values_and_clipping(self):
    duty = jnp.array([0.0, 0.25, 0.5, 1.0])
    b = ops.boost_factors(duty, 0.25, 2.0, b_max=2.0)
    np.testing.assert_allclose(b, [np.exp(0.5), 1.0, np.exp(-0.5), 0.5], rtol=1e-6)
    huge = ops.boost_factors(jnp.array([0.0, 1.0]), 0.5, 1e30)
    np.testing.assert_allclose(huge, [10.0, 0.1], rtol=1e-6)

  def test_boost_picks_rare_winners_and_transmit_modes(self):
    x = jnp.array([[1.0, 0.9, 0.8, 0.1]])
    duty = jnp.array([1.0, 1.0, 0.0, 0.0])  # The first two are frequent winners.
    y, mask = ops.rfb_kwta(x, duty, 2, beta=4.0, b_max=100.0)
    np.testing.assert_array_equal(mask, [[False, False, True, True]])
    b = ops.boost_factors(duty, 0.5, 4.0, 100.0)
    np.testing.assert_allclose(y, x * b * mask, rtol=1e-6)
    y_raw, _ = ops.rfb_kwta(x, duty, 2, beta=4.0, b_max=100.0, transmit="raw")
    np.testing.assert_allclose(y_raw, x * mask)

  def test_zero_beta_is_plain_kwta(self):
    x = tie_free((5, 20))
    y, mask = ops.rfb_kwta(x, jnp.linspace(0, 1, 20), 6, beta=0.0)
    y_ref, mask_ref = ops.kwta(x, 6)
    np.testing.assert_array_equal(mask, mask_ref)
    np.testing.assert_array_equal(y, y_ref)


def chi_square(freq: np.ndarray, p: np.ndarray, draws: int) -> float:
  """Sum over features of the squared standardised deviation of a keep frequency from
  its probability (features kept always or never are left out)."""
  live = (p > 0) & (p < 1)
  return float(np.sum((freq[live] - p[live]) ** 2 / (p[live] * (1 - p[live]) / draws)))


class SmartInhibitionTest(chex.TestCase):
  """Version 2: water-filled keep probabilities, unbiased scaling, both samplers."""
  N, S, BETA, DRAWS = 16, 0.3, 4.0, 20_000
  DUTY = jnp.linspace(0.0, 1.0, 16) ** 2  # Skewed: several preferences reach the cap.

  def probabilities(self, sampling="bernoulli", valid=None):
    target = ops.num_winners(self.N, self.S) / self.N
    w = ops.boost_factors(self.DUTY, target, self.BETA)
    return np.asarray(ops.keep_probabilities(w, self.S, valid, sampling=sampling)), np.asarray(w)

  @parameterized.parameters("bernoulli", "exact_k")
  def test_water_filled_probabilities_sum_to_the_keep_share(self, sampling):
    p, w = self.probabilities(sampling)
    total = (1 - self.S) * self.N if sampling == "bernoulli" else ops.num_winners(self.N, self.S)
    np.testing.assert_allclose(p.sum(), total, rtol=1e-5)
    capped = p >= 1.0
    self.assertTrue(capped.any() and not capped.all())  # The cap binds on this duty.
    ratio = p[~capped] / w[~capped]  # min(1, c * w): proportional below the cap ...
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
    self.assertTrue(np.all(w[capped] * ratio[0] >= ops.EXACT_K_CERTAIN - 1e-6))  # ... capped.
    # Per vector where the valid features vary: n_valid of each vector.
    valid = jnp.arange(self.N)[None, :] < jnp.array([[16], [9], [1]])
    p_valid = np.asarray(ops.keep_probabilities(jnp.asarray(w), self.S, valid))
    np.testing.assert_allclose(p_valid.sum(-1), (1 - self.S) * np.array([16, 9, 1]), rtol=1e-5)
    self.assertTrue(np.all(p_valid[~np.asarray(valid)] == 0))

  @parameterized.parameters("bernoulli", "exact_k")
  def test_unbiased_inclusion_frequencies_and_keep_rate(self, sampling):
    p, _ = self.probabilities(sampling)
    x = jax.random.normal(jax.random.PRNGKey(1), (self.N,)) + 2.0
    fn = jax.jit(lambda key: ops.smart_inhibition(
        jnp.broadcast_to(x, (self.DRAWS, self.N)), self.DUTY, key, self.S, beta=self.BETA,
        sampling=sampling))
    y, mask = fn(KEY)
    freq = np.asarray(mask.mean(0))
    # Goodness of fit of the inclusion frequencies to p: chi-square with N degrees of
    # freedom; its 99.99% quantile is 42.3 (exact_k's negative dependence only lowers it).
    self.assertLess(chi_square(freq, p, self.DRAWS), 42.3)
    # E[y] = x for every feature, within 5 standard errors of the mean of x * m / p.
    stderr = np.abs(np.asarray(x)) * np.sqrt((1 - p) / (p * self.DRAWS))
    np.testing.assert_array_less(np.abs(np.asarray(y.mean(0)) - np.asarray(x)),
                                 5 * stderr + 1e-6)
    # Keep rate: 1 - s, or k / n with exactly k kept.
    np.testing.assert_allclose(float(mask.mean()), p.sum() / self.N, atol=0.005)
    if sampling == "exact_k":
      np.testing.assert_array_equal(mask.sum(-1), ops.num_winners(self.N, self.S))

  @chex.variants(with_jit=True, without_jit=True)
  def test_exact_k_count_is_exact_with_varying_valid_features(self):
    valid = jax.random.uniform(jax.random.PRNGKey(2), (2000, 40)) < jnp.linspace(
        0.05, 1.0, 2000)[:, None]
    duty = jax.random.uniform(jax.random.PRNGKey(3), (40,))
    fn = functools.partial(ops.smart_inhibition, sparsity=0.35, beta=8.0, sampling="exact_k")
    _, mask = self.variant(fn)(jnp.ones((2000, 40)), duty, KEY, valid=valid)
    n_valid = valid.sum(-1)
    expected = jnp.where(n_valid > 0, jnp.maximum(1, jnp.floor(0.65 * n_valid + 0.5)), 0)
    np.testing.assert_array_equal(mask.sum(-1), expected)
    self.assertFalse(bool(jnp.any(mask & ~valid)))

  def test_gradient_is_the_mask_over_p(self):
    p, _ = self.probabilities()
    x = jax.random.normal(KEY, (8, self.N))
    r = jax.random.normal(jax.random.PRNGKey(4), (8, self.N))
    f = lambda x: jnp.sum(r * ops.smart_inhibition(x, self.DUTY, KEY, self.S, beta=self.BETA)[0])
    _, mask = ops.smart_inhibition(x, self.DUTY, KEY, self.S, beta=self.BETA)
    np.testing.assert_allclose(jax.grad(f)(x), np.where(mask, r / p, 0.0), rtol=1e-5)

  def test_version_1_uniform_scaling_reproduces_its_formula(self):
    n, s, beta = 16, 0.3, 4.0
    duty = self.DUTY
    y, mask = jax.jit(functools.partial(ops.smart_inhibition, sparsity=s, beta=beta,
                                        scaling="uniform"))(jnp.ones((20000, n)), duty, KEY)
    w = np.asarray(ops.boost_factors(duty, ops.num_winners(n, s) / n, beta))
    p = np.minimum(1.0, (1 - s) * n * w / w.sum())
    self.assertLess(chi_square(np.asarray(mask.mean(0)), p, 20000), 42.3)
    self.assertLess(p.sum(), (1 - s) * n - 0.5)  # The cap lowers the keep rate.
    np.testing.assert_allclose(y, np.where(mask, 1 / (1 - s), 0.0), rtol=1e-6)  # Biased.

  def test_invalid_entries_are_never_kept(self):
    valid = jnp.arange(12) < 7
    for sampling in ops.SAMPLING:
      _, mask = ops.smart_inhibition(jnp.ones((500, 12)), jnp.full(12, 0.5), KEY, 0.5,
                                     beta=1.0, sampling=sampling, valid=valid)
      self.assertFalse(bool(jnp.any(mask & ~valid)))

  def test_fixed_key_gives_identical_results(self):
    x = jax.random.normal(KEY, (8, 32))
    for sampling in ops.SAMPLING:
      a = ops.smart_inhibition(x, jnp.full(32, 0.3), KEY, 0.5, beta=1.0, sampling=sampling)
      b = ops.smart_inhibition(x, jnp.full(32, 0.3), KEY, 0.5, beta=1.0, sampling=sampling)
      np.testing.assert_array_equal(a[0], b[0])


class DutyCycleTest(chex.TestCase):

  def test_converges_to_true_frequency_with_padding_excluded(self):
    n, period = 8, 50
    p_true = jnp.linspace(0.05, 0.95, n)

    @jax.jit
    def step(duty, key):
      k1, k2 = jax.random.split(key)
      mask = jax.random.uniform(k1, (32, 10, n)) < p_true
      valid = jax.random.uniform(k2, (32, 10, 1)) < 0.6
      mask = mask | ~valid  # Padded vectors look fully active; they must not count.
      return ops.update_duty_cycle(duty, mask, valid, period), None

    duty, _ = jax.lax.scan(step, jnp.full(n, 0.5), jax.random.split(KEY, 1000))
    np.testing.assert_allclose(duty, p_true, atol=0.03)

  def test_exact_ema_step_and_untouched_features(self):
    duty = jnp.array([[0.5, 0.5, 0.5]])
    mask = jnp.array([[[True, False, True]], [[True, True, True]]])  # [2, 1, 3]
    valid = jnp.array([[[True, True, False]], [[True, False, False]]])
    new = ops.update_duty_cycle(duty, mask, valid, period=4)
    # Feature 0: freq 1; feature 1: freq 0 (one valid vector); feature 2: no valid entry.
    np.testing.assert_allclose(new, [[0.5 + 0.5 / 4, 0.5 - 0.5 / 4, 0.5]])


class ValidationTest(chex.TestCase):

  @parameterized.parameters(
      (lambda: ops.num_winners(10, 0.0), "sparsity=0.0"),
      (lambda: ops.num_winners(10, 1.0), "sparsity=1.0"),
      (lambda: ops.kwta(jnp.ones((2, 4)), 0), "k=0"),
      (lambda: ops.kwta(jnp.ones((2, 4)), 5), "k=5"),
      (lambda: ops.kwta(jnp.ones((2, 4)), 2, method="sort"), "method='sort'"),
      (lambda: ops.kwta(jnp.ones((2, 4)), 2, by="abs"), "by='abs'"),
      (lambda: ops.kwta(jnp.ones((2, 4)), 2, valid=jnp.ones(3, bool)), "valid has shape"),
      (lambda: ops.boost_factors(jnp.ones(3), 0.5, -1.0), "beta=-1.0"),
      (lambda: ops.rfb_kwta(jnp.ones((2, 4)), jnp.ones(4), 2, beta=1.0, transmit="x"),
       "transmit='x'"),
      (lambda: ops.smart_inhibition(jnp.ones(4), jnp.ones(4), KEY, 0.5, beta=1.0,
                                    sampling="gumbel"), "sampling='gumbel'"),
      (lambda: ops.update_duty_cycle(jnp.ones(4), jnp.ones(4, bool), None, 0), "period=0"),
  )
  def test_bad_arguments_raise_naming_the_value(self, call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
      call()

  def test_num_winners_rounding(self):
    self.assertEqual(ops.num_winners(10, 0.7), 3)
    self.assertEqual(ops.num_winners(10, 0.99), 1)
    self.assertEqual(ops.num_winners(512, 0.5), 256)


class PerVectorKTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_k_counts_among_valid_keys(self):
    """Causal attention rows: row q has q+1 valid keys and keeps round(0.5 * (q+1))."""
    x = tie_free((3, 8, 8))
    valid = jnp.tril(jnp.ones((8, 8), bool))
    k = ops.winners_per_vector(jnp.broadcast_to(valid, x.shape), 0.5)
    _, mask = self.variant(lambda x: ops.kwta(x, k, valid=valid, k_max=4))(x)
    expected = np.maximum(1, np.floor(0.5 * np.arange(1, 9) + 0.5))
    np.testing.assert_array_equal(mask.sum(-1), np.broadcast_to(expected, (3, 8)))
    self.assertFalse(bool(jnp.any(mask & ~valid)))

  def test_per_vector_k_needs_its_bound_with_top_k(self):
    with pytest.raises(ValueError, match="k_max"):
      ops.kwta(jnp.ones((2, 4)), jnp.array([[1], [2]]), method="top_k")

  def test_rfb_kwta_with_per_vector_k_needs_a_target_duty(self):
    x, duty, k = jnp.arange(8.0).reshape(2, 4), jnp.full((4,), 0.5), jnp.array([[1], [2]])
    with pytest.raises(ValueError, match="k_max"):
      ops.rfb_kwta(x, duty, k, beta=1.0, method="statistical")
    _, mask = ops.rfb_kwta(x, duty, k, beta=1.0, target=0.5)  # Uniform duty: no boost.
    np.testing.assert_array_equal(mask, [[0, 0, 0, 1], [0, 0, 1, 1]])

  @parameterized.parameters("exact", "top_k")
  def test_per_vector_k_exact_methods_agree(self, method):
    x = jax.random.normal(KEY, (6, 10))
    k = jnp.arange(1, 7)[:, None]
    _, mask = ops.kwta(x, k, method=method, k_max=6)
    np.testing.assert_array_equal(mask.sum(-1), np.arange(1, 7))


class RadixSelectTest(chex.TestCase):
  """The default exact threshold equals lax.top_k's, bit for bit."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((jnp.float32, 90), (jnp.float32, 1), (jnp.bfloat16, 17),
                            (jnp.float32, 128))
  def test_matches_top_k(self, dtype, k):
    x = (jax.random.normal(KEY, (4, 16, 128)) * 50).astype(dtype)
    x = x.at[0, 0, :5].set(jnp.inf).at[0, 1, :].set(0.0).at[0, 2, :3].set(-jnp.inf)
    x = x.at[1, 0, :64].set(-0.0).at[1, 0, 64:].set(0.0).at[1, 1, ::2].set(1e-40)
    fn = self.variant(lambda x: ops.threshold(x, k, "exact"))
    np.testing.assert_array_equal(fn(x), lax_top_k_threshold(x, k))
    self.assertEqual(fn(x).dtype, dtype)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((1023, 1), (1023, 1023), (1023, 400), (1024, 1), (1024, 1024),
                            (1500, 700))
  def test_matches_top_k_at_the_width_of_a_packed_count(self, n, k):
    """n = 1023 is the longest vector whose three counts share one uint32 (two bits per
    pass); longer ones take one bit per pass. Integer values make many ties."""
    x = jnp.round(jax.random.normal(KEY, (3, n)) * 4).at[1].set(0.0).at[2, ::3].set(-jnp.inf)
    fn = self.variant(lambda x: ops.threshold(x, k, "exact"))
    np.testing.assert_array_equal(fn(x), lax_top_k_threshold(x, k))
