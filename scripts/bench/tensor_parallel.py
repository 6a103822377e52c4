"""Decode speed of one layout of workers, over the OpenAI API: batch-1 decode (tok/s of one
stream) and the aggregate of STREAMS concurrent streams. Prints one JSON line."""
import json
import sys
import threading
import time
import urllib.request

base, tokens, streams = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
name = json.load(urllib.request.urlopen(base + "/v1/models"))["data"][0]["id"]


def complete(prompt):
    body = json.dumps({"model": name, "prompt": prompt, "max_tokens": tokens, "temperature": 0,
                       "ignore_eos": True}).encode()
    request = urllib.request.Request(base + "/v1/completions", body, {"content-type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=600))["usage"]["completion_tokens"]


complete("Warm up.")
start = time.time()
decode = complete("Once upon a time") / (time.time() - start)
counts = [0] * streams
threads = [threading.Thread(target=lambda i=i: counts.__setitem__(i, complete(f"Story number {i}:")))
           for i in range(streams)]
start = time.time()
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"decode": decode, "aggregate": sum(counts) / (time.time() - start)}))
