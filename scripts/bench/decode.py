#!/usr/bin/env python3
"""Measurements behind scripts/bench/decode.sh (standard library only, except the `llamacpp`
mode, which runs inside a venv that has llama-cpp-python).

  decode.py serve     --base-url URL --out FILE [--runs N] [--tokens N] [--prefill-tokens N] [--streams 4,8]
  decode.py llamacpp  --model GGUF --out FILE [--runs N] [--tokens N] [--prefill-tokens N] [--threads N]
  decode.py weights   GGUF                     (prints the tensor bytes by encoding, as JSON)
  decode.py report    --model GGUF --bandwidth FILE --serve FILE [--llamacpp FILE]

Definitions (the same for Tessel and llama.cpp):
  decode tokens/s   greedy, EOS ignored, `tokens` new tokens after a short prompt; the clock runs from
                    the first generated token to the last, so prefill is excluded:
                    (tokens - 1) / (t_last - t_first).
  prefill tokens/s  prompt tokens / time to first token, for a prompt of `prefill-tokens` token ids
                    (different random ids each run, so no prefix-cache hit is possible). For the
                    server this time includes the HTTP round trip and one sampling step.
  aggregate decode  N streams started together: sum over streams of (tokens - 1) divided by the
                    span from the earliest first token to the latest last token.
Every figure is the median over `runs` runs (one unmeasured warm-up run comes first).
"""
import argparse
import http.client
import json
import os
import random
import statistics
import struct
import sys
import threading
import time
import urllib.parse

DECODE_PROMPT = "Once upon a time, in a small village by the sea, there lived"


# ---------------------------------------------------------------- GGUF tensor bytes

# ggml type id -> (name, elements per block, bytes per block)
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 30: ("BF16", 1, 2),
}
# metadata value type id -> struct format of a scalar (8 = string, 9 = array are handled apart)
GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class GGUFError(Exception):
    pass


def gguf_tensors(path):
    """[(name, type name, element count, bytes)] for every tensor in a GGUF file (v2 or v3)."""
    with open(path, "rb") as f:
        data = f.read(64 << 20)  # the header and tensor table of any model this bench serves
    pos = 0

    def take(fmt):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise GGUFError("%s: header runs past the first %d bytes" % (path, len(data)))
        value = struct.unpack_from(fmt, data, pos)[0]
        pos += size
        return value

    def string():
        nonlocal pos
        length = take("<Q")
        value = data[pos:pos + length]
        pos += length
        return value.decode("utf-8", "replace")

    def skip_value(kind):
        nonlocal pos
        if kind in GGUF_SCALARS:
            pos += struct.calcsize(GGUF_SCALARS[kind])
        elif kind == 8:
            length = take("<Q")
            pos += length
        elif kind == 9:
            item_kind, count = take("<I"), take("<Q")
            if item_kind in GGUF_SCALARS:
                pos += count * struct.calcsize(GGUF_SCALARS[item_kind])
            else:
                for _ in range(count):
                    skip_value(item_kind)
        else:
            raise GGUFError("%s: unknown metadata value type %d at byte %d" % (path, kind, pos))

    if data[:4] != b"GGUF":
        raise GGUFError("%s: not a GGUF file (magic %r)" % (path, data[:4]))
    pos = 4
    version = take("<I")
    if version not in (2, 3):
        raise GGUFError("%s: GGUF version %d, expected 2 or 3" % (path, version))
    tensor_count, kv_count = take("<Q"), take("<Q")
    for _ in range(kv_count):
        string()
        skip_value(take("<I"))
    tensors = []
    for _ in range(tensor_count):
        name = string()
        dims = [take("<Q") for _ in range(take("<I"))]
        kind = take("<I")
        take("<Q")  # offset
        if kind not in GGML_TYPES:
            raise GGUFError("%s: tensor %s has ggml type %d, which this bench does not know" % (path, name, kind))
        type_name, block, block_bytes = GGML_TYPES[kind]
        elements = 1
        for d in dims:
            elements *= d
        tensors.append((name, type_name, elements, elements // block * block_bytes))
    return tensors


def weight_summary(path):
    tensors = gguf_tensors(path)
    by_type = {}
    for _, type_name, _, size in tensors:
        by_type[type_name] = by_type.get(type_name, 0) + size
    names = {t[0] for t in tensors}
    return {"tensors": len(tensors), "bytes": sum(t[3] for t in tensors), "by_type": by_type,
            "parameters": sum(t[2] for t in tensors),
            "tied_embeddings": "output.weight" not in names and "token_embd.weight" in names}


# ---------------------------------------------------------------- OpenAI server client

class Stream:
    """One streamed /v1/completions request: timestamps of the first and last generated text and
    the server's token counts (stream_options.include_usage)."""

    def __init__(self, base, model, prompt, max_tokens):
        self.base, self.model, self.prompt, self.max_tokens = base, model, prompt, max_tokens
        self.t_sent = self.t_first = self.t_last = None
        self.prompt_tokens = self.completion_tokens = None
        self.error = None

    def run(self, barrier=None):
        try:
            self._run(barrier)
        except Exception as error:  # reported by the caller, which fails the bench
            self.error = "%s: %s" % (type(error).__name__, error)

    def _run(self, barrier):
        body = json.dumps({
            "model": self.model, "prompt": self.prompt, "max_tokens": self.max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True},
        })
        connection = http.client.HTTPConnection(self.base.hostname, self.base.port, timeout=600)
        connection.connect()
        if barrier is not None:
            barrier.wait()
        self.t_sent = time.perf_counter()
        connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError("HTTP %d: %s" % (response.status, response.read()[:400]))
        while True:
            line = response.readline()
            if not line:
                break
            now = time.perf_counter()
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            event = json.loads(payload)
            if "error" in event:
                raise RuntimeError("stream error: %s" % event["error"])
            if any(choice.get("text") for choice in event.get("choices") or []):
                if self.t_first is None:
                    self.t_first = now
                self.t_last = now
            usage = event.get("usage")
            if usage:
                self.prompt_tokens = usage.get("prompt_tokens")
                self.completion_tokens = usage.get("completion_tokens")
        connection.close()
        if self.t_first is None:
            raise RuntimeError("the stream carried no text")
        if self.completion_tokens is None:
            raise RuntimeError("the stream carried no usage (stream_options.include_usage)")

    @property
    def ttft(self):
        return self.t_first - self.t_sent

    @property
    def decode_rate(self):
        span = self.t_last - self.t_first
        return (self.completion_tokens - 1) / span if span > 0 else float("nan")


def get_json(base, path):
    connection = http.client.HTTPConnection(base.hostname, base.port, timeout=30)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    if response.status != 200:
        raise RuntimeError("GET %s: HTTP %d %s" % (path, response.status, body[:200]))
    return json.loads(body)


def run_streams(base, model, prompts, max_tokens):
    streams = [Stream(base, model, prompt, max_tokens) for prompt in prompts]
    barrier = threading.Barrier(len(streams))
    threads = [threading.Thread(target=s.run, args=(barrier,)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in streams:
        if s.error:
            raise SystemExit("decode.py: a request failed: %s" % s.error)
        if s.completion_tokens != max_tokens:
            raise SystemExit("decode.py: asked for %d tokens with ignore_eos, got %d" % (max_tokens, s.completion_tokens))
    return streams


def random_prompt(rng, length):
    # Ordinary-vocabulary ids (clear of the low special ids of common vocabularies).
    return [rng.randrange(300, 30000) for _ in range(length)]


def serve(args):
    base = urllib.parse.urlsplit(args.base_url)
    model = get_json(base, "/v1/models")["data"][0]["id"]
    rng = random.Random(20261123)
    result = {"model": model, "runs": args.runs, "tokens": args.tokens}

    def log(text):
        print("  " + text, file=sys.stderr, flush=True)

    # (a) single stream
    run_streams(base, model, [DECODE_PROMPT], args.tokens)  # warm-up
    singles = [run_streams(base, model, [DECODE_PROMPT], args.tokens)[0] for _ in range(args.runs)]
    result["decode_single"] = [s.decode_rate for s in singles]
    result["ttft_short"] = [s.ttft for s in singles]
    result["short_prompt_tokens"] = singles[0].prompt_tokens
    log("single stream: %s tok/s" % ", ".join("%.1f" % r for r in result["decode_single"]))

    # (b) prefill
    run_streams(base, model, [random_prompt(rng, args.prefill_tokens)], 1)  # warm-up
    prefills = [run_streams(base, model, [random_prompt(rng, args.prefill_tokens)], 1)[0] for _ in range(args.runs)]
    result["prefill_tokens"] = prefills[0].prompt_tokens
    result["prefill_ttft"] = [s.ttft for s in prefills]
    result["prefill"] = [s.prompt_tokens / s.ttft for s in prefills]
    log("prefill %d tokens: %s tok/s" % (result["prefill_tokens"], ", ".join("%.0f" % r for r in result["prefill"])))

    # (c) concurrent streams
    result["concurrent"] = {}
    for n in args.streams:
        prompts = ["%s (%d)" % (DECODE_PROMPT, i) for i in range(n)]
        run_streams(base, model, prompts, args.tokens)  # warm-up
        aggregates, per_stream = [], []
        for _ in range(args.runs):
            streams = run_streams(base, model, prompts, args.tokens)
            span = max(s.t_last for s in streams) - min(s.t_first for s in streams)
            aggregates.append(sum(s.completion_tokens - 1 for s in streams) / span)
            per_stream.append(statistics.mean(s.decode_rate for s in streams))
        result["concurrent"][str(n)] = {"aggregate": aggregates, "per_stream": per_stream}
        log("%d streams: aggregate %s tok/s" % (n, ", ".join("%.1f" % r for r in aggregates)))

    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


# ---------------------------------------------------------------- llama.cpp (llama-cpp-python)

def llamacpp(args):
    import llama_cpp

    threads = args.threads or os.cpu_count()
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=max(1024, args.prefill_tokens + args.tokens + 64),
                          n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    prompt = llm.tokenize(DECODE_PROMPT.encode(), add_bos=False, special=False)
    rng = random.Random(20261123)

    def decode_once():
        # generate() evaluates the prompt, then yields one greedy token per step and never stops
        # on its own (EOS is not checked there), which is ignore_eos.
        llm.reset()
        stamps = []
        for _ in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) == args.tokens:
                break
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])

    def prefill_once():
        llm.reset()
        tokens = random_prompt(rng, args.prefill_tokens)
        start = time.perf_counter()
        llm.eval(tokens)
        return len(tokens) / (time.perf_counter() - start)

    decode_once()
    decodes = [decode_once() for _ in range(args.runs)]
    prefill_once()
    prefills = [prefill_once() for _ in range(args.runs)]
    print("  llama.cpp single stream: %s tok/s" % ", ".join("%.1f" % r for r in decodes), file=sys.stderr)
    with open(args.out, "w") as f:
        json.dump({"version": getattr(llama_cpp, "__version__", "?"), "threads": threads,
                   "decode_single": decodes, "prefill": prefills, "prefill_tokens": args.prefill_tokens}, f, indent=1)


# ---------------------------------------------------------------- report

def report(args):
    weights = weight_summary(args.model)
    with open(args.bandwidth) as f:
        bandwidth = [json.loads(line) for line in f if line.strip()]
    with open(args.serve) as f:
        serve_result = json.load(f)
    llama = None
    if args.llamacpp and os.path.exists(args.llamacpp):
        with open(args.llamacpp) as f:
            llama = json.load(f)
    med = statistics.median

    def spread(values):
        return "%.1f-%.1f" % (min(values), max(values))

    cores = os.cpu_count()
    print()
    print("Model: %s (%s, %d tensors, %.2f M parameters)" % (
        os.path.basename(args.model), ", ".join("%s %.1f MB" % (k, v / 1e6) for k, v in sorted(weights["by_type"].items())),
        weights["tensors"], weights["parameters"] / 1e6))
    print("Weight bytes read per decoded token: %.1f MB = every tensor as stored in the GGUF (quantised: "
          "the decode path, <= 8 rows, runs Q4_1/Q8_0 kernels on these bytes; prefill reads float32 copies)%s." % (
              weights["bytes"] / 1e6,
              "; the tied token_embd matrix is counted once, as the LM head" if weights["tied_embeddings"] else ""))
    print()
    print("Read bandwidth (STREAM-like sum kernel, best of the passes):")
    for b in bandwidth:
        print("  %d thread(s), %7.1f MB buffer: %6.1f GB/s (median %.1f)" % (
            b["threads"], b["bytes"] / 1e6, b["best_gbps"], b["median_gbps"]))
    # The bound is optimistic on purpose: the best pass with every core reading, on either buffer.
    all_threads = max(b["threads"] for b in bandwidth)
    bound_source = max((b for b in bandwidth if b["threads"] == all_threads), key=lambda b: b["best_gbps"])
    bound = bound_source["best_gbps"] * 1e9 / weights["bytes"]
    print("Decode bound = %.1f GB/s (best pass, %d threads, %.0f MB buffer) / %.1f MB per token = %.0f tokens/s "
          "(KV-cache reads ignored)" % (bound_source["best_gbps"], bound_source["threads"], bound_source["bytes"] / 1e6,
                                        weights["bytes"] / 1e6, bound))
    print()
    runs = serve_result["runs"]
    single = med(serve_result["decode_single"])
    rows = [
        ("decode, 1 stream (%d tokens)" % serve_result["tokens"], single, spread(serve_result["decode_single"]),
         "%.0f%% of bound" % (100 * single / bound)),
        ("prefill, %d-token prompt" % serve_result["prefill_tokens"], med(serve_result["prefill"]), spread(serve_result["prefill"]),
         "TTFT %.0f ms (short prompt: %.0f ms)" % (1000 * med(serve_result["prefill_ttft"]), 1000 * med(serve_result["ttft_short"]))),
    ]
    for n, c in sorted(serve_result["concurrent"].items(), key=lambda kv: int(kv[0])):
        rows.append(("decode, %s streams, aggregate" % n, med(c["aggregate"]), spread(c["aggregate"]),
                     "%.1f tok/s per stream; %.2fx one stream" % (med(c["per_stream"]), med(c["aggregate"]) / single)))
    rows.append(("decode bound (bandwidth / bytes)", bound, "", "%.1f GB/s (best pass) / %.1f MB" % (
        bound_source["best_gbps"], weights["bytes"] / 1e6)))
    median_bound = bound_source["median_gbps"] * 1e9 / weights["bytes"]
    rows.append(("  same, median pass", median_bound, "", "%.1f GB/s; 1 stream = %.0f%% of it" % (
        bound_source["median_gbps"], 100 * single / median_bound)))
    if llama:
        ls = med(llama["decode_single"])
        rows.append(("llama.cpp decode, 1 stream", ls, spread(llama["decode_single"]),
                     "%.0f%% of bound; Tessel/llama.cpp = %.2f" % (100 * ls / bound, single / ls)))
        lp = med(llama["prefill"])
        rows.append(("llama.cpp prefill, %d tokens" % llama["prefill_tokens"], lp, spread(llama["prefill"]),
                     "Tessel/llama.cpp = %.2f (llama.cpp: no HTTP)" % (med(serve_result["prefill"]) / lp)))
    print("%-36s %10s  %-14s %s" % ("Tessel (%s), median of %d" % (serve_result["model"], runs), "tokens/s", "range", "note"))
    print("-" * 100)
    for name, value, rng, note in rows:
        print("%-36s %10.1f  %-14s %s" % (name, value, rng, note))
    if not llama:
        print("llama.cpp: not run (%s)" % (args.llamacpp_note or "no result"))
    print()
    print("Shared machine (%d cores; router, worker and this client on the same cores): figures are noisy." % cores)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--base-url", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--prefill-tokens", type=int, default=500)
    p.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8])
    p = sub.add_parser("llamacpp")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--prefill-tokens", type=int, default=500)
    p.add_argument("--threads", type=int, default=0)
    p = sub.add_parser("weights")
    p.add_argument("model")
    p = sub.add_parser("report")
    p.add_argument("--model", required=True)
    p.add_argument("--bandwidth", required=True)
    p.add_argument("--serve", required=True)
    p.add_argument("--llamacpp")
    p.add_argument("--llamacpp-note")
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args)
    elif args.mode == "llamacpp":
        llamacpp(args)
    elif args.mode == "weights":
        print(json.dumps(weight_summary(args.model), indent=1))
    else:
        report(args)


if __name__ == "__main__":
    main()
