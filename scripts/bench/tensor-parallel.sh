#!/usr/bin/env bash
# Tensor parallelism's payoff on this host, one run, layouts alternated RUNS times (medians):
#   A  --workers 1 --worker-threads 1   one worker on one core
#   B  --workers 1                      one worker on every core
#   C  --workers N                      N workers splitting the model, 1/N of the cores each
#   D  N workers on N pretend hosts      network namespaces joined by veth (scripts/netns_hosts.py),
#                                       the ranks meeting over TCP (--peers), the router attached
#                                       from a host of its own; one core each (NETNS=0 leaves it out;
#                                       it needs root)
# Prints batch-1 decode and STREAMS-stream aggregate tok/s for each, and C/A, C/B, D/A, D/C;
# and, against the read bandwidth of 1 and N cores (scripts/bench/readbw.c), the weight bytes
# each layout reads per second, and the most C/A could be (N times A, or N cores' bandwidth).
#
#   scripts/bench/tensor-parallel.sh [MODEL]     (environment: N (2), RUNS (3), TOKENS (128),
#                                                 STREAMS (16), NETNS (1), TESSEL_ARGS (router and
#                                                 workers), ROUTER_ARGS (the router only, e.g.
#                                                 --num-scheduler-steps 1), PYTHON)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL="${1:-$HOME/.cache/tessel/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
N="${N:-2}"; RUNS="${RUNS:-3}"; TOKENS="${TOKENS:-128}"; STREAMS="${STREAMS:-16}"; PYTHON="${PYTHON:-python3}"
NETNS="${NETNS:-1}"
[[ -e "$MODEL" ]] || { echo "tensor-parallel.sh: no model at $MODEL (scripts/fetch-model fetches the default)" >&2; exit 1; }
swift build -c release --product worker >&2
swift build -c release --product router >&2
ROUTER="$(swift build -c release --show-bin-path)/router"
WORKER="$(swift build -c release --show-bin-path)/worker"
WORK="$(mktemp -d)"
HOSTS="tslbench$$"
trap 'rm -rf "$WORK"; [[ "$NETNS" == 1 ]] && python3 scripts/netns_hosts.py down "$HOSTS"' EXIT

measure() {  # label, router flags… → appends a JSON line to $WORK/label
    local label="$1"; shift
    local port=$((20000 + RANDOM % 20000))
    "$ROUTER" --model "$MODEL" --port "$port" ${TESSEL_ARGS:-} ${ROUTER_ARGS:-} "$@" >"$WORK/$label.log" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
    "$PYTHON" scripts/bench/tensor_parallel.py "http://127.0.0.1:$port" "$TOKENS" "$STREAMS" >>"$WORK/$label"
    kill -TERM "$pid"; wait "$pid" || true
}

measure_hosts() {  # N workers on hosts 1 … N, the router on host 0, all over TCP
    local addresses ranks=() peers="" endpoints="" pids=() rank
    mapfile -t addresses < <(python3 scripts/netns_hosts.py up "$HOSTS" $((N + 1)))
    for ((rank = 0; rank < N; rank++)); do
        peers+="${peers:+,}tcp://${addresses[rank + 1]}:7100"
        endpoints+="${endpoints:+,}tcp://${addresses[rank + 1]}:7000"
    done
    for ((rank = 0; rank < N; rank++)); do
        python3 scripts/netns_hosts.py exec "$HOSTS" $((rank + 1)) -- "$WORKER" --rank "$rank" --shard "$rank/$N" \
            --model "$MODEL" --listen "tcp://${addresses[rank + 1]}:7000" --peers "$peers" --threads 1 \
            --cpus $((rank % $(nproc))) ${TESSEL_ARGS:-} >"$WORK/D-worker$rank.log" 2>&1 &
        pids+=($!)
    done
    python3 scripts/netns_hosts.py exec "$HOSTS" 0 -- "$ROUTER" --model "$MODEL" --host "${addresses[0]}" --port 8000 \
        --worker-endpoints "$endpoints" ${ROUTER_ARGS:-} >"$WORK/D.log" 2>&1 &
    local router=$!
    for _ in $(seq 600); do curl -sf "http://${addresses[0]}:8000/health" >/dev/null && break; sleep 0.2; done
    "$PYTHON" scripts/bench/tensor_parallel.py "http://${addresses[0]}:8000" "$TOKENS" "$STREAMS" >>"$WORK/D"
    kill -TERM "$router"; wait "$router" || true
    kill -TERM "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" || true
    python3 scripts/netns_hosts.py down "$HOSTS"
}

cc -O3 -march=native -pthread -o "$WORK/readbw" scripts/bench/readbw.c
"$PYTHON" scripts/bench/serving.py weights "$MODEL" >"$WORK/weights.json"
MODEL_BYTES="$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["bytes"])' "$WORK/weights.json")"
for threads in 1 "$N"; do
    "$WORK/readbw" model "$MODEL_BYTES" "$threads" 100 >>"$WORK/bandwidth.jsonl"
    "$WORK/readbw" dram $((1 << 30)) "$threads" 10 >>"$WORK/bandwidth.jsonl"
done

for ((run = 1; run <= RUNS; run++)); do
    echo "run $run/$RUNS" >&2
    measure A --workers 1 --worker-threads 1
    measure B --workers 1
    measure C --workers "$N"
    [[ "$NETNS" == 1 ]] && measure_hosts
done
"$PYTHON" - "$WORK" "$N" <<'PY'
import json, os, statistics, sys
work, n = sys.argv[1], sys.argv[2]
weight_bytes = json.load(open(f"{work}/weights.json"))["bytes"]
bandwidth = [json.loads(l) for l in open(f"{work}/bandwidth.jsonl")]
def read_gbps(threads):  # the faster working set's median pass (as serving.py reports it)
    best = max((b for b in bandwidth if b["threads"] == threads), key=lambda b: b["best_gbps"])
    return best["median_gbps"]
layouts = [k for k in "ABCD" if os.path.exists(f"{work}/{k}")]
runs = {k: [json.loads(l) for l in open(f"{work}/{k}")] for k in layouts}
med = {k: {m: statistics.median(r[m] for r in v) for m in ("decode", "aggregate")} for k, v in runs.items()}
names = {"A": "--workers 1, 1 core", "B": "--workers 1, all cores", "C": f"--workers {n}",
         "D": f"{n} hosts over TCP"}
print(f"{'layout':26} {'decode tok/s':>13} {'aggregate tok/s':>16}   (medians of {len(runs['A'])})")
for k in layouts:
    print(f"{names[k]:26} {med[k]['decode']:13.1f} {med[k]['aggregate']:16.1f}")
for top, bottom in [("C", "A"), ("C", "B"), ("D", "A"), ("D", "C")]:
    if top in med and bottom in med:
        print(f"{names[top]} / {names[bottom]:22} {med[top]['decode'] / med[bottom]['decode']:8.2f}x"
              f" {med[top]['aggregate'] / med[bottom]['aggregate']:15.2f}x")
print()
cores = {"A": 1, "B": int(n), "C": int(n), "D": int(n)}
print(f"read bandwidth: 1 core {read_gbps(1):.1f} GB/s, {n} cores {read_gbps(int(n)):.1f} GB/s; "
      f"{weight_bytes / 1e6:.1f} MB of weights read per decoded token")
for k in layouts:
    rate = med[k]["decode"] * weight_bytes / 1e9
    print(f"{names[k]:26} reads {rate:5.1f} GB/s = {rate / read_gbps(cores[k]):4.2f} of {cores[k]} core(s)' bandwidth")
if "A" in med:  # N cores compute at most N times what A does, and read at most N cores' bandwidth
    ceiling = min(int(n) * med["A"]["decode"], read_gbps(int(n)) * 1e9 / weight_bytes)
    print(f"decode ceiling on {n} cores: {ceiling:.0f} tok/s = {ceiling / med['A']['decode']:.2f}x A")
PY
