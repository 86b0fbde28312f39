"""Is Smart Inhibition's train/eval mismatch what costs it? (docs/results.md, conclusion)

  python results/smart_inhibition_eval_gain.py RUN_WORKDIR OUT.json

Bernoulli Smart Inhibition keeps feature i with probability `keep_i` and scales kept values
by `1 / (1 - s)`, so in training feature i passes on `gain_i = keep_i / (1 - s)` of its value
on average; at eval (as specified) it passes on all of it. This script evaluates a trained
run on the validation split twice: as specified, and with every block-output feature scaled
by its expected training gain from the frozen duty cycles. Attention weights (features
masked per vector) are left as specified. Nothing is retrained.
"""

import json
import sys
import tempfile
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from homeojax import diagnostics, eval_lib, layers, ops, sharding, train_lib
from homeojax.data.batching import Batcher


def expected_gain(state: dict, sparsity: float) -> jax.Array:
  """`keep_i / (1 - s)` of every feature, from a mechanism's frozen state."""
  w = ops.boost_factors(state["duty"], state["target"], state["beta"], state["b_max"])
  keep = jnp.minimum(1.0, (1.0 - sparsity) * w.shape[-1] * w / jnp.sum(w))
  return keep / (1.0 - sparsity)


class ExpectedGainAtEval(layers.SmartInhibition):
  """Smart Inhibition whose eval output is `x * gain` at block outputs."""

  @nn.compact
  def __call__(self, x, valid=None, *, train=False):
    if train or (valid is not None and jnp.shape(valid)[-1] != 1):
      return super().__call__(x, valid, train=train)
    self.duty_cycle(x)
    state = {name: self.get_variable(layers.HOMEOSTASIS, name)
             for name in ("duty", "target", "beta")}
    gain = expected_gain({**state, "b_max": self.b_max}, self.sparsity)
    return x * gain[..., : x.shape[-1]].astype(x.dtype)


def validation(workdir: Path) -> dict:
  """Validation loss (teacher forcing) and beam-5 BLEU of the run's latest checkpoint."""
  run = eval_lib.load_run(workdir)
  c = run.config
  sources, targets = train_lib.prepare_data(c, workdir, ("validation",)).ids["validation"]
  batcher = Batcher(sources, targets, c.data.tokens_per_batch, c.model.max_len,
                    multiple_of=run.mesh.shape["data"])
  step = jax.jit(train_lib.make_eval_step(run.model, c.optim.label_smoothing))
  sums = {"loss": 0.0, "tokens": 0.0}
  for batch in batcher.eval_batches():
    out = step(run.variables["params"], run.variables[layers.HOMEOSTASIS],
               sharding.shard_batch(batch, run.mesh))
    sums = {k: sums[k] + float(out[k]) for k in sums}
  with tempfile.TemporaryDirectory() as tmp:
    report = eval_lib.evaluate(workdir, split="validation", beam=5, output_dir=tmp)
  return {"val_loss": sums["loss"] / sums["tokens"], "bleu_tok": report["bleu_tok"],
          "sacrebleu": report["sacrebleu"]["score"]}


def main(workdir: Path, out: Path) -> None:
  run = eval_lib.load_run(workdir)
  sparsity = run.config.regularizer.dropout  # Smart Inhibition's s in the variants.
  gains = np.concatenate([
      np.asarray(expected_gain(state, sparsity)).ravel()
      for path, state in diagnostics.mechanism_states(run.variables[layers.HOMEOSTASIS])
      if "block_output" in path])
  capped = gains >= 1 / (1 - sparsity) - 1e-6  # keep_i = 1.
  result = {"run": str(workdir), "step": run.step, "sparsity": sparsity,
            "block_output_gain": {"mean": float(gains.mean()), "median": float(np.median(gains)),
                                  "share_capped": float(capped.mean()),
                                  "share_below_0.8": float(np.mean(gains < 0.8))}}
  result["as_specified"] = validation(workdir)
  layers.MECHANISMS["smart_inhibition"] = ExpectedGainAtEval
  jax.clear_caches()  # The decoder is jitted with the model as a static argument.
  result["expected_gain_at_eval"] = validation(workdir)
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main(Path(sys.argv[1]), Path(sys.argv[2]))
