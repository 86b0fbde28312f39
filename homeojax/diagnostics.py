"""Homeostasis diagnostics computed from a `"homeostasis"` state tree.

Per mechanism (site and layer): the duty-cycle entropy relative to its maximum
(`H(duty) / H_max(k, n)`, as nupic.torch's `duty_cycle_metrics`), the share of dead
features (duty < target / 100), the realised sparsity (1 - mean duty), the boost-factor
range (boosting mechanisms) and a duty-cycle histogram. Where k counts only valid entries
(attention weights over sequences of different lengths), the share of winners differs from
the target `k / n` a little, so the entropy ratio can exceed 1 slightly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from homeojax import ops

Array = jax.Array


def binary_entropy(p: Array) -> Array:
  """Entropy in bits of Bernoulli(p), elementwise; 0 at p in {0, 1}."""
  p = jnp.clip(jnp.asarray(p, jnp.float32), 0.0, 1.0)
  q = 1.0 - p
  return -(jnp.where(p > 0, p * jnp.log2(jnp.where(p > 0, p, 1.0)), 0.0)
           + jnp.where(q > 0, q * jnp.log2(jnp.where(q > 0, q, 1.0)), 0.0))


def entropy_ratio(duty: Array, target: float | Array) -> Array:
  """Sum of the features' binary entropies over its maximum, `n * H(target)`."""
  return jnp.sum(binary_entropy(duty)) / (duty.size * binary_entropy(target))


def mechanism_states(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Mapping]]:
  """Yields `(path, state)` for every mechanism state (a dict holding `duty`)."""
  if "duty" in tree:
    yield prefix, tree
    return
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from mechanism_states(value, f"{prefix}/{key}" if prefix else str(key))


def summarize(homeostasis: Mapping[str, Any]) -> dict[str, dict[str, Array]]:
  """Scalar diagnostics per mechanism path; jit-friendly."""
  out = {}
  for path, state in mechanism_states(homeostasis):
    duty, target = state["duty"], state["target"]
    stats = {
        "entropy_ratio": entropy_ratio(duty, target),
        "dead_share": jnp.mean(duty < target / 100.0),
        "realised_sparsity": 1.0 - jnp.mean(duty),
    }
    if "beta" in state:
      boost = ops.boost_factors(duty, target, state["beta"], state["b_max"])
      stats["boost_min"], stats["boost_max"] = jnp.min(boost), jnp.max(boost)
      stats["beta"] = state["beta"]
    out[path] = stats
  return out


def histograms(homeostasis: Mapping[str, Any], bins: int = 20) -> dict[str, dict[str, list]]:
  """Duty-cycle histogram (counts and bin edges on [0, 1]) per mechanism path."""
  out = {}
  for path, state in mechanism_states(homeostasis):
    counts, edges = np.histogram(np.asarray(state["duty"]), bins=bins, range=(0.0, 1.0))
    out[path] = {"counts": counts.tolist(), "edges": edges.tolist()}
  return out


def summary_json(homeostasis: Mapping[str, Any], bins: int = 20) -> dict[str, dict[str, Any]]:
  """`summarize` as plain floats, with the histograms: a JSON-ready diagnostics dict."""
  hists = histograms(homeostasis, bins)
  return {path: {**{k: float(v) for k, v in stats.items()}, "histogram": hists[path]}
          for path, stats in summarize(homeostasis).items()}
