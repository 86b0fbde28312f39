"""Is Smart Inhibition's train/eval mismatch what costs it? (docs/results.md, conclusion)

Version 1 only (`scaling="uniform"`, the v1 grid's runs); version 2 has no mismatch.

  python results/smart_inhibition_eval_gain.py RUN_WORKDIR OUT.json

Bernoulli Smart Inhibition keeps feature i with probability `keep_i` and scales kept values
by `1 / (1 - s)`, so in training feature i passes on `gain_i = keep_i / (1 - s)` of its value
on average; at eval (as specified) it passes on all of it. This script evaluates a trained
run on the validation split twice: as specified, and with `eval_scale=expected_gain`
(`eval.py --eval_scale`), which scales every feature at eval by its expected training gain
from the frozen duty cycles, at every Smart Inhibition site. Nothing is retrained. The gain
statistics are those of the block outputs (one gain per feature; at attention weights it
varies with the number of valid keys).
"""

import json
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from homeojax import diagnostics, eval_lib, layers, ops, sharding, train_lib
from homeojax.mechanisms import SmartInhibition
from homeojax.data.batching import Batcher


def expected_gain(state: dict, sparsity: float) -> np.ndarray:
  """`keep_i / (1 - s)` of every feature, from a version-1 mechanism's frozen state."""
  w = ops.boost_factors(state["duty"], state["target"], state["beta"], state["b_max"])
  return np.asarray(ops.keep_probabilities(w, sparsity, scaling="uniform") / (1.0 - sparsity))


def validation(workdir: Path, eval_scale: str) -> dict:
  """Validation loss (teacher forcing) and beam-5 BLEU of the run's latest checkpoint."""
  run = eval_lib.Translator.from_workdir(workdir, eval_scale=eval_scale)
  c = run.config
  sources, targets = train_lib.prepare_data(c, workdir, ("validation",)).ids["validation"]
  batcher = Batcher(sources, targets, c.data.tokens_per_batch, c.model.max_len,
                    multiple_of=run.mesh.shape["data"])
  step = jax.jit(run.experiment.eval_step())
  sums = {"loss": 0.0, "tokens": 0.0}
  for batch in batcher.eval_batches():
    out = step(run.variables["params"], run.variables[layers.HOMEOSTASIS],
               sharding.shard_batch(batch, run.mesh))
    sums = {k: sums[k] + float(out[k]) for k in sums}
  with tempfile.TemporaryDirectory() as tmp:
    report = eval_lib.evaluate(workdir, split="validation", beam=5, output_dir=tmp,
                               eval_scale=eval_scale)
  return {"val_loss": sums["loss"] / sums["tokens"], "bleu_tok": report["bleu_tok"],
          "sacrebleu": report["sacrebleu"]["score"]}


def main(workdir: Path, out: Path) -> None:
  run = eval_lib.Translator.from_workdir(workdir)
  smart = [(path, m, state) for path, m, state in diagnostics.mechanism_states(
      run.variables[layers.HOMEOSTASIS], run.experiment.mechanisms)
             if isinstance(m, SmartInhibition) and path[-2] == "block_output"]
  (sparsity,) = {m.sparsity for _, m, _ in smart}
  gains = np.concatenate([expected_gain(state, sparsity).ravel() for _, _, state in smart])
  capped = gains >= 1 / (1 - sparsity) - 1e-6  # keep_i = 1.
  result = {"run": str(workdir), "step": run.step, "sparsity": sparsity,
            "block_output_gain": {"mean": float(gains.mean()), "median": float(np.median(gains)),
                                  "share_capped": float(capped.mean()),
                                  "share_below_0.8": float(np.mean(gains < 0.8))}}
  result["as_specified"] = validation(workdir, "identity")
  result["expected_gain_at_eval"] = validation(workdir, "expected_gain")
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main(Path(sys.argv[1]), Path(sys.argv[2]))
