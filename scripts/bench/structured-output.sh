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
# ROUTER (a router binary; default: build it in release mode), REPETITIONS (default 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
FIXTURES=Tests/EndToEnd/fixtures
MODEL="${MODEL:-${TESSEL_MODEL_CACHE:-$HOME/.cache/tessel/models}/SmolLM2-135M-Instruct.Q4_1.gguf}"
[[ -f "$MODEL" ]] || { echo "no model at $MODEL: run scripts/fetch-model, or set MODEL" >&2; exit 1; }
if [[ -z "${ROUTER:-}" ]]; then
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
