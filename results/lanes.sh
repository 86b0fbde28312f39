# Sourced by the run_*.sh scripts: `lanes GRID_ARGS...` runs $LANES homeojax.grid
# processes side by side, lane I of N taking every N-th run of the plan (`--lane=I/N`),
# each pinned to its share of the cores, and waits for all of them. LANES=1 (the default)
# runs one grid on every core. On this 2-core CPU, LANES=2 trains two runs at a time,
# 1.41x the throughput of one run on both cores (docs/performance.md, 2026-12-05).
LANES=${LANES:-1}
lanes() {
  local cores per lane pids=()
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
  for lane in "${pids[@]}"; do
    wait "$lane"
  done
}
