#!/usr/bin/env bash
# Serving benchmark: Tessel (router + one worker, release build) and llama.cpp's llama-server on
# the same GGUF, under the same OpenAI-API load, one after the other, with this machine's read
# bandwidth; prints both columns and their ratios.
#
#   scripts/bench/serving.sh [MODEL_GGUF]
#
# Figures (definitions in serving.py): batch-1 decode, STREAMS concurrent streams (aggregate and
# TTFT p50), a PREFILL_TOKENS-token prefill, time to first token for LONG prompts, resident memory.
# llama-server comes from scripts/bench/build-llama-cpp (built on first use, about 10 minutes).
#
# Environment: ROUTER (a router with `worker` beside it; default: release build with SwiftPM),
# LLAMA_BIN (directory with llama-server; default: build-llama-cpp's), RUNS (5), TOKENS (128),
# STREAMS (16), PREFILL_TOKENS (512), LONG (1000,4000,8000), TESSEL_ARGS (extra router flags),
# PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL="${1:-$HOME/.cache/tessel/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
PYTHON="${PYTHON:-python3}"
RUNS="${RUNS:-5}"
TOKENS="${TOKENS:-128}"
STREAMS="${STREAMS:-16}"
PREFILL_TOKENS="${PREFILL_TOKENS:-512}"
LONG="${LONG:-1000,4000,8000}"
BENCH="scripts/bench/serving.py"
[[ -f "$MODEL" ]] || { echo "serving.sh: no model file at $MODEL (scripts/fetch-model fetches the default)" >&2; exit 1; }
if [[ -z "${ROUTER:-}" ]]; then
    swift build -c release --product worker >&2
    swift build -c release --product router >&2
    ROUTER="$(swift build -c release --show-bin-path)/router"
fi
LLAMA_BIN="${LLAMA_BIN:-$(scripts/bench/build-llama-cpp)}"
CORES="$(nproc)"
LONGEST="$(tr ',' '\n' <<<"$LONG" | sort -n | tail -1)"

source scripts/bench/servers.sh
rss_of() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"; }

echo "== read bandwidth" >&2
cc -O3 -march=native -pthread -o "$WORK/readbw" scripts/bench/readbw.c
MODEL_BYTES="$("$PYTHON" "$BENCH" weights "$MODEL" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["bytes"])')"
for threads in $(printf '%s\n' 1 "$CORES" | sort -nu); do
    "$WORK/readbw" model "$MODEL_BYTES" "$threads" 100 >>"$WORK/bandwidth.jsonl"
    "$WORK/readbw" dram $((1 << 30)) "$threads" 10 >>"$WORK/bandwidth.jsonl"
done
cat "$WORK/bandwidth.jsonl" >&2

PORT="$(free_port)"
echo "== tessel: $ROUTER on 127.0.0.1:$PORT" >&2
# shellcheck disable=SC2086
"$ROUTER" --model "$MODEL" --host 127.0.0.1 --port "$PORT" --no-prefix-caching --log-level warning ${TESSEL_ARGS:-} \
    >"$WORK/router.log" 2>&1 &
SERVER_PID=$!
wait_healthy "$PORT" "$WORK/router.log"
"$PYTHON" "$BENCH" run --base-url "http://127.0.0.1:$PORT" --out "$WORK/ours.json" --runs "$RUNS" --tokens "$TOKENS" \
    --streams "$STREAMS" --prefill-tokens "$PREFILL_TOKENS" --long "$LONG"
WORKER_PID="$(pgrep -P "$SERVER_PID" -f worker | head -1)"
OURS_RSS="$(rss_of "$WORKER_PID")"
stop_server

PORT="$(free_port)"
CONTEXT=$(( STREAMS * (LONGEST + TOKENS + 64) ))
echo "== llama.cpp: $LLAMA_BIN/llama-server on 127.0.0.1:$PORT ($CORES threads, $STREAMS slots, context $CONTEXT)" >&2
"$LLAMA_BIN/llama-server" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -t "$CORES" -tb "$CORES" \
    -c "$CONTEXT" -np "$STREAMS" -b 512 -ub 512 --no-webui >"$WORK/llama.log" 2>&1 &
SERVER_PID=$!
wait_healthy "$PORT" "$WORK/llama.log"
"$PYTHON" "$BENCH" run --base-url "http://127.0.0.1:$PORT" --out "$WORK/llama.json" --runs "$RUNS" --tokens "$TOKENS" \
    --streams "$STREAMS" --prefill-tokens "$PREFILL_TOKENS" --long "$LONG" --extra-body '{"cache_prompt": false}'
LLAMA_RSS="$(rss_of "$SERVER_PID")"
stop_server

printf '{"ours_rss": %s, "llama_rss": %s, "llama_kv": "context %s, f16"}\n' "$OURS_RSS" "$LLAMA_RSS" "$CONTEXT" >"$WORK/rss.json"
"$PYTHON" "$BENCH" report --model "$MODEL" --bandwidth "$WORK/bandwidth.jsonl" --ours "$WORK/ours.json" \
    --llama "$WORK/llama.json" --rss "$WORK/rss.json"
