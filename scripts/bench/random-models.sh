#!/usr/bin/env bash
# Makes the Qwen2.5-0.5B-shaped random Llama GGUFs the benchmarks use for K-quants: F16 from
# make-random-llama.py, then Q8_0 and Q4_K_M with llama.cpp's llama-quantize. Prints their paths.
#   scripts/bench/random-models.sh        # files in ~/.cache/tessel/models/random/
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${TESSEL_MODEL_CACHE:-$HOME/.cache/tessel/models}/random"
venv="${TESSEL_BENCH_VENV:-$HOME/.cache/tessel/venv-bench}"
mkdir -p "$out"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import gguf, numpy" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check numpy gguf >&2
fi
smol="$(scripts/fetch-model)"
llama_bin="${LLAMA_BIN:-$(scripts/bench/build-llama-cpp)}"
f16="$out/random-qwen2.5-0.5b.F16.gguf"
[ -s "$f16" ] || "$venv/bin/python" scripts/bench/make-random-llama.py "$f16" --tokenizer-from "$smol" >&2
for type in Q8_0 Q4_K_M; do
    target="$out/random-qwen2.5-0.5b.$type.gguf"
    [ -s "$target" ] || "$llama_bin/llama-quantize" "$f16" "$target" "$type" >&2
    echo "$target"
done
