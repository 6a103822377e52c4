#!/usr/bin/env bash
# Tokenizer throughput: Tessel (release build, one thread) beside Hugging Face `tokenizers` (one thread),
# same run, same text, same vocabularies.
#
#   scripts/bench/tokenizer.sh [TEXT_FILE]
#
# TEXT_FILE defaults to the Alice in Wonderland fixture (152 KB). The vocabularies are the Llama 3 and Qwen2
# GGUF fixtures (HF reads a tokenizer.json that transformers makes from the same GGUF, with Llama 3's
# ignore_merges as released) and the SmolLM2 tokenizer.json fixture.
# Environment: PYTHON (default /work/venv/ref/bin/python), ROUTER (a router binary; default: build
# `router` in release mode with SwiftPM and use it), REPETITIONS (default 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
FIXTURES=Tests/TokenizersTests/Fixtures
TEXT="${1:-$FIXTURES/texts/alice29.txt}"
PYTHON="${PYTHON:-/work/venv/ref/bin/python}"
REPETITIONS="${REPETITIONS:-5}"
if [[ -z "${ROUTER:-}" ]]; then
    swift build -c release --product router >&2
    ROUTER="$(swift build -c release --show-bin-path)/router"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# tokenizer.json for the GGUF vocabularies, made by transformers (as scripts/fixtures/tokenizer_reference.py does).
"$PYTHON" - "$WORK" "$FIXTURES" <<'PY' 2>/dev/null
import json, os, sys
from transformers import AutoTokenizer
work, fixtures = sys.argv[1], sys.argv[2]
for family in ["llama-bpe", "qwen2"]:
    name = "ggml-vocab-%s.gguf" % family
    tokenizer = AutoTokenizer.from_pretrained(os.path.abspath(os.path.join(fixtures, "vocab")), gguf_file=name)
    tokenizer.save_pretrained(os.path.join(work, family))
    path = os.path.join(work, family, "tokenizer.json")
    data = json.load(open(path, encoding="utf-8"))
    if family == "llama-bpe":
        data["model"]["ignore_merges"] = True
    json.dump(data, open(path, "w", encoding="utf-8"), ensure_ascii=False)
PY

hf() {
    RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false "$PYTHON" - "$1" "$TEXT" "$REPETITIONS" <<'PY'
import sys, time
from tokenizers import Tokenizer
tokenizer = Tokenizer.from_file(sys.argv[1])
tokenizer.encode_special_tokens = True
with open(sys.argv[2], encoding="utf-8", newline="") as f:
    text = f.read()
size = len(text.encode())
def timed():
    start = time.perf_counter()
    count = len(tokenizer.encode(text, add_special_tokens=False).ids)
    return count, time.perf_counter() - start
count, cold = timed()
best = min([cold] + [timed()[1] for _ in range(int(sys.argv[3]))])
print("%d bytes -> %d tokens; cold %.4f s = %.2f MB/s; warm best %.4f s = %.2f MB/s"
      % (size, count, cold, size / 1e6 / cold, best, size / 1e6 / best))
PY
}

for case in "llama-bpe:$FIXTURES/vocab/ggml-vocab-llama-bpe.gguf:$WORK/llama-bpe" \
            "qwen2:$FIXTURES/vocab/ggml-vocab-qwen2.gguf:$WORK/qwen2" \
            "smollm2:$FIXTURES/smollm2:$FIXTURES/smollm2"; do
    IFS=: read -r name ours theirs <<<"$case"
    echo "== $name ($(basename "$TEXT"))"
    printf '  tessel         : '; "$ROUTER" bench-tokenizer --model "$ours" --text "$TEXT" --repetitions "$REPETITIONS"
    printf '  hf tokenizers  : '; hf "$theirs/tokenizer.json"
done
