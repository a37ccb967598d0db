"""Writes a tiny random-weight llama GGUF for the engine's fast tests, plus a numpy reference.

usage: make_tiny_gguf.py OUT_DIR
writes: OUT_DIR/tiny.gguf       2 layers, 64 wide, GQA (4 heads, 2 kv heads), a byte-level BPE
                                vocabulary with a few merges and ChatML control tokens; the
                                matrices in F32, F16, Q8_0, Q4_0 and Q4_1 (gguf.quants)
        OUT_DIR/wrong_arch.gguf the same header with general.architecture = "gpt2"
        OUT_DIR/reference.json  the token ids fed, the hidden state after each layer and the
                                last token's logits, computed in float64 from the dequantized
                                weights (the engine quantizes activations, so tests compare
                                with a tolerance)
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

EMBD, HEADS, KV_HEADS, FF, LAYERS, CTX = 64, 4, 2, 128, 2, 64
HEAD_DIM = EMBD // HEADS
EPS, ROPE_BASE = 1e-5, 10000.0


def byte_chars():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def vocab():
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [3, 3, 3]
    tokens += byte_chars()
    types += [1] * 256
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ Ġ", "r e", "Ġ s", "a n", "Ġa n"]
    for m in merges:
        a, b = m.split(" ")
        if a + b not in tokens:
            tokens.append(a + b)
            types.append(1)
    return tokens, types, merges


def store(rng, shape, qtype, scale=0.3):
    """Random weights of `shape`, quantized to `qtype`; returns (data to write, dequantized)."""
    w = (rng.standard_normal(shape) * scale).astype(np.float32)
    if qtype == Q.F32:
        return w, w.astype(np.float64)
    if qtype == Q.F16:
        h = w.astype(np.float16)
        return h, h.astype(np.float64)
    q = gguf.quants.quantize(w, qtype)
    return q, gguf.quants.dequantize(q, qtype).astype(np.float64).reshape(shape)


def rms_norm(x, w):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + EPS) * w


def rope(x, pos):
    # x: [heads, head_dim]; adjacent pairs rotate by pos * base^(-2i/d).
    out = x.copy()
    for i in range(HEAD_DIM // 2):
        theta = pos * ROPE_BASE ** (-2.0 * i / HEAD_DIM)
        c, s = np.cos(theta), np.sin(theta)
        a, b = x[:, 2 * i], x[:, 2 * i + 1]
        out[:, 2 * i] = a * c - b * s
        out[:, 2 * i + 1] = a * s + b * c
    return out


def main():
    out_dir = sys.argv[1]
    rng = np.random.default_rng(20261203)
    tokens, types, merges = vocab()
    n_vocab = len(tokens)
    layer_types = [
        dict(q=Q.F32, k=Q.F16, v=Q.Q8_0, o=Q.Q4_0, gate=Q.Q4_1, up=Q.Q8_0, down=Q.Q4_0),
        dict(q=Q.Q4_1, k=Q.Q4_0, v=Q.Q4_1, o=Q.F16, gate=Q.F32, up=Q.Q4_0, down=Q.Q4_1),
    ]
    tensors = []  # (name, data, qtype)
    ref = {}
    emb_data, emb = store(rng, (n_vocab, EMBD), Q.Q8_0, 1.0)
    tensors.append(("token_embd.weight", emb_data, Q.Q8_0))
    out_w = (rng.standard_normal((n_vocab, EMBD)) * 0.3).astype(np.float32)
    out_w[:3] = 0.0  # the control tokens' logits are 0: greedy never picks them
    out_h = out_w.astype(np.float16)
    layers = []
    for i, lt in enumerate(layer_types):
        L = {}
        for name, shape in [("q", (EMBD, EMBD)), ("k", (KV_HEADS * HEAD_DIM, EMBD)), ("v", (KV_HEADS * HEAD_DIM, EMBD)),
                            ("o", (EMBD, EMBD)), ("gate", (FF, EMBD)), ("up", (FF, EMBD)), ("down", (EMBD, FF))]:
            data, deq = store(rng, shape, lt[name], 0.3 if name != "down" else 0.15)
            gname = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
                     "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}[name]
            tensors.append((f"blk.{i}.{gname}.weight", data, lt[name]))
            L[name] = deq
        for norm in ["attn_norm", "ffn_norm"]:
            w = (1.0 + 0.1 * rng.standard_normal(EMBD)).astype(np.float32)
            tensors.append((f"blk.{i}.{norm}.weight", w, Q.F32))
            L[norm] = w.astype(np.float64)
        layers.append(L)
    out_norm = (1.0 + 0.1 * rng.standard_normal(EMBD)).astype(np.float32)
    tensors.append(("output_norm.weight", out_norm, Q.F32))
    tensors.append(("output.weight", out_h, Q.F16))

    template = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                "{{ '<|im_start|>system\\nYou are tiny<|im_end|>\\n' }}{% endif %}"
                "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

    def write(path, arch):
        w = gguf.GGUFWriter(path, arch)
        w.add_name("tiny-llama")
        w.add_block_count(LAYERS)
        w.add_context_length(CTX)
        w.add_embedding_length(EMBD)
        w.add_feed_forward_length(FF)
        w.add_head_count(HEADS)
        w.add_head_count_kv(KV_HEADS)
        w.add_rope_dimension_count(HEAD_DIM)
        w.add_rope_freq_base(ROPE_BASE)
        w.add_layer_norm_rms_eps(EPS)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(False)
        w.add_chat_template(template)
        for name, data, qtype in tensors:
            if qtype in (Q.F32, Q.F16):
                w.add_tensor(name, data)
            else:
                w.add_tensor(name, data, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    write(os.path.join(out_dir, "tiny.gguf"), "llama")
    write(os.path.join(out_dir, "wrong_arch.gguf"), "gpt2")

    # The numpy reference forward pass.
    ids = [1, 40, 72, 76, 80, 3 + 256, 90, 100, 45, 7 + 250]
    x = emb[ids]
    hidden = []
    group = HEADS // KV_HEADS
    for L in layers:
        xn = rms_norm(x, L["attn_norm"])
        q = xn @ L["q"].T
        k = xn @ L["k"].T
        v = xn @ L["v"].T
        T = len(ids)
        qs = np.stack([rope(q[t].reshape(HEADS, HEAD_DIM), t) for t in range(T)])
        ks = np.stack([rope(k[t].reshape(KV_HEADS, HEAD_DIM), t) for t in range(T)])
        vs = v.reshape(T, KV_HEADS, HEAD_DIM)
        att = np.zeros((T, HEADS, HEAD_DIM))
        for t in range(T):
            for h in range(HEADS):
                kvh = h // group
                s = ks[: t + 1, kvh] @ qs[t, h] / np.sqrt(HEAD_DIM)
                p = np.exp(s - s.max())
                p /= p.sum()
                att[t, h] = p @ vs[: t + 1, kvh]
        x = x + att.reshape(T, EMBD) @ L["o"].T
        xn = rms_norm(x, L["ffn_norm"])
        g = xn @ L["gate"].T
        u = xn @ L["up"].T
        x = x + ((g / (1 + np.exp(-g))) * u) @ L["down"].T
        hidden.append(x[-1].tolist())
    logits = rms_norm(x[-1], out_norm.astype(np.float64)) @ out_h.astype(np.float64).T
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump({"ids": ids, "hidden_last": hidden, "logits_last": logits.tolist(), "vocab": n_vocab}, f)


if __name__ == "__main__":
    main()
