"""PyTorch reference: nanoGPT's character-level tiny-Shakespeare CPU recipe.

A compact, faithful re-implementation of nanoGPT (Andrej Karpathy, MIT
licence; model.py + train.py + data/shakespeare_char/prepare.py) for its
documented CPU run::

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False \
        --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 \
        --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 \
        --lr_decay_iters=2000 --dropout=0.0

i.e. a 4-layer, 4-head, 128-wide GPT (no biases, LayerNorm without bias, GELU
MLP 4x, learned position embedding, tied token-embedding / LM head, scaled
c_proj init, causal attention via F.scaled_dot_product_attention), AdamW with
weight decay 0.1 on >=2-D parameters only, betas (0.9, 0.99), lr 1e-3 with 100
linear warm-up iterations then cosine decay to 1e-4 at iteration 2000, grad
clip 1.0, float32, seed 1337, random batches of 12 x 64 characters, evaluation
(estimate_loss on 20 random train and val batches) every 250 iterations and at
iteration 0.

It is used to compare jaxgen's CPU training speed and loss side by side with a
well-known PyTorch baseline. Run it (from the repo root) with::

    python benchmarks/reference/torch_gpt_char.py
    # short smoke run:
    python benchmarks/reference/torch_gpt_char.py --max_iters=40 --eval_interval=20 --eval_iters=2

It needs PyTorch (``pip install torch``; on a CPU-only machine use the CPU
wheel), which jaxgen itself does not depend on. The last line printed is one
JSON object with the timings and losses.

Deviations from nanoGPT (none changes the maths):
* the data set is encoded in memory instead of via prepare.py's .bin files and
  np.memmap; the vocabulary, the 90/10 split and the torch.randint batch
  sampling are the same, so batches are identical for the same RNG state;
* exactly max_iters optimizer updates are done, with the last evaluation after
  the last update; nanoGPT's loop does one more update (at iter max_iters,
  after its final evaluation) whose result is never evaluated or used;
* no checkpointing, DDP, gradient accumulation, mixed precision, MFU
  estimate, wandb, from_pretrained or generate.
"""

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn import functional as F

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared/data/tiny_shakespeare/input.txt"


# ----------------------------------------------------------------------------- model (nanoGPT model.py)

class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPTConfig:
    def __init__(self, **kw):
        self.block_size = 64
        self.vocab_size = 65
        self.n_layer = 4
        self.n_head = 4
        self.n_embd = 128
        self.dropout = 0.0
        self.bias = False
        self.__dict__.update(kw)


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def get_num_params(self, non_embedding=True):
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets):
        b, t = idx.size()
        assert t <= self.config.block_size
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        tok_emb = self.transformer.wte(idx)
        pos_emb = self.transformer.wpe(pos)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas):
        param_dict = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        decay_params = [p for p in param_dict.values() if p.dim() >= 2]
        nodecay_params = [p for p in param_dict.values() if p.dim() < 2]
        optim_groups = [
            {"params": decay_params, "weight_decay": weight_decay},
            {"params": nodecay_params, "weight_decay": 0.0},
        ]
        print(f"num decayed parameter tensors: {len(decay_params)}, "
              f"with {sum(p.numel() for p in decay_params):,} parameters")
        print(f"num non-decayed parameter tensors: {len(nodecay_params)}, "
              f"with {sum(p.numel() for p in nodecay_params):,} parameters")
        return torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas)  # fused only on CUDA


# ----------------------------------------------------------------------------- training (nanoGPT train.py)

def load_char_data(path):
    """nanoGPT data/shakespeare_char/prepare.py, kept in memory."""
    text = Path(path).read_text(encoding="utf-8")
    chars = sorted(list(set(text)))
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = len(ids)
    return ids[: int(n * 0.9)], ids[int(n * 0.9):], len(chars)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--max_iters", type=int, default=2000)
    ap.add_argument("--eval_interval", type=int, default=250)
    ap.add_argument("--eval_iters", type=int, default=20)
    ap.add_argument("--log_interval", type=int, default=10)
    ap.add_argument("--lr_decay_iters", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    # fixed recipe (nanoGPT config/train_shakespeare_char.py + README CPU overrides)
    batch_size, block_size = 12, 64
    n_layer, n_head, n_embd, dropout, bias = 4, 4, 128, 0.0, False
    learning_rate, min_lr, warmup_iters = 1e-3, 1e-4, 100
    lr_decay_iters = args.lr_decay_iters
    weight_decay, beta1, beta2, grad_clip = 1e-1, 0.9, 0.99, 1.0
    max_iters, eval_interval, eval_iters = args.max_iters, args.eval_interval, args.eval_iters

    torch.manual_seed(1337)
    torch.set_num_threads(args.threads)

    t_setup = time.perf_counter()
    train_data, val_data, vocab_size = load_char_data(args.data)
    print(f"vocab size {vocab_size}, train {len(train_data):,} chars, val {len(val_data):,} chars")
    model = GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                          bias=bias, vocab_size=vocab_size, dropout=dropout))
    print(f"number of parameters: {model.get_num_params() / 1e6:.2f}M")
    optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2))
    setup_s = time.perf_counter() - t_setup

    def get_batch(split):
        data = train_data if split == "train" else val_data
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([data[i:i + block_size] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + block_size] for i in ix])
        return x, y

    @torch.no_grad()
    def estimate_loss():
        out = {}
        model.eval()
        for split in ["train", "val"]:
            losses = torch.zeros(eval_iters)
            for k in range(eval_iters):
                X, Y = get_batch(split)
                _, loss = model(X, Y)
                losses[k] = loss.item()
            out[split] = losses.mean().item()
        model.train()
        return out

    def get_lr(it):
        if it < warmup_iters:
            return learning_rate * (it + 1) / (warmup_iters + 1)
        if it > lr_decay_iters:
            return min_lr
        decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
        coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
        return min_lr + coeff * (learning_rate - min_lr)

    best_val_loss = float("inf")
    final_val_loss = None
    step_ms = []
    X, Y = get_batch("train")  # first batch
    t_start = time.perf_counter()
    iter_num = 0
    while True:
        lr = get_lr(iter_num)
        for group in optimizer.param_groups:
            group["lr"] = lr

        if iter_num % eval_interval == 0 or iter_num == max_iters:
            losses = estimate_loss()
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}",
                  flush=True)
            final_val_loss = losses["val"]
            best_val_loss = min(best_val_loss, losses["val"])
        if iter_num >= max_iters:
            break

        t0 = time.perf_counter()
        _, loss = model(X, Y)
        X, Y = get_batch("train")  # prefetch next batch, as nanoGPT
        loss.backward()
        if grad_clip != 0.0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        step_ms.append(dt * 1000)
        if iter_num % args.log_interval == 0:
            print(f"iter {iter_num}: loss {loss.item():.4f}, time {dt * 1000:.2f}ms", flush=True)
        iter_num += 1
    wall_s = time.perf_counter() - t_start

    med = statistics.median(step_ms) if step_ms else float("nan")
    print(json.dumps({
        "impl": "torch-nanogpt",
        "steps": len(step_ms),
        "wall_s": round(wall_s, 3),
        "setup_s": round(setup_s, 3),
        "final_val_loss": round(final_val_loss, 4),
        "best_val_loss": round(best_val_loss, 4),
        "step_ms_median": round(med, 3),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
