"""Evaluates a training run's checkpoint: decode, BLEU (both conventions), homeostasis
(`homeojax-eval` once installed).

  python eval.py --workdir=runs/quick --split=test_2016_flickr
  python eval.py --workdir=runs/quick --checkpoint=best --source_file=src.en \
      --reference_file=ref.de --beam=1
  echo "A dog runs." | python eval.py --workdir=runs/quick --source_file=-

Writes the hypotheses and a JSON report to --output_dir (default WORKDIR/eval/step_N/).
"""

from homeojax import cli

if __name__ == "__main__":
  cli.eval_main()
