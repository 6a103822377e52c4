#!/usr/bin/env python3
"""Perplexity through the OpenAI API, scored the way llama.cpp's llama-perplexity scores a text
(standard library only):

  perplexity.py ours  --base-url URL --ids FILE [--ctx 512] [--chunks 16] [--bos ID]

The text's token ids (FILE: whitespace-separated, as `router tokenize --special` prints them) are
cut into chunks of `ctx` tokens, each evaluated in a fresh context (a separate request, prefix
caching off on the server); when the tokenizer adds BOS (--bos), each chunk's first token is
replaced by it, as llama-perplexity does. Only the second half of each chunk is scored: the
log-probabilities of tokens ctx/2 + 1 … ctx - 1, from /v1/completions with echo and logprobs.
PPL = exp(-mean log p) over every scored token of every chunk.

  perplexity.py llama  LOG      (the "Final estimate: PPL = …" of a llama-perplexity run)
"""
import argparse
import http.client
import json
import math
import re
import sys
import urllib.parse


def post(base, path, body):
    connection = http.client.HTTPConnection(base.hostname, base.port, timeout=600)
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    if response.status != 200:
        raise SystemExit("perplexity.py: HTTP %d: %s" % (response.status, data[:400]))
    return json.loads(data)


def ours(args):
    base = urllib.parse.urlsplit(args.base_url)
    connection = http.client.HTTPConnection(base.hostname, base.port, timeout=30)
    connection.request("GET", "/v1/models")
    model = json.loads(connection.getresponse().read())["data"][0]["id"]
    with open(args.ids) as f:
        ids = [int(word) for word in f.read().split()]
    chunks = min(args.chunks, len(ids) // args.ctx)
    if chunks < 1:
        raise SystemExit("perplexity.py: %d tokens do not fill one chunk of %d" % (len(ids), args.ctx))
    first = args.ctx // 2
    total, count = 0.0, 0
    for c in range(chunks):
        chunk = ids[c * args.ctx:(c + 1) * args.ctx]
        if args.bos is not None:
            chunk[0] = args.bos
        reply = post(base, "/v1/completions", {"model": model, "prompt": chunk, "max_tokens": 1, "temperature": 0,
                                                "echo": True, "logprobs": 0})
        logprobs = reply["choices"][0]["logprobs"]["token_logprobs"][:args.ctx]
        scored = logprobs[first + 1:args.ctx]
        total += sum(scored)
        count += len(scored)
        print("  chunk %d: running PPL %.4f" % (c + 1, math.exp(-total / count)), file=sys.stderr, flush=True)
    print(json.dumps({"ppl": math.exp(-total / count), "chunks": chunks, "scored_tokens": count}))


def llama(args):
    with open(args.log) as f:
        text = f.read()
    match = re.search(r"Final estimate: PPL = ([0-9.]+)", text)
    if not match:
        raise SystemExit("perplexity.py: no final estimate in %s" % args.log)
    print(json.dumps({"ppl": float(match.group(1))}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("ours")
    p.add_argument("--base-url", required=True)
    p.add_argument("--ids", required=True)
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--chunks", type=int, default=16)
    p.add_argument("--bos", type=int)
    p = sub.add_parser("llama")
    p.add_argument("log")
    args = parser.parse_args()
    ours(args) if args.mode == "ours" else llama(args)


if __name__ == "__main__":
    main()
