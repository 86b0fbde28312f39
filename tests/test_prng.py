"""homeojax.prng draws the same bits as jax.random for Threefry keys, and defers otherwise."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from homeojax import prng

SHAPES = ((7,), (3, 5, 2), (64, 32, 4, 32))


class PrngTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*SHAPES)
  def test_equals_jax_random_bit_for_bit(self, *shape):
    for key in (jax.random.PRNGKey(3), jax.random.key(11)):
      bits = self.variant(prng.bits, static_argnums=1)(key, shape)
      np.testing.assert_array_equal(bits, jax.random.bits(key, shape))
      np.testing.assert_array_equal(self.variant(prng.uniform, static_argnums=1)(key, shape),
                                    jax.random.uniform(key, shape))
      np.testing.assert_array_equal(
          self.variant(prng.bernoulli, static_argnums=2)(key, 0.3, shape),
          jax.random.bernoulli(key, 0.3, shape))

  def test_other_implementations_go_to_jax_random(self):
    key = jax.random.key(5, impl="rbg")
    np.testing.assert_array_equal(prng.bernoulli(key, 0.5, (4, 9)),
                                  jax.random.bernoulli(key, 0.5, (4, 9)))

  def test_uniform_lies_in_the_unit_interval_with_the_right_mean(self):
    u = prng.uniform(jax.random.PRNGKey(0), (200_000,))
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(jnp.mean(u)) - 0.5) < 5 * (1 / 12) ** 0.5 / 200_000 ** 0.5
