#!/usr/bin/python3
"""Eager PyTorch CPU baseline for issue 9's "faster than eager PyTorch" target.

The same model and training step as finemoe's standard benchmark configs
(bench/configs/dense_d512.ini, moe_e8_g1.ini, moe_e8_g16.ini with expert choice):
  GPT, d_model 512, 8 blocks, head dim 64 (8 heads), seq 256, vocab 512,
  batch 4 x 256 = 1024 tokens/step; pre-LN blocks, learned positions, untied
  head (no bias), final LayerNorm, cross-entropy (mean); attention qkv/proj
  with biases; dense FFN = ReLU MLP 4d without biases.
  MoE (expert choice): router d -> E*G without bias, fp32 softmax over the E*G
  experts; per group of 256 tokens every expert takes its top-c tokens,
  c = 256 / E; expert width 4d / G; experts as torch.bmm over
  [E*G, c*groups, d] (every expert has exactly c*groups rows, so no padding);
  expert output weighted by the router probability, scatter-added per token,
  then the MoE output LayerNorm (moe.output_norm = true).
  Step = zero_grad + forward + backward + AdamW (lr 1e-3, betas 0.9/0.95,
  eps 1e-8, weight decay 0.1), timed like moe-bench (data load excluded).

Prints one JSON line per run (wall and process-CPU time per step, best and
mean, tokens/s from the best step). Use /usr/bin/python3 (Debian python3-torch).

Usage: bench/pytorch_compare.py [--ffn dense|moe] [--G 1] [--threads 1]
         [--precision fp32|bf16] [--steps 5] [--warmup 2] [--foreach 0|1]
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class MoE(nn.Module):
    """Expert-choice MoE with E*G experts of width d_ff/G."""

    def __init__(self, d, d_ff, E, G, group):
        super().__init__()
        self.EG, self.de, self.group = E * G, d_ff // G, group
        self.cap = max(1, group // E)  # = G*group/(E*G), as Config::expert_capacity
        self.router = nn.Linear(d, self.EG, bias=False)
        self.w1 = nn.Parameter(torch.randn(self.EG, d, self.de) * 0.02)
        self.w2 = nn.Parameter(torch.randn(self.EG, self.de, d) * 0.02)
        self.norm = nn.LayerNorm(d)

    def forward(self, x):  # x [N, d]
        N, d = x.shape
        groups = N // self.group
        # Router in fp32 even under autocast (SCIENCE.md: router stays fp32).
        with torch.autocast("cpu", enabled=False):
            probs = F.softmax(F.linear(x.float(), self.router.weight), dim=-1)  # [N, EG]
        pg = probs.view(groups, self.group, self.EG).transpose(1, 2)  # [groups, EG, S]
        w, idx = torch.topk(pg, self.cap, dim=-1)  # [groups, EG, c]
        tok = idx + (torch.arange(groups).view(groups, 1, 1) * self.group)
        tok = tok.permute(1, 0, 2).reshape(self.EG, groups * self.cap)  # [EG, c*groups]
        w = w.permute(1, 0, 2).reshape(self.EG, groups * self.cap, 1)
        xe = x[tok]  # [EG, c*groups, d]
        h = F.relu(torch.bmm(xe, self.w1))
        y = torch.bmm(h, self.w2)
        y = y.float() * w
        out = torch.zeros(N, d, dtype=y.dtype).index_add_(0, tok.reshape(-1), y.reshape(-1, d))
        return self.norm(out)


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        d = a.d_model
        self.nh = d // a.head_dim
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=True)
        self.proj = nn.Linear(d, d, bias=True)
        self.ln2 = nn.LayerNorm(d)
        if a.ffn == "dense":
            self.fc = nn.Linear(d, 4 * d, bias=False)
            self.fc2 = nn.Linear(4 * d, d, bias=False)
            self.moe = None
        else:
            self.moe = MoE(d, 4 * d, a.E, a.G, a.group)
        self.register_buffer("mask", torch.ones(a.seq, a.seq, dtype=torch.bool).tril(), persistent=False)

    def attn(self, x):  # x [B, T, d]
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q = q.view(B, T, self.nh, -1).transpose(1, 2)
        k = k.view(B, T, self.nh, -1).transpose(1, 2)
        v = v.view(B, T, self.nh, -1).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))
        att = att.masked_fill(~self.mask[:T, :T], float("-inf"))
        att = F.softmax(att.float(), dim=-1).to(v.dtype)
        y = (att @ v).transpose(1, 2).reshape(B, T, d)
        return self.proj(y)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        h = self.ln2(x)
        if self.moe is None:
            return x + self.fc2(F.relu(self.fc(h)))
        B, T, d = h.shape
        return x + self.moe(h.reshape(B * T, d)).view(B, T, d).to(x.dtype)


class GPT(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.wte = nn.Embedding(a.vocab, a.d_model)
        self.wpe = nn.Embedding(a.seq, a.d_model)
        self.blocks = nn.ModuleList([Block(a) for _ in range(a.blocks)])
        self.ln_f = nn.LayerNorm(a.d_model)
        self.head = nn.Linear(a.d_model, a.vocab, bias=False)

    def forward(self, idx, tgt):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(B * T, -1), tgt.view(-1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ffn", default="dense", choices=["dense", "moe"])
    p.add_argument("--E", type=int, default=8)
    p.add_argument("--G", type=int, default=1)
    p.add_argument("--group", type=int, default=256)
    p.add_argument("--d_model", type=int, default=512)
    p.add_argument("--head_dim", type=int, default=64)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--foreach", type=int, default=1, help="AdamW foreach (multi-tensor) implementation")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(1234)
    model = GPT(a)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1, foreach=bool(a.foreach))
    g = torch.Generator().manual_seed(1)
    N = a.batch * a.seq
    walls, cpus, losses = [], [], []
    for s in range(a.warmup + a.steps):
        idx = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
        tgt = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
        c0, t0 = time.process_time(), time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = model(idx, tgt)
        loss.backward()
        opt.step()
        t1, c1 = time.perf_counter(), time.process_time()
        losses.append(loss.item())
        if s >= a.warmup:
            walls.append(t1 - t0)
            cpus.append(c1 - c0)
    best_wall, best_cpu = min(walls), min(cpus)
    # Same rule as moe-bench: with one thread the best step in CPU time (other
    # processes cannot inflate it); with more threads the best wall-clock step.
    best = best_cpu if a.threads == 1 else best_wall
    out = {
        "impl": "pytorch_eager", "torch": torch.__version__, "ffn": a.ffn,
        "E": a.E if a.ffn == "moe" else None, "G": a.G if a.ffn == "moe" else None,
        "precision": a.precision, "threads": a.threads, "adamw_foreach": bool(a.foreach),
        "tokens_per_step": N, "params": sum(q.numel() for q in model.parameters()),
        "ms_per_step_mean_wall": 1e3 * sum(walls) / len(walls), "ms_per_step_best_wall": 1e3 * best_wall,
        "ms_per_step_best_cpu": 1e3 * best_cpu, "best_basis": "cpu" if a.threads == 1 else "wall",
        "tokens_per_s_best": N / best, "first_loss": losses[0], "last_loss": losses[-1],
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "steps": a.steps, "warmup": a.warmup,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
