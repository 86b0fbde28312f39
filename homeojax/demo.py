"""A one-minute demo of the layers: kWTA vs RFB-kWTA on input with dominant features.

Run: `python -m homeojax.demo`. Prints the duty-cycle entropy ratio (1 = every feature
wins equally often) and the dead-feature share as the statistics evolve.
"""

import jax
import jax.numpy as jnp

import homeojax as hj


def main(steps: int = 400, n: int = 64, batch: int = 128) -> None:
  bias = jnp.zeros(n).at[: n // 8].set(2.0)  # An eighth of the features always dominate.
  for chain in ["kwta(sparsity=0.75, period=50)",
                "rfb_kwta(sparsity=0.75, beta=5.0, period=50)"]:
    site = hj.Site(chain)
    variables = site.init(jax.random.PRNGKey(0), jnp.zeros((batch, n)))
    mechanisms = hj.find_mechanisms(site, jnp.zeros((batch, n)))

    @jax.jit
    def step(variables, key):
      x = jax.random.normal(key, (batch, n)) + bias
      _, updates = site.apply(variables, x, train=True, mutable=[hj.HOMEOSTASIS])
      return updates

    print(chain)
    for i, key in enumerate(jax.random.split(jax.random.PRNGKey(1), steps), 1):
      variables = step(variables, key)
      if i % 100 == 0:
        (stats,) = hj.summarize(variables[hj.HOMEOSTASIS], mechanisms).values()
        print(f"  step {i:4d}  entropy ratio {float(stats['entropy_ratio']):.3f}"
              f"  dead share {float(stats['dead_share']):.3f}")


if __name__ == "__main__":
  main()
