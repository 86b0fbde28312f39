#!/bin/bash
# Issue 26's stages 2 and 3 (docs/results.md, "Version 2"): the confirmation on
# test_2016_flickr, then dropout against the best RFB-kWTA + dropout on en->fr and en->cs.
# Needs stage 1's choice in configs/confirmation.py SELECTED (from
# results/exploration/selection.json). Finished runs are skipped, so re-running continues.
#
#   HOMEOJAX_MULTI30K=../shared/data/multi30k bash results/run_confirmation.sh
#
# RUNS (default runs/) holds the training work dirs, RESULTS (default results/) receives
# each finished run. Dropout's en->de seeds are the baseline runs results/literature-dropout-*,
# unless stage 1b retuned dropout's rate (SELECTED['dropout'] = dropout-rateR): then dropout
# trains three seeds at that rate here too.
# LANES=2 trains two runs at a time, one per core (results/common.sh).
. "$(dirname "$0")/common.sh"
COMMON=(--config=configs/confirmation.py --split=test_2016_flickr --beam=5
        --average_last=10 --train_sentences=1000
        "--set=data.local_dir=$DATA" "--set=data.tfds_dir=$RUNS/tfds")

# Seed 0 of a selected run (of dropout only if retuned) continues its exploration run, of
# which it is the start: same model, data order and schedule (checked on resume). Its
# validation evaluation stays behind.
selected() {
  python -c "from homeojax.configs import confirmation; print(confirmation.SELECTED['$1'])"
}
continue_exploration() {  # ROLE ARM_RUN
  local from="$RUNS/exploration/$2-seed0" to="$RUNS/confirmation/$1-seed0"
  if [[ -d "$from/checkpoints" && ! -e "$to" ]]; then
    mkdir -p "$(dirname "$to")"
    cp -r "$from" "$to"
    rm -rf "$to/final" "$to/eval.log"
  fi
}
continue_exploration rfb_kwta_dropout "$(selected rfb_kwta_dropout)"
continue_exploration smart_inhibition "$(selected smart_inhibition)"
# The headline pair first, all its seeds: dropout and RFB-kWTA + dropout, the main claim,
# then the other four variants.
DROPOUT_RUN=$(selected dropout)
case "$DROPOUT_RUN" in
  dropout|None) HEADLINE= ;;  # The recipe's rate: the baseline seeds are dropout.
  *) HEADLINE=dropout,; continue_exploration dropout "$DROPOUT_RUN" ;;
esac

prepare_data de fr cs
for variants in "${HEADLINE}rfb_kwta_dropout" \
                smart_inhibition,kwta,rfb_kwta_smart_inhibition,classic; do
  lanes "${COMMON[@]}" --seeds=0,1,2 --runs_dir="$RUNS/confirmation" \
    --results_dir="$RESULTS/confirmation" --variants="$variants"
done

# Stage 3 one seed at a time over both languages, so that wherever the budget ends, each
# language has the same seeds of both arms.
for seed in 0 1 2; do
  for lang in fr cs; do
    lanes "${COMMON[@]}" --seeds="$seed" --runs_dir="$RUNS/confirmation_$lang" \
      --results_dir="$RESULTS/confirmation_$lang" --variants=dropout,rfb_kwta_dropout \
      "--set=data.target_lang=$lang"
  done
done
