"""Trains a Transformer with homeostatic sites on Multi30K.

  python train.py --config=configs/quick.py --workdir=runs/quick \
      --config.data.local_dir=../shared/data/multi30k

Re-running the same command resumes from the latest checkpoint in --workdir. Any config
field can be overridden: --config.regularizer.sparsity=0.5, --config.num_train_steps=100.
"""

import json

from absl import flags
from ml_collections import config_flags

from homeojax import cli, train_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file "
                                          "(path[:variant]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, vocabulary.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  cli.start(argv)
  record = train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value, progress=_PROGRESS.value)
  print(json.dumps({k: v for k, v in record.items() if not k.startswith("homeostasis/")}))


if __name__ == "__main__":
  cli.define_multihost_flags()
  cli.run(main)
