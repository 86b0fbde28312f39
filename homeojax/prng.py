"""Uniform and Bernoulli draws equal, bit for bit, to `jax.random`'s for Threefry keys,
as elementwise expressions that XLA fuses.

`jax.random` lowers the Threefry-2x32 hash on CPU as a loop over its five rounds, each
round a separate pass over memory; a dropout mask then costs about twice the hash
(`docs/performance.md`). Written out, the twenty rounds fuse into one pass. Keys of other
implementations (`rbg`, ...) go to `jax.random` unchanged.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def threefry2x32(key_pair: tuple[Array, Array], count_hi: Array, count_lo: Array
                 ) -> tuple[Array, Array]:
  """The Threefry-2x32 block cipher (20 rounds; Salmon et al. 2011) of each counter."""
  k0, k1 = key_pair
  keys = (k0, k1, k0 ^ k1 ^ _PARITY)
  x0, x1 = count_hi + keys[0], count_lo + keys[1]
  for block in range(5):
    for r in _ROTATIONS[block % 2]:
      x0 = x0 + x1
      x1 = ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))) ^ x0
    x0 = x0 + keys[(block + 1) % 3]
    x1 = x1 + keys[(block + 2) % 3] + np.uint32(block + 1)
  return x0, x1


def _threefry_key(key: Array) -> Array | None:
  """The uint32[2] data of a Threefry key (raw or typed); None for other implementations."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if str(jax.random.key_impl(key)) != "threefry2x32":
      return None
    key = jax.random.key_data(key)
  elif jax.config.jax_default_prng_impl != "threefry2x32":
    return None
  if key.shape != (2,) or key.dtype != jnp.uint32 or not jax.config.jax_threefry_partitionable:
    return None
  return key


def bits(key: Array, shape: tuple[int, ...]) -> Array:
  """uint32 random bits of `shape`: `jax.random.bits(key, shape)`."""
  data, size = _threefry_key(key), math.prod(shape)
  if data is None or size >= 2 ** 32:
    return jax.random.bits(key, shape)
  count_lo = lax.iota(jnp.uint32, size).reshape(shape)
  x0, x1 = threefry2x32((data[0], data[1]), jnp.zeros_like(count_lo), count_lo)
  return x0 ^ x1


def uniform(key: Array, shape: tuple[int, ...]) -> Array:
  """float32 uniform on [0, 1) of `shape`: `jax.random.uniform(key, shape)`."""
  mantissa = (bits(key, shape) >> np.uint32(9)) | np.uint32(0x3F800000)
  return lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0


def computed_once(mask: Array) -> Array:
  """`mask`, computed once however many fusions read it.

  XLA duplicates cheap elementwise producers into each consumer, so a mask read by the
  forward pass and by two gradient fusions would be hashed three times. It never duplicates
  an expensive operation such as `sqrt`, and the square root of 0 or 1 is exact.
  """
  return jnp.sqrt(mask.astype(jnp.float32)) > 0.0


def bernoulli(key: Array, p: float | Array, shape: tuple[int, ...]) -> Array:
  """A boolean array of `shape`, True with probability `p`: `jax.random.bernoulli`,
  computed once (`computed_once`)."""
  return computed_once(uniform(key, shape) < p)
