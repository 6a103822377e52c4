#!/usr/bin/env bash
# Structured-output mask cost: microseconds per constrained token (p50/p99) on the default model's
# vocabulary, walking a valid document of each nested schema token by token, as the scheduler pays
# before every constrained step: on a fresh server (every table filled on the way), for a schema new to a
# server that has served others (masks every grammar shares are known), and for the same schema again
# (the router caches compiled grammars and their state masks by their source).
#
#   scripts/bench/structured-output.sh [SCHEMA_NAME ...]
#
# Schemas and documents: Tests/EndToEnd/fixtures/schemas and schema-examples (default: the nested
# ones: comment-thread (recursive $ref), file-tree (recursive anyOf), order ($defs), meeting-notes,
# agent-plan (oneOf)). Environment: MODEL (default: the SmolLM2 GGUF scripts/fetch-model fetches),
# ROUTER (a router binary, with `worker` beside it for LOAD; default: build both in release mode),
# REPETITIONS (default 5), LOAD=1 (also serve the model and run scripts/bench/structured_load.py:
# STREAMS concurrent requests with and without a schema, aggregate tok/s side by side, and the
# router's mask time from /metrics), STREAMS (16), TOKENS (128), RUNS (3), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
FIXTURES=Tests/EndToEnd/fixtures
MODEL="${MODEL:-${TESSEL_MODEL_CACHE:-$HOME/.cache/tessel/models}/SmolLM2-135M-Instruct.Q4_1.gguf}"
[[ -f "$MODEL" ]] || { echo "no model at $MODEL: run scripts/fetch-model, or set MODEL" >&2; exit 1; }
if [[ -z "${ROUTER:-}" ]]; then
    [[ "${LOAD:-0}" == 1 ]] && swift build -c release --product worker >&2
    swift build -c release --product router >&2
    ROUTER="$(swift build -c release --show-bin-path)/router"
fi
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(comment-thread file-tree order meeting-notes agent-plan)
echo "vocabulary: $(basename "$MODEL"); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for name in "${names[@]}"; do
    echo "== $name"
    "$ROUTER" bench-grammar --model "$MODEL" --schema "$FIXTURES/schemas/$name.json" \
        --document "$FIXTURES/schema-examples/$name.json" --repetitions "${REPETITIONS:-5}"
done

if [[ "${LOAD:-0}" == 1 ]]; then
    PORT=$((20000 + RANDOM % 20000))
    LOG="$(mktemp)"
    "$ROUTER" --model "$MODEL" --port "$PORT" --disable-log-requests >"$LOG" 2>&1 &
    SERVER=$!
    trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -f "$LOG"' EXIT
    for _ in $(seq 1 120); do
        curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
        kill -0 $SERVER 2>/dev/null || { cat "$LOG" >&2; exit 1; }
        sleep 1
    done
    echo "== served: $(basename "$MODEL"), default engine options"
    "${PYTHON:-python3}" scripts/bench/structured_load.py "http://127.0.0.1:$PORT" "${STREAMS:-16}" "${TOKENS:-128}" "${RUNS:-3}"
fi
