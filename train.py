"""Trains a Transformer with homeostatic sites on Multi30K (`homeojax-train` once installed).

  python train.py --config=configs/quick.py --workdir=runs/quick \
      --config.data.local_dir=../shared/data/multi30k

Re-running the same command resumes from the latest checkpoint in --workdir; Ctrl-C or
SIGTERM saves a checkpoint and stops. Any config field can be overridden:
--config.mechanisms.rfb_kwta.sparsity=0.5, --config.num_train_steps=100.
"""

from homeojax import cli

if __name__ == "__main__":
  cli.train_main()
