#!/usr/bin/env python3
"""Writes a Llama GGUF with random weights in a real model's shape, for benchmarks of encodings
the default model does not use (K-quants): F16 here, then quantised with llama.cpp's
llama-quantize by scripts/bench/random-models.sh.

  make-random-llama.py OUT.gguf --tokenizer-from SMOLLM2.gguf [--shape qwen2.5-0.5b]

Shapes (hidden, layers, heads, KV heads, intermediate): qwen2.5-0.5b = 896, 24, 14, 2, 4864.
The tokenizer (and so the vocabulary size, 49152) is copied from the given GGUF, since the
network reaches no Qwen tokenizer; the embedding and LM head are therefore 49152 rows, not
Qwen's 151936. Weights are N(0, 0.02) with unit norms, seeded: every run writes the same file.
Needs numpy and gguf (pip install numpy gguf).
"""
import argparse

import numpy as np
import gguf

SHAPES = {"qwen2.5-0.5b": dict(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--tokenizer-from", required=True)
    parser.add_argument("--shape", default="qwen2.5-0.5b", choices=sorted(SHAPES))
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    source = gguf.GGUFReader(args.tokenizer_from)

    def field(name):
        f = source.fields[name]
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            if f.types[-1] == gguf.GGUFValueType.STRING:
                return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            return [f.parts[i].tolist()[0] for i in f.data]
        if f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(f.parts[f.data[0]]).decode("utf-8")
        return f.parts[f.data[0]].tolist()[0]

    tokens = field("tokenizer.ggml.tokens")
    vocab = len(tokens)
    hidden, layers, heads, kv_heads, inter = (shape[k] for k in ("hidden", "layers", "heads", "kv_heads", "intermediate"))
    head_dim = hidden // heads
    writer = gguf.GGUFWriter(args.out, "llama")
    writer.add_name("random-%s" % args.shape)
    writer.add_context_length(32768)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(inter)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(1000000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model(field("tokenizer.ggml.model"))
    writer.add_tokenizer_pre(field("tokenizer.ggml.pre"))
    writer.add_token_list(tokens)
    writer.add_token_types(field("tokenizer.ggml.token_type"))
    writer.add_token_merges(field("tokenizer.ggml.merges"))
    for key, add in [("tokenizer.ggml.bos_token_id", writer.add_bos_token_id),
                     ("tokenizer.ggml.eos_token_id", writer.add_eos_token_id),
                     ("tokenizer.ggml.padding_token_id", writer.add_pad_token_id)]:
        if key in source.fields:
            add(field(key))
    if "tokenizer.chat_template" in source.fields:
        writer.add_chat_template(field("tokenizer.chat_template"))

    rng = np.random.default_rng(20261201)

    def matrix(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    writer.add_tensor("token_embd.weight", matrix(vocab, hidden))
    for i in range(layers):
        p = "blk.%d." % i
        writer.add_tensor(p + "attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(p + "attn_q.weight", matrix(heads * head_dim, hidden))
        writer.add_tensor(p + "attn_k.weight", matrix(kv_heads * head_dim, hidden))
        writer.add_tensor(p + "attn_v.weight", matrix(kv_heads * head_dim, hidden))
        writer.add_tensor(p + "attn_output.weight", matrix(hidden, heads * head_dim))
        writer.add_tensor(p + "ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(p + "ffn_gate.weight", matrix(inter, hidden))
        writer.add_tensor(p + "ffn_up.weight", matrix(inter, hidden))
        writer.add_tensor(p + "ffn_down.weight", matrix(hidden, inter))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    writer.add_tensor("output.weight", matrix(vocab, hidden))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
