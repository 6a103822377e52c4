#!/usr/bin/env python3
"""Measurements behind scripts/bench/serving.sh (standard library only): the same OpenAI-API
load against Tessel's router and llama.cpp's llama-server on the same GGUF.

  serving.py run      --base-url URL --out FILE [--runs N] [--tokens N] [--prefill-tokens N]
                      [--streams N] [--long 1000,4000,8000] [--extra-body JSON]
  serving.py weights  GGUF                     (prints the tensor bytes by encoding, as JSON)
  serving.py report   --model GGUF --bandwidth FILE --ours FILE --llama FILE [--rss FILE]

Definitions (the same for both servers; every request streams /v1/completions, greedy, EOS ignored):
  decode tokens/s   one stream, `tokens` new tokens after a short prompt; the clock runs from the
                    first generated token to the last: (tokens - 1) / (t_last - t_first).
  streams           N streams started together, `tokens` each: aggregate = sum of (tokens - 1) over
                    the span from the earliest first token to the latest last token; TTFT p50 over
                    the N streams (the median run's).
  prefill tokens/s  prompt tokens / time to first token for a `prefill-tokens`-token prompt of random
                    ids (different each run, so no cache hit), max_tokens 1; includes the HTTP round trip.
  long prompts      time to first token for prompts of each length in --long (random ids).
Every figure is the median over `runs` runs after one unmeasured warm-up (long prompts: one run each
after the others' warm-up).
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

    def __init__(self, base, model, prompt, max_tokens, extra=None):
        self.base, self.model, self.prompt, self.max_tokens = base, model, prompt, max_tokens
        self.extra = extra or {}
        self.t_sent = self.t_first = self.t_last = None
        self.prompt_tokens = self.completion_tokens = None
        self.error = None

    def run(self, barrier=None):
        try:
            self._run(barrier)
        except Exception as error:  # reported by the caller, which fails the bench
            self.error = "%s: %s" % (type(error).__name__, error)

    def _run(self, barrier):
        body = json.dumps(dict({
            "model": self.model, "prompt": self.prompt, "max_tokens": self.max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True},
        }, **self.extra))
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


def run_streams(base, model, prompts, max_tokens, extra=None):
    streams = [Stream(base, model, prompt, max_tokens, extra) for prompt in prompts]
    barrier = threading.Barrier(len(streams))
    threads = [threading.Thread(target=s.run, args=(barrier,)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in streams:
        if s.error:
            raise SystemExit("serving.py: a request failed: %s" % s.error)
        if s.completion_tokens != max_tokens:
            raise SystemExit("serving.py: asked for %d tokens with ignore_eos, got %d" % (max_tokens, s.completion_tokens))
    return streams


def random_prompt(rng, length):
    # Ordinary-vocabulary ids (clear of the low special ids of common vocabularies).
    return [rng.randrange(300, 30000) for _ in range(length)]


def run(args):
    base = urllib.parse.urlsplit(args.base_url)
    model = get_json(base, "/v1/models")["data"][0]["id"]
    extra = json.loads(args.extra_body) if args.extra_body else {}
    rng = random.Random(20261123)
    result = {"model": model, "runs": args.runs, "tokens": args.tokens}

    def log(text):
        print("  " + text, file=sys.stderr, flush=True)

    def streams(prompts, tokens):
        return run_streams(base, model, prompts, tokens, extra)

    # single stream
    streams([DECODE_PROMPT], args.tokens)  # warm-up
    singles = [streams([DECODE_PROMPT], args.tokens)[0] for _ in range(args.runs)]
    result["decode_single"] = [s.decode_rate for s in singles]
    log("single stream: %s tok/s" % ", ".join("%.1f" % r for r in result["decode_single"]))

    # prefill
    streams([random_prompt(rng, args.prefill_tokens)], 1)  # warm-up
    prefills = [streams([random_prompt(rng, args.prefill_tokens)], 1)[0] for _ in range(args.runs)]
    result["prefill_tokens"] = prefills[0].prompt_tokens
    result["prefill_ttft"] = [s.ttft for s in prefills]
    result["prefill"] = [s.prompt_tokens / s.ttft for s in prefills]
    log("prefill %d tokens: %s tok/s" % (result["prefill_tokens"], ", ".join("%.0f" % r for r in result["prefill"])))

    # concurrent streams
    n = args.streams
    prompts = ["%s (%d)" % (DECODE_PROMPT, i) for i in range(n)]
    streams(prompts, args.tokens)  # warm-up
    aggregates, ttfts = [], []
    for _ in range(args.runs):
        batch = streams(prompts, args.tokens)
        span = max(s.t_last for s in batch) - min(s.t_first for s in batch)
        aggregates.append(sum(s.completion_tokens - 1 for s in batch) / span)
        ttfts.append(statistics.median(s.ttft for s in batch))
    result["concurrent"] = {"streams": n, "aggregate": aggregates, "ttft_p50": ttfts}
    log("%d streams: aggregate %s tok/s, TTFT p50 %s s" % (
        n, ", ".join("%.1f" % r for r in aggregates), ", ".join("%.2f" % t for t in ttfts)))

    # long prompts
    result["long"] = {}
    for length in args.long:
        first = streams([random_prompt(rng, length)], 1)[0]
        result["long"][str(length)] = {"ttft": first.ttft, "prompt_tokens": first.prompt_tokens}
        log("%d-token prompt: TTFT %.2f s" % (length, first.ttft))

    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


# ---------------------------------------------------------------- report

def report(args):
    weights = weight_summary(args.model)
    with open(args.bandwidth) as f:
        bandwidth = [json.loads(line) for line in f if line.strip()]
    with open(args.ours) as f:
        ours = json.load(f)
    with open(args.llama) as f:
        llama = json.load(f)
    rss = {}
    if args.rss and os.path.exists(args.rss):
        with open(args.rss) as f:
            rss = json.load(f)
    med = statistics.median

    all_threads = max(b["threads"] for b in bandwidth)
    best = max((b for b in bandwidth if b["threads"] == all_threads), key=lambda b: b["best_gbps"])
    bound = best["median_gbps"] * 1e9 / weights["bytes"]
    print()
    print("Model: %s (%s; %.1f MB of tensors read per decoded token)" % (
        os.path.basename(args.model), ", ".join("%s %.1f MB" % (k, v / 1e6) for k, v in sorted(weights["by_type"].items())),
        weights["bytes"] / 1e6))
    print("Read bandwidth, %d threads: %.1f GB/s (median pass) -> decode bound %.0f tokens/s" % (
        all_threads, best["median_gbps"], bound))
    print()
    rows = []

    def row(name, a, b, higher_is_better=True, unit=""):
        ratio = (a / b) if higher_is_better else (b / a)
        rows.append((name, a, b, ratio, unit))

    row("decode, 1 stream (tok/s)", med(ours["decode_single"]), med(llama["decode_single"]))
    n = ours["concurrent"]["streams"]
    row("%d streams, aggregate (tok/s)" % n, med(ours["concurrent"]["aggregate"]), med(llama["concurrent"]["aggregate"]))
    row("%d streams, TTFT p50 (s)" % n, med(ours["concurrent"]["ttft_p50"]), med(llama["concurrent"]["ttft_p50"]), False)
    row("prefill %d tokens (tok/s)" % ours["prefill_tokens"], med(ours["prefill"]), med(llama["prefill"]))
    for length in sorted(ours["long"], key=int):
        if length in llama["long"]:
            row("TTFT, %s-token prompt (s)" % length, ours["long"][length]["ttft"], llama["long"][length]["ttft"], False)
    if rss:
        row("resident memory, MB", rss["ours_rss"] / 1e6, rss["llama_rss"] / 1e6, False)
    print("%-32s %12s %12s %8s" % ("median of %d runs" % ours["runs"], "Tessel", "llama.cpp", "ratio"))
    print("-" * 68)
    for name, a, b, ratio, _ in rows:
        print("%-32s %12.2f %12.2f %7.2fx" % (name, a, b, ratio))
    print()
    print("ratio: Tessel's advantage (throughput ours/theirs; times and memory theirs/ours).")
    single = med(ours["decode_single"])
    print("Tessel decode, 1 stream = %.0f%% of the bandwidth bound; llama.cpp %.0f%%." % (
        100 * single / bound, 100 * med(llama["decode_single"]) / bound))
    if rss:
        print("Resident memory after the runs: Tessel's worker holds the mapped weights (%.1f MB) and the KV blocks "
              "the runs touched (up to the longest prompt); llama-server allocates its whole KV cache up front (%s)." % (
                  weights["bytes"] / 1e6, rss.get("llama_kv", "?")))
    print("Shared machine (%d cores; servers and this client on the same cores): figures are noisy." % os.cpu_count())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("run")
    p.add_argument("--base-url", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--prefill-tokens", type=int, default=512)
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--long", type=lambda s: [int(x) for x in s.split(",") if x], default=[1000, 4000, 8000])
    p.add_argument("--extra-body", help="JSON object merged into every request (llama-server: cache_prompt false)")
    p = sub.add_parser("weights")
    p.add_argument("model")
    p = sub.add_parser("report")
    p.add_argument("--model", required=True)
    p.add_argument("--bandwidth", required=True)
    p.add_argument("--ours", required=True)
    p.add_argument("--llama", required=True)
    p.add_argument("--rss")
    args = parser.parse_args()
    if args.mode == "run":
        run(args)
    elif args.mode == "weights":
        print(json.dumps(weight_summary(args.model), indent=1))
    else:
        report(args)


if __name__ == "__main__":
    main()
