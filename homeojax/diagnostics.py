"""Homeostasis diagnostics computed from a `"homeostasis"` state tree.

Each mechanism declares its diagnostics (`Mechanism.diagnostics`): for all with a duty
cycle, its entropy relative to the maximum (`H(duty) / H_max(k, n)`, as nupic.torch's
`duty_cycle_metrics`), the share of dead features (duty < target / 100) and the realised
sparsity (1 - mean duty); for the boosting ones, the boost range and the share of boosts
at the clip; for Smart Inhibition v2, the realised keep rate and the range of p. Where k
counts only valid entries (attention weights over sequences of different lengths), the
share of winners differs from the target a little, so the entropy ratio can exceed 1
slightly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Path = tuple[str, ...]
WARN_ABOVE = 0.1  # Warn when a watched share stays above this for a whole period.
WATCHED = {  # Per watched share: what it counts, and what it means for the site.
    "clip_share": ("of the boosts have sat at the clip",
                   "the boost no longer balances this site's features (shared/docs/"
                   "homeostasis.md: winners by magnitude, a higher sparsity, or a "
                   "non-negative site keep it homeostatic)"),
    "dead_share": ("of the features have almost never won (duty cycle under a hundredth "
                   "of the target)",
                   "they get no gradient, so this site's features have polarised instead "
                   "of evening out (winners by magnitude or a lower beta keep them in use; "
                   "docs/results.md, stage 1)"),
}


def binary_entropy(p: Array) -> Array:
  """Entropy in bits of Bernoulli(p), elementwise; 0 at p in {0, 1}."""
  p = jnp.clip(jnp.asarray(p, jnp.float32), 0.0, 1.0)
  q = 1.0 - p
  return -(jnp.where(p > 0, p * jnp.log2(jnp.where(p > 0, p, 1.0)), 0.0)
           + jnp.where(q > 0, q * jnp.log2(jnp.where(q > 0, q, 1.0)), 0.0))


def entropy_ratio(duty: Array, target: float | Array) -> Array:
  """Sum of the features' binary entropies over its maximum, `n * H(target)`."""
  return jnp.sum(binary_entropy(duty)) / (duty.size * binary_entropy(target))


def summarize(homeostasis: Mapping[str, Any], mechanisms: Mapping[Path, Any]
              ) -> dict[str, dict[str, Array]]:
  """Each mechanism's own diagnostics (`Mechanism.diagnostics`), keyed by its path joined
  with "/"; `mechanisms` maps paths to mechanisms (`layers.find_mechanisms`). Jit-friendly."""
  return {"/".join(path): mechanism.diagnostics(state)
          for path, mechanism, state in mechanism_states(homeostasis, mechanisms)}


def mechanism_states(homeostasis: Mapping[str, Any], mechanisms: Mapping[Path, Any]):
  """`(path, mechanism, state)` of every mechanism of `mechanisms` in the state tree."""
  for path, mechanism in mechanisms.items():
    state = homeostasis
    for key in path:
      state = state[key]
    yield path, mechanism, state


def summary_json(homeostasis: Mapping[str, Any], mechanisms: Mapping[Path, Any],
                 bins: int = 20) -> dict[str, dict[str, Any]]:
  """`summarize` as plain floats, with each mechanism's name, options and site (the path
  of its `Site`) and a duty-cycle histogram (counts and edges on [0, 1]): JSON-ready."""
  summary = summarize(homeostasis, mechanisms)
  out = {}
  for path, mechanism, state in mechanism_states(homeostasis, mechanisms):
    counts, edges = np.histogram(np.asarray(state["duty"]), bins=bins, range=(0.0, 1.0))
    out["/".join(path)] = {
        "mechanism": mechanism.name, "options": str(mechanism), "site": "/".join(path[:-1]),
        **{k: float(v) for k, v in summary["/".join(path)].items()},
        "histogram": {"counts": counts.tolist(), "edges": edges.tolist()}}
  return out


class HomeostasisWatch:
  """Warns, once per mechanism and share, when a share that the mechanism watches
  (`Mechanism.watched`: boosts at the clip, dead features) has stayed above `WARN_ABOVE`
  for a whole `period`, judged from the summaries logged every few steps."""

  def __init__(self, mechanisms: Mapping[Path, Any]):
    self.mechanisms = {"/".join(path): m for path, m in mechanisms.items()}
    self.since: dict[tuple[str, str], int] = {}
    self.warned: set[tuple[str, str]] = set()

  def update(self, step: int, summary: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Takes the summary at `step`; returns the new warnings."""
    warnings = []
    for path, stats in summary.items():
      mechanism = self.mechanisms[path]
      for share in mechanism.watched:
        key = (path, share)
        if share not in stats or float(stats[share]) <= WARN_ABOVE:
          self.since.pop(key, None)
          continue
        since = self.since.setdefault(key, step)
        if step - since >= mechanism.period and key not in self.warned:
          self.warned.add(key)
          what, meaning = WATCHED[share]
          warnings.append(
              f"{path}: {float(stats[share]):.0%} {what} since step {since} (more than "
              f"{WARN_ABOVE:.0%} for a whole period of {mechanism.period} steps): "
              f"{meaning}")
    return warnings
