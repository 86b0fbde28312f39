"""Evaluates a training run's checkpoint: decode, BLEU (both conventions), homeostasis.

  python eval.py --workdir=runs/quick --split=test_2016_flickr
  python eval.py --workdir=runs/quick --checkpoint=best --source_file=src.en \
      --reference_file=ref.de --beam=1

Writes the hypotheses and a JSON report to --output_dir (default WORKDIR/eval/step_N/).
"""

import json

from absl import flags

from homeojax import cli, eval_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "latest, best, or a step number.")
_SPLIT = flags.DEFINE_string("split", None, "Multi30K split to decode (e.g. test_2016_flickr).")
_SOURCE = flags.DEFINE_string("source_file", None, "Source sentences, one per line (instead "
                              "of --split).")
_REFERENCE = flags.DEFINE_string("reference_file", None, "Detokenized references for sacreBLEU.")
_REFERENCE_TOK = flags.DEFINE_string("reference_tok_file", None, "Lowercased, tokenized "
                                     "references for tokenized BLEU.")
_BEAM = flags.DEFINE_integer("beam", None, "Beam size (1 is greedy); default from the config.")
_ALPHA = flags.DEFINE_float("alpha", None, "Length-penalty exponent; default from the config.")
_LOCAL_DIR = flags.DEFINE_string("data_dir", None, "Local Multi30K copy (overrides the run's).")
_TOKENS = flags.DEFINE_integer("tokens_per_batch", None, "Source tokens per decoding batch; "
                               "default from the config (raise it on a GPU).")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Where to write hypotheses and the report.")
_EVAL_SCALE = flags.DEFINE_string("eval_scale", None, "Smart Inhibition at eval: identity or "
                                  "expected_gain (overrides the run's; names the outputs).")
flags.mark_flag_as_required("workdir")


def main(argv):
  cli.start(argv)
  report = eval_lib.evaluate(
      _WORKDIR.value, checkpoint=_CHECKPOINT.value, split=_SPLIT.value,
      source_file=_SOURCE.value, reference_file=_REFERENCE.value,
      reference_tok_file=_REFERENCE_TOK.value, beam=_BEAM.value, alpha=_ALPHA.value,
      local_dir=_LOCAL_DIR.value, output_dir=_OUTPUT.value, tokens_per_batch=_TOKENS.value,
      eval_scale=_EVAL_SCALE.value)
  print(json.dumps({k: v for k, v in report.items() if k != "homeostasis"}, indent=1))


if __name__ == "__main__":
  cli.define_multihost_flags()
  cli.run(main)
