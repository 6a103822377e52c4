#!/usr/bin/env bash
# Shared-memory allreduce latency between worker processes: RANKS processes (default 2), each
# pinned to its own core when there are enough, meet in one group; rank 0 prints p50/p99 per
# payload size (4 KiB … 4 MiB) beside a one-core memcpy of the same bytes.
#
#   scripts/bench/collectives.sh            (environment: RANKS, SIZES in KiB, ITERATIONS)
set -euo pipefail
cd "$(dirname "$0")/../.."
RANKS="${RANKS:-2}"
swift build -c release --product worker >&2
WORKER="$(swift build -c release --show-bin-path)/worker"
GROUP="tessel-bench-$$"
CORES="$(nproc)"
pids=()
for ((rank = RANKS - 1; rank >= 1; rank--)); do
    "$WORKER" bench-allreduce --rank "$rank" --world "$RANKS" --group "$GROUP" --cpu $((rank % CORES)) \
        --sizes "${SIZES:-4,16,64,256,1024,4096}" --iterations "${ITERATIONS:-2000}" &
    pids+=($!)
done
"$WORKER" bench-allreduce --rank 0 --world "$RANKS" --group "$GROUP" --cpu 0 \
    --sizes "${SIZES:-4,16,64,256,1024,4096}" --iterations "${ITERATIONS:-2000}"
wait "${pids[@]}"
