#!/usr/bin/env bash
# Perplexity of Tessel (default 8-bit activations, and exact f32) beside llama.cpp's
# llama-perplexity on the same GGUF and text: CHUNKS chunks of CTX tokens, fresh context per chunk,
# second half scored (see perplexity.py).
#
#   scripts/bench/perplexity.sh [MODEL_GGUF] [TEXT]
#
# Default text: Alice's Adventures in Wonderland (public domain; the tokenizer test fixture).
# Environment: ROUTER (release build by default), LLAMA_BIN (scripts/bench/build-llama-cpp's),
# CTX (512), CHUNKS (16), PYTHON (python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL="${1:-$HOME/.cache/tessel/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
TEXT="${2:-Tests/TokenizersTests/Fixtures/texts/alice29.txt}"
CTX="${CTX:-512}"
CHUNKS="${CHUNKS:-16}"
PYTHON="${PYTHON:-python3}"
if [[ -z "${ROUTER:-}" ]]; then
    swift build -c release --product worker >&2
    swift build -c release --product router >&2
    ROUTER="$(swift build -c release --show-bin-path)/router"
fi
LLAMA_BIN="${LLAMA_BIN:-$(scripts/bench/build-llama-cpp)}"
WORK="$(mktemp -d)"
PID=""
trap '[[ -n "$PID" ]] && kill -TERM "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

"$ROUTER" tokenize --model "$MODEL" --special <"$TEXT" >"$WORK/ids"
"$ROUTER" tokenize --model "$MODEL" <"$TEXT" >"$WORK/plain"
BOS_ARG=()
if [[ "$(wc -w <"$WORK/ids")" -gt "$(wc -w <"$WORK/plain")" ]] && [[ "$(cut -d' ' -f1 "$WORK/ids")" != "$(cut -d' ' -f1 "$WORK/plain")" ]]; then
    BOS_ARG=(--bos "$(cut -d' ' -f1 "$WORK/ids")")
fi

score() {  # LABEL ROUTER-FLAGS...
    local label=$1; shift
    local port
    port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$ROUTER" --model "$MODEL" --host 127.0.0.1 --port "$port" --no-prefix-caching --log-level warning "$@" \
        >"$WORK/router-$label.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 240); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        kill -0 "$PID" 2>/dev/null || { cat "$WORK/router-$label.log" >&2; exit 1; }
        sleep 0.5
    done
    echo "== Tessel ($label)" >&2
    "$PYTHON" scripts/bench/perplexity.py ours --base-url "http://127.0.0.1:$port" --ids "$WORK/ids" \
        --ctx "$CTX" --chunks "$CHUNKS" "${BOS_ARG[@]}" >"$WORK/$label.json"
    kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}
score q8
score f32 --activations f32 --kv-cache-dtype f32

echo "== llama.cpp llama-perplexity" >&2
"$LLAMA_BIN/llama-perplexity" -m "$MODEL" -f "$TEXT" -c "$CTX" --chunks "$CHUNKS" -b "$CTX" -t "$(nproc)" \
    >"$WORK/llama.log" 2>&1 || { tail -20 "$WORK/llama.log" >&2; exit 1; }
"$PYTHON" scripts/bench/perplexity.py llama "$WORK/llama.log" >"$WORK/llama.json"

"$PYTHON" - "$WORK" "$MODEL" "$TEXT" "$CTX" "$CHUNKS" <<'PY'
import json, os, sys
work, model, text, ctx, chunks = sys.argv[1:]
q8, f32, llama = (json.load(open(os.path.join(work, name + ".json"))) for name in ("q8", "f32", "llama"))
print()
print("Perplexity of %s on %s: %s chunks of %s tokens, second half scored" % (
    os.path.basename(model), os.path.basename(text), chunks, ctx))
print("  Tessel, 8-bit activations (default): %.4f" % q8["ppl"])
print("  Tessel, exact (--activations f32):   %.4f" % f32["ppl"])
print("  llama.cpp llama-perplexity:          %.4f" % llama["ppl"])
print("  default / llama.cpp = %.4f (%+.2f%%)" % (q8["ppl"] / llama["ppl"], 100 * (q8["ppl"] / llama["ppl"] - 1)))
PY
