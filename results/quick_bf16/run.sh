#!/bin/bash
set -euo pipefail
cd /work/main
. /work/venv/bin/activate
for seed in 0 1; do
  for dtype in float32 bfloat16; do
    w=/work/runs/bf16/$dtype-seed$seed
    python train.py --config=configs/quick.py --workdir=$w --config.data.local_dir=/work/shared/data/multi30k --config.model.dtype=$dtype --config.seed=$seed --noprogress > $w.train.log 2>&1
    python eval.py --workdir=$w --split=test_2016_flickr --output_dir=$w/final > $w.eval.json 2> $w.eval.log
  done
done
echo done
