#!/usr/bin/python3
"""Same-model PyTorch-Python baseline for rlhf_bench_model: the best plain PyTorch a
user would write (eager mode, torch.inference_mode, a preallocated KV cache written in
place, last-position logits only, a cheap padding-only mask while decoding).

Implements the GPT-2-style architecture of core/model/model.cc (learned positions,
pre-LayerNorm blocks, fused QKV, tanh-GELU MLP, tied embeddings) and the same
generation loop (left-padded batch, position ids from the mask, temperature sampling),
so the ratio measures the C++ vs Python implementations of one algorithm.

Threads and BLAS: torch.set_num_threads(--threads) sizes LibTorch's OpenMP pool; matrix
products go to whatever libblas.so.3 the machine's alternatives select (Debian:
OpenBLAS's pthread build, with its own pool of one thread per core). The "ready" line
reports both, so the bench can state them. The bench runs one child per thread count
it is given and reports the fastest, so the baseline gets its best setting.

--device runs everything there (cpu, cuda, cuda:N; the C++ bench passes its own), timing
after torch.cuda.synchronize(); --train_dtype bf16 runs the train case under
torch.autocast(bfloat16), as the C++ side does.

Usage (called by the C++ bench; prints one JSON object per case on stdout):
  model_baseline.py --config '<ModelConfig JSON>' --threads 2 \
      --cases forward:1:128,generate:32:32:64
  model_baseline.py --config '...' --threads 2 --serve
      reads one case per stdin line, runs it once, answers one JSON line; the C++ bench
      uses this to interleave C++ and Python runs so both see the same machine load.
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MASKED = -1e30


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.h = c["n_heads"]
        self.dh = d // self.h
        self.ln1 = nn.LayerNorm(d, eps=c["norm_eps"])
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, eps=c["norm_eps"])
        self.fc = nn.Linear(d, c["d_ff"])
        self.proj = nn.Linear(c["d_ff"], d)

    def forward(self, x, mask, cache, layer):
        B, T, d = x.shape
        H, D = self.h, self.dh
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q = q.view(B, T, H, D).transpose(1, 2) * (1.0 / math.sqrt(D))
        k = k.view(B, T, H, D).transpose(1, 2)
        v = v.view(B, T, H, D).transpose(1, 2)
        if cache is not None:
            ks, vs, past = cache["k"][layer], cache["v"][layer], cache["len"]
            ks[:, :, past:past + T] = k
            vs[:, :, past:past + T] = v
            k, v = ks[:, :, :past + T], vs[:, :, :past + T]
        att = torch.softmax(q @ k.transpose(-1, -2) + mask, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, d)
        x = x + self.out(y)
        return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        d = c["d_model"]
        self.wte = nn.Embedding(c["vocab_size"], d)
        self.wpe = nn.Embedding(c["max_seq_len"], d)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["n_layers"]))
        self.ln_f = nn.LayerNorm(d, eps=c["norm_eps"])
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 0.02)

    def hidden(self, ids, key_mask=None, positions=None, cache=None):
        """Final hidden states (after ln_f), no unembedding: the reward model's trunk."""
        B, T = ids.shape
        dev = ids.device
        past = cache["len"] if cache is not None else 0
        Lk = past + T
        if key_mask is None:
            key_mask = torch.ones(B, Lk, dtype=torch.long, device=dev)
        if positions is None:
            positions = (key_mask.cumsum(1) - 1)[:, past:].clamp_min(0)
        if T == 1:  # decoding: every cached key is in the past; only padding is hidden
            mask = ((1 - key_mask) * MASKED).to(torch.float32)[:, None, None, :]
        else:
            qpos = torch.arange(past, Lk, device=dev)
            kpos = torch.arange(Lk, device=dev)
            visible = (kpos[None, :] <= qpos[:, None])[None] & key_mask.bool()[:, None, :]
            mask = torch.zeros(visible.shape, device=dev).masked_fill_(~visible, MASKED)[:, None]
        x = self.wte(ids) + self.wpe(positions)
        for i, blk in enumerate(self.blocks):
            x = blk(x, mask, cache, i)
        if cache is not None:
            cache["len"] = Lk
        return self.ln_f(x)

    def forward(self, ids, key_mask=None, positions=None, cache=None, last_only=False):
        h = self.hidden(ids, key_mask, positions, cache)
        if last_only:
            h = h[:, -1:]
        return h @ self.wte.weight.t()


def generate(model, prompts, max_new, temperature, seed, device="cpu"):
    c = model.c
    B = len(prompts)
    L = max(len(p) for p in prompts)
    cap = L + max_new
    ids = torch.zeros(B, L, dtype=torch.long)
    mask = torch.ones(B, cap, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, L - len(p):] = torch.tensor(p)
        mask[b, :L - len(p)] = 0
    ids, mask = ids.to(device), mask.to(device)
    next_pos = torch.tensor([len(p) for p in prompts], device=device)
    H, D = c["n_heads"], c["d_model"] // c["n_heads"]
    cache = {"k": [torch.empty(B, H, cap, D, device=device) for _ in range(c["n_layers"])],
             "v": [torch.empty(B, H, cap, D, device=device) for _ in range(c["n_layers"])],
             "len": 0}
    gen = torch.Generator(device=device).manual_seed(seed)
    logits = model(ids, mask[:, :L], None, cache, last_only=True)[:, 0]
    out, logps = [], []
    length = L
    for step in range(max_new):
        logp = torch.log_softmax(logits / temperature, dim=-1)
        tok = torch.multinomial(logp.exp(), 1, generator=gen)
        out.append(tok)
        logps.append(logp.gather(1, tok))
        if step + 1 == max_new:
            break
        length += 1
        logits = model(tok, mask[:, :length], next_pos[:, None], cache, last_only=True)[:, 0]
        next_pos = next_pos + 1
    # What the C++ side returns to its caller: ids and log-probs on the host.
    return torch.cat(out, 1).cpu(), torch.cat(logps, 1).cpu()


def loaded_blas():
    """The libblas.so.3 this process mapped (directory name, e.g. openblas-pthread)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "libblas.so" in path:
                    import os
                    return os.path.basename(os.path.dirname(os.path.realpath(path)))
    except OSError:
        pass
    return "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default="")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--min_seconds", type=float, default=1.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train_dtype", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args()
    device = torch.device(args.device)
    autocast_type = "cuda" if device.type == "cuda" else "cpu"

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c = json.loads(args.config)
    if c.get("arch", "gpt2") != "gpt2":
        raise SystemExit("model_baseline.py implements the gpt2 architecture only")
    model = GPT(c).eval().to(device)
    V = c["vocab_size"]
    g = torch.Generator().manual_seed(1)

    # The reward model: the same trunk with a scalar head, no unembedding.
    rm = GPT(c).to(device)
    rm_head = nn.Linear(c["d_model"], 1).to(device)

    def run_once(case):
        parts = case.split(":")
        kind, batch = parts[0], int(parts[1])
        if kind == "rm":  # reward-model step: rows 2i preferred over 2i+1, score at the last token
            T = int(parts[2])
            ids = torch.randint(V, (batch, T), generator=g).to(device)
            key_mask = torch.ones(batch, T, dtype=torch.long, device=device)
            sync()
            t0 = time.perf_counter()
            scores = rm_head(rm.hidden(ids, key_mask)).squeeze(-1)[:, -1]
            loss = -F.logsigmoid(scores[0::2] - scores[1::2]).mean()
            loss.backward()
            sync()
            dt = time.perf_counter() - t0
            rm.zero_grad(set_to_none=True)
            rm_head.zero_grad(set_to_none=True)
            return dt
        if kind == "ppo":  # policy step: PPO-clip on the response half, token mean
            T = int(parts[2])
            ids = torch.randint(V, (batch, T), generator=g).to(device)
            mask = torch.zeros(batch, T - 1, device=device)
            mask[:, T // 2 - 1:] = 1
            with torch.no_grad():
                blogp = F.log_softmax(model(ids)[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
                blogp += 0.05 * torch.randn(blogp.shape, generator=g).to(device)
            adv = torch.randn(batch, 1, generator=g).to(device)
            sync()
            t0 = time.perf_counter()
            logits = model(ids)
            logp = F.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            ratio = torch.exp((logp - blogp) * mask)
            per_token = torch.max(-ratio * adv, -ratio.clamp(0.8, 1.2) * adv)
            loss = (per_token * mask).sum() / mask.sum()
            loss.backward()
            sync()
            dt = time.perf_counter() - t0
            model.zero_grad(set_to_none=True)
            return dt
        if kind == "train":  # forward + next-token cross-entropy + backward
            ids = torch.randint(V, (batch, int(parts[2])), generator=g).to(device)
            sync()
            t0 = time.perf_counter()
            with torch.autocast(autocast_type, dtype=torch.bfloat16,
                                enabled=args.train_dtype == "bf16"):
                logits = model(ids)
            logits = logits.float()
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
            loss.backward()
            sync()
            dt = time.perf_counter() - t0
            model.zero_grad(set_to_none=True)
            return dt
        with torch.inference_mode():
            if kind == "forward":
                ids = torch.randint(V, (batch, int(parts[2])), generator=g).to(device)
                sync()
                t0 = time.perf_counter()
                model(ids)
                sync()
                return time.perf_counter() - t0
            P, N = int(parts[2]), int(parts[3])
            prompts = torch.randint(V, (batch, P), generator=g).tolist()
            sync()
            t0 = time.perf_counter()
            generate(model, prompts, N, 1.0, 7, device)
            return time.perf_counter() - t0

    with torch.inference_mode():
        model(torch.zeros(1, 8, dtype=torch.long, device=device))  # warm up allocator and kernels
    if args.serve:
        print(json.dumps({"ready": True, "threads": torch.get_num_threads(),
                          "blas": loaded_blas(), "device": str(device),
                          "torch": torch.__version__}), flush=True)
        for line in sys.stdin:
            case = line.strip()
            if case:
                print(json.dumps({"case": case, "seconds": run_once(case)}), flush=True)
        return
    if True:
        for case in filter(None, args.cases.split(",")):
            times = []
            while not times or (sum(times) < args.min_seconds and len(times) < 5):
                times.append(run_once(case))
            print(json.dumps({"case": case, "seconds": min(times), "reps": len(times)}), flush=True)

if __name__ == "__main__":
    main()
