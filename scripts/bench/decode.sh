#!/usr/bin/env bash
# Decode benchmark: Tessel served end to end (router + one worker, release build) on a GGUF model,
# beside this machine's read bandwidth and, when its venv exists, llama.cpp on the same file.
#
#   scripts/bench/decode.sh [MODEL_GGUF]
#
# One run measures, each as the median of RUNS runs (after one warm-up):
#   (a) single-stream decode tokens/s: greedy, ignore_eos, TOKENS new tokens after a short prompt,
#       streamed, timed from the first token to the last (prefill excluded);
#   (b) prefill tokens/s for a PREFILL_TOKENS-token prompt (random ids each run; time to first token);
#   (c) aggregate decode tokens/s with 4 and 8 concurrent streams;
#   (d) the memory-bandwidth bound: a C read kernel (1 thread and all threads, on a buffer the size of
#       the weights and on a 1 GiB one; the bound takes the best all-threads pass) over the bytes of the
#       model's tensors as stored in the GGUF (the quantised bytes the decode kernels read per token),
#       and (a) as a fraction of it.
# The llama.cpp column needs llama-cpp-python in LLAMA_VENV; without it the script says so and prints
# the command that builds it (about 15 minutes on 2 cores).
#
# Environment: ROUTER (a router binary with `worker` beside it; default: build both in release mode
# with SwiftPM and use them), PYTHON (default python3; standard library only), RUNS (5), TOKENS (128),
# PREFILL_TOKENS (500), STREAMS (4,8), LLAMA_VENV (default ~/.cache/tessel/venv-llamacpp).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL="${1:-$HOME/.cache/tessel/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
PYTHON="${PYTHON:-python3}"
RUNS="${RUNS:-5}"
TOKENS="${TOKENS:-128}"
PREFILL_TOKENS="${PREFILL_TOKENS:-500}"
STREAMS="${STREAMS:-4,8}"
LLAMA_VENV="${LLAMA_VENV:-$HOME/.cache/tessel/venv-llamacpp}"
BENCH="scripts/bench/decode.py"
[[ -f "$MODEL" ]] || { echo "decode.sh: no model file at $MODEL (scripts/fetch-model fetches the default)" >&2; exit 1; }
if [[ -z "${ROUTER:-}" ]]; then
    swift build -c release --product worker >&2
    swift build -c release --product router >&2
    ROUTER="$(swift build -c release --show-bin-path)/router"
fi
[[ -x "$ROUTER" ]] || { echo "decode.sh: $ROUTER is not an executable" >&2; exit 1; }
CORES="$(nproc)"

WORK="$(mktemp -d)"
ROUTER_PID=""
cleanup() {
    if [[ -n "$ROUTER_PID" ]] && kill -0 "$ROUTER_PID" 2>/dev/null; then
        kill -TERM "$ROUTER_PID" 2>/dev/null || true
        wait "$ROUTER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# (d) read bandwidth, measured first while nothing of ours runs. Each thread first-touches and then
# sums its own slice of the buffer (64-bit adds in four independent lanes, which the compiler widens to
# AVX-512/AVX2); a barrier starts and ends every pass; the best pass is the bandwidth figure.
cat >"$WORK/readbw.c" <<'C'
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { uint64_t *data; size_t count; uint64_t sum; double *begin, *end; } Slice;
static pthread_barrier_t start_line, finish_line;
static int passes;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint64_t sum(const uint64_t *restrict p, size_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= n; i += 4) { a += p[i]; b += p[i + 1]; c += p[i + 2]; d += p[i + 3]; }
    return a + b + c + d;
}

/* Every reader stamps its own start and end (the main thread only waits in pthread_join, so it
   never competes for a core); a pass lasts from the earliest start to the latest end. */
static void *reader(void *argument) {
    Slice *slice = argument;
    for (size_t i = 0; i < slice->count; i++) slice->data[i] = i * 2654435761u;
    for (int pass = 0; pass <= passes; pass++) {   /* pass 0 is the warm-up */
        pthread_barrier_wait(&start_line);
        slice->begin[pass] = now();
        slice->sum += sum(slice->data, slice->count);
        slice->end[pass] = now();
        pthread_barrier_wait(&finish_line);
    }
    return NULL;
}

static int by_value(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: readbw LABEL BYTES THREADS PASSES\n"); return 2; }
    size_t bytes = strtoull(argv[2], NULL, 10);
    int threads = atoi(argv[3]);
    passes = atoi(argv[4]);
    size_t per = (bytes / 8 / threads) & ~(size_t)63;
    Slice *slices = calloc(threads, sizeof(Slice));
    pthread_t *ids = calloc(threads, sizeof(pthread_t));
    double *gbps = calloc(passes, sizeof(double));
    pthread_barrier_init(&start_line, NULL, threads);
    pthread_barrier_init(&finish_line, NULL, threads);
    for (int t = 0; t < threads; t++) {
        if (posix_memalign((void **)&slices[t].data, 4096, per * 8)) { fprintf(stderr, "readbw: out of memory\n"); return 1; }
        slices[t].count = per;
        slices[t].begin = calloc(passes + 1, sizeof(double));
        slices[t].end = calloc(passes + 1, sizeof(double));
        pthread_create(&ids[t], NULL, reader, &slices[t]);
    }
    uint64_t check = 0;
    for (int t = 0; t < threads; t++) { pthread_join(ids[t], NULL); check += slices[t].sum; }
    for (int pass = 1; pass <= passes; pass++) {
        double begin = slices[0].begin[pass], end = slices[0].end[pass];
        for (int t = 1; t < threads; t++) {
            if (slices[t].begin[pass] < begin) begin = slices[t].begin[pass];
            if (slices[t].end[pass] > end) end = slices[t].end[pass];
        }
        gbps[pass - 1] = (double)per * 8 * threads / (end - begin) / 1e9;
    }
    qsort(gbps, passes, sizeof(double), by_value);
    printf("{\"label\": \"%s\", \"bytes\": %zu, \"threads\": %d, \"passes\": %d, \"best_gbps\": %.3f, \"median_gbps\": %.3f, \"check\": %llu}\n",
           argv[1], per * 8 * threads, threads, passes, gbps[passes - 1], gbps[passes / 2], (unsigned long long)(check & 0xff));
    return 0;
}
C
cc -O3 -march=native -pthread -o "$WORK/readbw" "$WORK/readbw.c"
MODEL_BYTES="$("$PYTHON" "$BENCH" weights "$MODEL" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["bytes"])')"
echo "== read bandwidth" >&2
for threads in $(printf '%s\n' 1 "$CORES" | sort -nu); do
    "$WORK/readbw" model "$MODEL_BYTES" "$threads" 100 >>"$WORK/bandwidth.jsonl"
    "$WORK/readbw" dram $((1 << 30)) "$threads" 10 >>"$WORK/bandwidth.jsonl"
done
cat "$WORK/bandwidth.jsonl" >&2

# (a)-(c) against the router on a free loopback port; prefix caching off so no prompt is served from cache.
PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
echo "== tessel: $ROUTER on 127.0.0.1:$PORT" >&2
"$ROUTER" --model "$MODEL" --host 127.0.0.1 --port "$PORT" --no-prefix-caching --log-level warning \
    >"$WORK/router.log" 2>&1 &
ROUTER_PID=$!
for _ in $(seq 1 240); do
    if "$PYTHON" - "$PORT" <<'PY' 2>/dev/null; then break; fi
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=2)
c.request("GET", "/health")
sys.exit(0 if c.getresponse().status == 200 else 1)
PY
    if ! kill -0 "$ROUTER_PID" 2>/dev/null; then
        echo "decode.sh: the router exited during start-up:" >&2; cat "$WORK/router.log" >&2; exit 1
    fi
    sleep 0.5
done
"$PYTHON" "$BENCH" serve --base-url "http://127.0.0.1:$PORT" --out "$WORK/serve.json" \
    --runs "$RUNS" --tokens "$TOKENS" --prefill-tokens "$PREFILL_TOKENS" --streams "$STREAMS" \
    || { echo "decode.sh: router log:" >&2; tail -20 "$WORK/router.log" >&2; exit 1; }
kill -TERM "$ROUTER_PID"
wait "$ROUTER_PID" 2>/dev/null || true
ROUTER_PID=""

# llama.cpp on the same file, same threads, same definitions (optional).
LLAMA_NOTE=""
if [[ -x "$LLAMA_VENV/bin/python" ]] && "$LLAMA_VENV/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    echo "== llama.cpp (llama-cpp-python in $LLAMA_VENV, $CORES threads)" >&2
    "$LLAMA_VENV/bin/python" "$BENCH" llamacpp --model "$MODEL" --out "$WORK/llamacpp.json" --runs "$RUNS" \
        --tokens "$TOKENS" --prefill-tokens "$PREFILL_TOKENS" --threads "$CORES" \
        || LLAMA_NOTE="llama-cpp-python failed; see above"
else
    LLAMA_NOTE="no llama-cpp-python in $LLAMA_VENV"
    cat >&2 <<EOF
== llama.cpp skipped: no llama-cpp-python in $LLAMA_VENV. To build it (about 15 minutes on 2 cores;
   the native build crashes here in its AMX path, so the ISA is spelled out):
   python3 -m venv $LLAMA_VENV && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_FMA=ON -DGGML_F16C=ON" $LLAMA_VENV/bin/pip install --no-binary llama-cpp-python llama-cpp-python numpy
EOF
fi

"$PYTHON" "$BENCH" report --model "$MODEL" --bandwidth "$WORK/bandwidth.jsonl" --serve "$WORK/serve.json" \
    --llamacpp "$WORK/llamacpp.json" --llamacpp-note "$LLAMA_NOTE"
