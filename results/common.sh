# Sourced first by the run_*.sh scripts: strict mode, the repository root as working
# directory, their environment (HOMEOJAX_MULTI30K, the local Multi30K copy; RUNS, default
# runs/, the training work dirs; RESULTS, default results/, each finished run's outputs;
# LANES) and two functions.
#
# `lanes GRID_ARGS...` runs $LANES homeojax.grid processes side by side, lane I of N
# taking every N-th run of the plan (`--lane=I/N`), each pinned to its share of the cores,
# and waits for all of them. LANES=1 (the default) runs one grid on every core. On this
# 2-core CPU, LANES=2 trains two runs at a time, 1.41x the throughput of one run on both
# cores (docs/performance.md, 2026-12-05).
#
# `prepare_data TARGET_LANG...` prepares the en->TARGET_LANG data once, before the lanes
# would race to do it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA=${HOMEOJAX_MULTI30K:?set HOMEOJAX_MULTI30K to the local Multi30K copy}
RUNS=${RUNS:-runs}
RESULTS=${RESULTS:-results}
LANES=${LANES:-1}
lanes() {
  local cores per lane pid pids=()
  cores=$(nproc)
  if ! [[ "$LANES" =~ ^[0-9]+$ ]] || (( LANES < 1 || LANES > cores )); then
    echo "LANES=$LANES must be an integer in [1, $cores]" >&2
    return 2
  fi
  per=$(( cores / LANES ))
  for (( lane = 0; lane < LANES; lane++ )); do
    local pin=()
    (( LANES > 1 )) && pin=(taskset -c "$(( lane * per ))-$(( lane * per + per - 1 ))")
    "${pin[@]}" python -m homeojax.grid "$@" --lane="$lane/$LANES" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid"
  done
}
prepare_data() {
  local lang
  for lang in "$@"; do
    python -c "from homeojax.data import multi30k
multi30k.load('en', '$lang', (), '$RUNS/tfds', '$DATA')"
  done
}
