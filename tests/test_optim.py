"""The optimizer: learning-rate schedules, gradient accumulation, their settings; the loss."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from homeojax import config as config_lib
from homeojax import experiment
from homeojax import optim as optim_lib


def optim(**overrides):
  c = config_lib.base_config()
  c.optim.update(overrides)
  return c.optim


def test_inverse_sqrt_schedule_warms_up_then_decays_as_fairseq():
  schedule = optim_lib.learning_rate_schedule(
      optim(schedule="inverse_sqrt", learning_rate=2.0, warmup_steps=4), 100)
  np.testing.assert_allclose([schedule(s) for s in (0, 2, 4, 16, 40)],
                             [0.0, 1.0, 2.0, 2.0 * np.sqrt(4 / 16), 2.0 * np.sqrt(4 / 40)],
                             rtol=1e-6)


def test_cosine_schedule_counts_updates_not_batches():
  schedule = optim_lib.learning_rate_schedule(
      optim(learning_rate=1.0, warmup_steps=10, end_lr_fraction=0.1, grad_accumulation=4), 400)
  np.testing.assert_allclose([schedule(10), schedule(100)], [1.0, 0.1], rtol=1e-6)


def test_accumulated_steps_equal_one_step_on_the_mean_gradient():
  params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
  grads = [jax.tree.map(lambda p, i=i: jnp.sin(p + i), params) for i in range(2)]
  settings = dict(learning_rate=0.1, warmup_steps=0)
  accumulating = optim_lib.make_optimizer(optim(grad_accumulation=2, **settings), 20)
  state, p = accumulating.init(params), params
  for i, g in enumerate(grads):
    updates, state = accumulating.update(g, state, p)
    p = optax.apply_updates(p, updates)
    if i == 0:
      jax.tree.map(np.testing.assert_array_equal, p, params)  # No update yet.
  plain = optim_lib.make_optimizer(optim(**settings), 10)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
  updates, _ = plain.update(mean, plain.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), p,
               optax.apply_updates(params, updates))


@pytest.mark.parametrize("field, value, message", [
    ("schedule", "linear", re.escape("optim.schedule='linear' is not one of ('cosine', "
                                     "'inverse_sqrt')")),
    ("grad_accumulation", 0, "optim.grad_accumulation=0 must be an integer >= 1"),
    ("b1", 1.0, r"optim.b1=1.0 is outside \[0.0, 1.0\)"),
])
def test_bad_settings_are_rejected(field, value, message):
  c = config_lib.base_config()
  c.optim[field] = value
  with pytest.raises(ValueError, match=message):
    config_lib.validate(c)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_token_loss_equals_optax_smoothed_cross_entropy_and_its_gradient(smoothing):
  logits = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 11)) * 3
  targets = jnp.array([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8], [9, 10, 0, 0, 0]])

  def reference(logits):
    labels = optax.smooth_labels(jax.nn.one_hot(targets, 11), smoothing)
    floor = 0.0 if smoothing == 0 else float(-jnp.sum(labels[0, 0] * jnp.log(labels[0, 0])))
    return jnp.where(targets != 0, optax.softmax_cross_entropy(logits, labels) - floor, 0.0)

  ours = lambda logits: experiment.token_loss(logits, targets, smoothing)[0]
  np.testing.assert_allclose(ours(logits), reference(logits), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(jax.grad(lambda z: ours(z).sum())(logits),
                             jax.grad(lambda z: reference(z).sum())(logits), atol=1e-6)


def test_token_correctness_is_argmax_and_zero_at_padding():
  logits = jax.random.normal(jax.random.PRNGKey(1), (4, 6, 13))
  guesses = jax.random.randint(jax.random.PRNGKey(2), (4, 6), 0, 13)
  targets = jnp.where(jnp.arange(6) % 2 == 0, jnp.argmax(logits, -1), guesses)  # Half hits.
  _, correct = experiment.token_loss(logits, targets, 0.1)
  expected = (jnp.argmax(logits, -1) == targets) & (targets != 0)
  np.testing.assert_array_equal(correct, expected)
  assert 0 < int(correct.sum()) < correct.size
