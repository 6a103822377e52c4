#!/usr/bin/env bash
# Accuracy the way MAX accepts an architecture: lm-eval through the server's chat API
# (`lm_eval --model local-chat-completions … --apply_chat_template`), on Tessel and on llama.cpp's
# llama-server serving the same GGUF, one after the other; prints both scores and their ratio.
#
#   scripts/bench/accuracy.sh [MODEL_GGUF]
#
# The task is BIG-bench arithmetic (1- and 2-digit addition, subtraction, multiplication and
# division), whose data ships in the PyPI sdist of `bigbench`: a local lm-eval task over a JSONL
# file made from its task.json files (no hub downloads). Greedy answers, the first number in the
# reply scored by exact match against the target.
#
# Environment: ROUTER (a router with `worker` beside it; default: release build with SwiftPM),
# LLAMA_BIN (llama-server's directory; default: build-llama-cpp's), LIMIT (examples per subtask,
# 50), TESSEL_ARGS (extra router flags), TESSEL_EVAL_VENV (~/.cache/tessel/venv-eval).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL="${1:-$HOME/.cache/tessel/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
LIMIT="${LIMIT:-50}"
VENV="${TESSEL_EVAL_VENV:-$HOME/.cache/tessel/venv-eval}"
[[ -f "$MODEL" ]] || { echo "accuracy.sh: no model file at $MODEL (scripts/fetch-model fetches the default)" >&2; exit 1; }
if [[ ! -x "$VENV/bin/lm_eval" ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==2.13.0+cpu" "lm-eval[api]" >&2
fi
if [[ -z "${ROUTER:-}" ]]; then
    swift build -c release --product worker >&2
    swift build -c release --product router >&2
    ROUTER="$(swift build -c release --show-bin-path)/router"
fi
LLAMA_BIN="${LLAMA_BIN:-$(scripts/bench/build-llama-cpp)}"

DATA="$HOME/.cache/tessel/eval"
mkdir -p "$DATA"
if [[ ! -s "$DATA/arithmetic.jsonl" ]]; then
    tmp="$(mktemp -d)"
    python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$tmp" "bigbench==1.0.0" >&2
    python3 - "$tmp"/bigbench-1.0.0.tar.gz "$DATA/arithmetic.jsonl" <<'PY'
import json, sys, tarfile
subtasks = [f"{digits}_digit_{op}" for digits in (1, 2) for op in ("addition", "subtraction", "multiplication", "division")]
with tarfile.open(sys.argv[1]) as tar, open(sys.argv[2] + ".part", "w") as out:
    for name in subtasks:
        task = json.load(tar.extractfile(f"bigbench-1.0.0/bigbench/benchmark_tasks/arithmetic/{name}/task.json"))
        for example in task["examples"]:
            out.write(json.dumps({"subtask": name, "question": example["input"], "answer": example["target"]}) + "\n")
PY
    mv "$DATA/arithmetic.jsonl.part" "$DATA/arithmetic.jsonl"
    rm -rf "$tmp"
fi

PYTHON=python3
source scripts/bench/servers.sh

# One task per subtask (LIMIT examples each), grouped; the model's reply is scored by its first number.
mkdir -p "$WORK/tasks"
python3 - "$WORK/tasks" "$DATA/arithmetic.jsonl" <<'PY'
import json, sys
folder, data = sys.argv[1:]
names = sorted({json.loads(line)["subtask"] for line in open(data)})
for name in names:
    with open(f"{folder}/{name}.jsonl", "w") as out:
        for line in open(data):
            if json.loads(line)["subtask"] == name:
                out.write(line)
    with open(f"{folder}/{name}.yaml", "w") as out:
        out.write(f"""task: tessel_arithmetic_{name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/{name}.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}} Answer with the number only."
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: []
  max_gen_toks: 16
  do_sample: false
  temperature: 0
filter_list:
  - name: first-number
    filter:
      - function: regex
        regex_pattern: "(-?[0-9]+)"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""")
with open(f"{folder}/group.yaml", "w") as out:
    out.write("group: tessel_arithmetic\ntask:\n" + "".join(f"  - tessel_arithmetic_{n}\n" for n in names)
              + "aggregate_metric_list:\n  - metric: exact_match\n    aggregation: mean\n    weight_by_size: true\n"
              "    filter_list: first-number\n")
PY

# Scores one server: lm-eval's chat-completions client, greedy, the chat template applied server-side.
evaluate() {
    local label="$1" port="$2" model="$3"
    HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 "$VENV/bin/lm_eval" --model local-chat-completions \
        --model_args "model=$model,base_url=http://127.0.0.1:$port/v1/chat/completions,num_concurrent=4,max_retries=1,tokenized_requests=False" \
        --tasks tessel_arithmetic --include_path "$WORK/tasks" --apply_chat_template --limit "$LIMIT" \
        --output_path "$WORK/$label" >"$WORK/$label.log" 2>&1 || { tail -30 "$WORK/$label.log" >&2; return 1; }
}

PORT="$(free_port)"
echo "== tessel: $ROUTER on 127.0.0.1:$PORT" >&2
"$ROUTER" --model "$MODEL" --host 127.0.0.1 --port "$PORT" --log-level warning ${TESSEL_ARGS:-} >"$WORK/tessel-server.log" 2>&1 &
SERVER_PID=$!
wait_healthy "$PORT" "$WORK/tessel-server.log"
NAME="$(curl -s "http://127.0.0.1:$PORT/v1/models" | python3 -c 'import json, sys; print(json.load(sys.stdin)["data"][0]["id"])')"
evaluate tessel "$PORT" "$NAME"
stop_server

PORT="$(free_port)"
echo "== llama.cpp: $LLAMA_BIN/llama-server on 127.0.0.1:$PORT" >&2
"$LLAMA_BIN/llama-server" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -t "$(nproc)" -c 4096 -np 4 --jinja --no-webui \
    >"$WORK/llama-server.log" 2>&1 &
SERVER_PID=$!
wait_healthy "$PORT" "$WORK/llama-server.log"
evaluate llama "$PORT" "$(basename "$MODEL")"
stop_server

python3 - "$WORK" "$MODEL" "$LIMIT" <<'PY'
import glob, json, sys
work, model, limit = sys.argv[1:]
def scores(label):
    path = sorted(glob.glob(f"{work}/{label}/**/results_*.json", recursive=True))[-1]
    results = json.load(open(path))["results"]
    def score(task): return results[task]["exact_match,first-number"]
    subtasks = sorted(t for t in results if t != "tessel_arithmetic")
    return score("tessel_arithmetic"), {t.replace("tessel_arithmetic_", ""): score(t) for t in subtasks}
ours, our_parts = scores("tessel")
theirs, their_parts = scores("llama")
print(f"Model: {model.rsplit('/', 1)[-1]}; BIG-bench arithmetic, {limit} examples per subtask, lm-eval local-chat-completions, greedy")
print(f"{'subtask':24} {'Tessel':>8} {'llama.cpp':>10}")
for name in our_parts:
    print(f"{name:24} {our_parts[name]:8.3f} {their_parts.get(name, float('nan')):10.3f}")
print(f"{'all (exact match)':24} {ours:8.3f} {theirs:10.3f}")
print(f"ratio Tessel / llama.cpp: {ours / theirs:.3f}" if theirs else "ratio: llama.cpp scored 0")
PY
