"""Structured output under load, against a running router: STREAMS concurrent chat requests
with and without a JSON schema, alternated RUNS times; prints each load's aggregate decode rate
(completion tokens per second of wall time) and, from /metrics, the router's mean and total
mask time during the constrained loads. Shows whether computing masks holds the step loop back.

    python scripts/bench/structured_load.py BASE_URL [STREAMS] [TOKENS] [RUNS]
"""
import concurrent.futures
import json
import statistics
import sys
import time
import urllib.request

BASE = sys.argv[1].rstrip("/")
STREAMS = int(sys.argv[2]) if len(sys.argv) > 2 else 16
TOKENS = int(sys.argv[3]) if len(sys.argv) > 3 else 128
RUNS = int(sys.argv[4]) if len(sys.argv) > 4 else 3
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                "required": ["street", "city"]},
    "hobbies": {"type": "array", "items": {"type": "string"}},
    "biography": {"type": "string"}}, "required": ["name", "age", "address", "hobbies", "biography"]}


def post(path, body):
    request = urllib.request.Request(BASE + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.load(response)


def mask_seconds():
    text = urllib.request.urlopen(BASE + "/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("tessel:structured_output_mask_seconds_sum") or line.startswith("tessel:structured_output_mask_seconds_count"):
            values[line.split("{")[0].rsplit("_", 1)[1]] = float(line.rsplit(" ", 1)[1])
    return values.get("sum", 0.0), values.get("count", 0.0)


def load(constrained, index):
    body = {"messages": [{"role": "user", "content": f"Describe person number {index} in detail as JSON."}],
            "max_tokens": TOKENS, "temperature": 0.8, "seed": index}
    if constrained:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    else:
        body["ignore_eos"] = True
    return post("/v1/chat/completions", body)["usage"]["completion_tokens"]


def run(constrained):
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(STREAMS) as pool:
        tokens = sum(pool.map(lambda i: load(constrained, i), range(STREAMS)))
    return tokens / (time.perf_counter() - started), tokens


post("/v1/chat/completions", {"messages": [{"role": "user", "content": "warm up"}], "max_tokens": 4,
                              "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}})
rates = {False: [], True: []}
mask_sum = mask_count = 0.0
for _ in range(RUNS):
    for constrained in (False, True):
        before = mask_seconds()
        rate, _ = run(constrained)
        after = mask_seconds()
        rates[constrained].append(rate)
        if constrained:
            mask_sum += after[0] - before[0]
            mask_count += after[1] - before[1]
plain, schema = statistics.median(rates[False]), statistics.median(rates[True])
print(f"{STREAMS} streams x up to {TOKENS} tokens, median of {RUNS} runs (alternated):")
print(f"  free text   : {plain:7.1f} tok/s  (runs: {', '.join(f'{r:.1f}' for r in rates[False])})")
print(f"  json_schema : {schema:7.1f} tok/s  (runs: {', '.join(f'{r:.1f}' for r in rates[True])})  ratio {schema / plain:.2f}")
if mask_count:
    print(f"  router mask time: {mask_count:.0f} masks, mean {mask_sum / mask_count * 1e6:.1f} µs, total {mask_sum:.2f} s")
