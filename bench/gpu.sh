#!/usr/bin/env bash
# bench/gpu.sh OUT [DEVICE]: the GPU tables in one command -- every framework (one that cannot run
# on this GPU gets a row saying why) at the paper and community presets, training batches 16 and 32,
# synthesis batches 1 and 8, both tiers of operators (tuned, stock), 10 counted steps, REPEAT rounds --
# each preset in OUT/<preset> -- then streaming synthesis (--task stream, demo preset) in OUT/stream.
# DEVICE: cuda (default) or cuda:N. FRAMEWORKS, PRESETS, BATCHES and REPEAT (default 3) replace the
# defaults, e.g. a CPU smoke run: FRAMEWORKS=torch PRESETS=tiny BATCHES=2 REPEAT=1 bench/gpu.sh /tmp/smoke cpu
set -euo pipefail
out=${1:?usage: bench/gpu.sh OUT [DEVICE]}
device=${2:-cuda}
for preset in ${PRESETS:-paper community}; do
    # shellcheck disable=SC2086  # FRAMEWORKS and BATCHES are lists
    "${PYTHON:-python3}" "$(dirname "$0")/run.py" --framework ${FRAMEWORKS:-all} --device "$device" --preset "$preset" \
        --batch-size ${BATCHES:-16 32} --steps 10 --repeat "${REPEAT:-3}" --out "$out/$preset"
done
# shellcheck disable=SC2086
"${PYTHON:-python3}" "$(dirname "$0")/run.py" --task stream --framework ${FRAMEWORKS:-all} --device "$device" \
    --repeat "${REPEAT:-3}" --out "$out/stream"
