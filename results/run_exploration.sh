#!/bin/bash
# Issue 26's stage 1 exploration (docs/results.md, "Version 2"), arms in their
# pre-registered order. Finished arms are skipped, so re-running continues a stopped run.
#
#   HOMEOJAX_MULTI30K=../shared/data/multi30k bash results/run_exploration.sh
#
# RUNS (default runs/) holds the training work dirs; RESULTS (default results/) receives
# each finished arm's logs and validation scores (run.json names the source commit).
# LANES=2 trains two arms at a time, one per core (results/common.sh).
. "$(dirname "$0")/common.sh"
ARMS=dropout,rfb,rfb_magnitude,rfb_ffn_hidden,rfb_layer_output,rfb_s0.1,rfb_s0.7
ARMS+=,rfb_attn_weights,rfb_beta0,rfb_beta4,rfb_raw,si_s0.3_beta1,si_s0.3_beta4,si_s0.1_beta1
ARMS+=,rfb_attn_weights_beta0  # Post hoc (docs/results.md): never selected.
COMMON=(--config=configs/exploration.py --seeds=0 --runs_dir="$RUNS/exploration"
        --results_dir="$RESULTS/exploration" --split=validation --beam=5 --average_last=5
        "--set=data.local_dir=$DATA" "--set=data.tfds_dir=$RUNS/tfds")
prepare_data de
lanes "${COMMON[@]}" --variants="$ARMS"

# The selection rule (configs/exploration.py `select`) on every finished run.
selection() {
  python - "$RESULTS/exploration" <<'PY'
import json, pathlib, sys
from homeojax.configs import exploration
evals = {p.parent.name.removesuffix("-seed0"): json.loads(p.read_text())
         for p in pathlib.Path(sys.argv[1]).glob("*-seed0/validation.avg5.beam5.json")}
scores = {name: e["bleu_tok"] for name, e in evals.items()}
sparsity = {name: s for name, e in evals.items()
            if (s := exploration.realised_sparsity(e)) is not None}
print(json.dumps(exploration.select(scores, sparsity)))
PY
}
# Stage 1b: dropout at 0.1 and 0.2 for the dropout arm and the best RFB-kWTA arm.
BEST=$(selection | python -c "import json, sys; print(json.load(sys.stdin)['rfb_kwta_dropout'])")
lanes "${COMMON[@]}" --variants="dropout,$BEST" --sweep=mechanisms.dropout.rate=0.1,0.2
selection | tee "$RESULTS/exploration/selection.json"
