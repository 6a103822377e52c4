#!/usr/bin/env bash
# Tensor parallelism's payoff on this host, one run, layouts alternated RUNS times (medians):
#   A  --workers 1 --worker-threads 1   one worker on one core
#   B  --workers 1                      one worker on every core
#   C  --workers N                      N workers splitting the model, 1/N of the cores each
# Prints batch-1 decode and STREAMS-stream aggregate tok/s for each, and C/A, C/B.
#
#   scripts/bench/tensor-parallel.sh [MODEL]     (environment: N (2), RUNS (3), TOKENS (128),
#                                                 STREAMS (16), TESSEL_ARGS, PYTHON)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL="${1:-$HOME/.cache/tessel/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
N="${N:-2}"; RUNS="${RUNS:-3}"; TOKENS="${TOKENS:-128}"; STREAMS="${STREAMS:-16}"; PYTHON="${PYTHON:-python3}"
[[ -e "$MODEL" ]] || { echo "tensor-parallel.sh: no model at $MODEL (scripts/fetch-model fetches the default)" >&2; exit 1; }
swift build -c release --product worker >&2
swift build -c release --product router >&2
ROUTER="$(swift build -c release --show-bin-path)/router"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

measure() {  # label, router flags… → appends a JSON line to $WORK/label
    local label="$1"; shift
    local port=$((20000 + RANDOM % 20000))
    "$ROUTER" --model "$MODEL" --port "$port" ${TESSEL_ARGS:-} "$@" >"$WORK/$label.log" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
    "$PYTHON" scripts/bench/tensor_parallel.py "http://127.0.0.1:$port" "$TOKENS" "$STREAMS" >>"$WORK/$label"
    kill -TERM "$pid"; wait "$pid" || true
}

for ((run = 1; run <= RUNS; run++)); do
    echo "run $run/$RUNS" >&2
    measure A --workers 1 --worker-threads 1
    measure B --workers 1
    measure C --workers "$N"
done
"$PYTHON" - "$WORK" "$N" <<'PY'
import json, statistics, sys
work, n = sys.argv[1], sys.argv[2]
runs = {k: [json.loads(l) for l in open(f"{work}/{k}")] for k in "ABC"}
med = {k: {m: statistics.median(r[m] for r in v) for m in ("decode", "aggregate")} for k, v in runs.items()}
names = {"A": "--workers 1, 1 core", "B": "--workers 1, all cores", "C": f"--workers {n}"}
print(f"{'layout':26} {'decode tok/s':>13} {'aggregate tok/s':>16}   (medians of {len(runs['A'])})")
for k in "ABC":
    print(f"{names[k]:26} {med[k]['decode']:13.1f} {med[k]['aggregate']:16.1f}")
for k in "AB":
    print(f"{names['C']} / {names[k]:22} {med['C']['decode'] / med[k]['decode']:8.2f}x {med['C']['aggregate'] / med[k]['aggregate']:15.2f}x")
PY
