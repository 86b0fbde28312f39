"""homeojax.prng draws the same bits as jax.random for Threefry keys, and defers otherwise."""

from unittest import mock

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

  def test_a_mask_read_by_the_forward_and_backward_passes_is_hashed_once(self):
    shape = (64, 96)

    def loss(x, w, key):
      keep = prng.bernoulli(key, 0.7, shape)
      return jnp.sum(jnp.tanh(jnp.where(keep, x, 0.0) @ w))

    def hashing_fusions() -> int:
      grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
      hlo = grad.lower(jnp.ones(shape), jnp.ones((96, 8)), jax.random.key(0)).compile().as_text()
      computations = hlo.split("\n\n")
      return sum("shift-left" in c and f"u32[{shape[0]},{shape[1]}]" in c
                 for c in computations)

    self.assertEqual(hashing_fusions(), 1)
    with mock.patch.object(prng, "computed_once", lambda mask: mask):
      self.assertGreater(hashing_fusions(), 1)  # What computed_once prevents.
