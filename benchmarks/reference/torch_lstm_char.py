"""PyTorch reference: a 2-layer character LSTM on tiny Shakespeare (CPU).

Model: nn.Embedding(vocab, 256) -> nn.LSTM(256, 256, num_layers=2,
batch_first=True) -> nn.Linear(256, vocab), PyTorch default initialisation,
zero initial state for every batch. Data handling is the same as the nanoGPT
reference next to it (torch_gpt_char.py): character vocabulary = sorted set of
the whole file, first 90% train / last 10% val, random batches drawn with
torch.randint over len(data) - context. Training: context 64, batch 32, Adam
(lr 2e-3, cosine decay to 2e-4 over 2000 steps, no warm-up), grad-norm clip
1.0, 2000 steps, float32, seed 1337; evaluation on 20 random train and val
batches every 250 steps, at step 0 and after the last step.

It is used to compare jaxgen's CPU training speed and loss side by side with a
plain PyTorch baseline. Run it (from the repo root) with::

    python benchmarks/reference/torch_lstm_char.py
    # short smoke run:
    python benchmarks/reference/torch_lstm_char.py --max_iters=40 --eval_interval=20 --eval_iters=2

It needs PyTorch (``pip install torch``; on a CPU-only machine use the CPU
wheel), which jaxgen itself does not depend on. The last line printed is one
JSON object with the timings and losses.
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


class CharLSTM(nn.Module):
    def __init__(self, vocab_size, d=256, num_layers=2):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d)
        self.lstm = nn.LSTM(d, d, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(d, vocab_size)

    def forward(self, idx, targets):
        h, _ = self.lstm(self.embed(idx))
        logits = self.head(h)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


def load_char_data(path):
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

    batch_size, block_size = 32, 64
    learning_rate, min_lr, lr_decay_iters = 2e-3, 2e-4, args.lr_decay_iters
    grad_clip = 1.0
    max_iters, eval_interval, eval_iters = args.max_iters, args.eval_interval, args.eval_iters

    torch.manual_seed(1337)
    torch.set_num_threads(args.threads)

    t_setup = time.perf_counter()
    train_data, val_data, vocab_size = load_char_data(args.data)
    print(f"vocab size {vocab_size}, train {len(train_data):,} chars, val {len(val_data):,} chars")
    model = CharLSTM(vocab_size)
    print(f"number of parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M")
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
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

    def get_lr(it):  # cosine from learning_rate to min_lr over lr_decay_iters, no warm-up
        if it >= lr_decay_iters:
            return min_lr
        coeff = 0.5 * (1.0 + math.cos(math.pi * it / lr_decay_iters))
        return min_lr + coeff * (learning_rate - min_lr)

    best_val_loss = float("inf")
    final_val_loss = None
    step_ms = []
    X, Y = get_batch("train")
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
        X, Y = get_batch("train")
        loss.backward()
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
        "impl": "torch-lstm",
        "steps": len(step_ms),
        "wall_s": round(wall_s, 3),
        "setup_s": round(setup_s, 3),
        "final_val_loss": round(final_val_loss, 4),
        "best_val_loss": round(best_val_loss, 4),
        "step_ms_median": round(med, 3),
        "steps_per_s": round(1000.0 / med, 3) if step_ms else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
