"""PyTorch reference: jaxgen's Transformer encoder-decoder recipe (translate_de_en.py).

Trains the model a jaxgen encoder-decoder config describes with torch.nn.Transformer,
on the same batches, so the two can be run side by side. It reads the same
ml_collections config file as `jaxgen train` (the same --config.* overrides), and
jaxgen's own code for everything that is not the model or the optimizer:

* data: `jaxgen.data.pairs.pairs(cfg.data, "train"/"eval")` and
  `pairs.make_pair_dataset` with the arguments `jaxgen train` passes (seed
  train.seed, data.shuffle, batch train.batch_size), so the training batches are
  jaxgen's, in jaxgen's order: source ids + eos cut to data.source_len, bos +
  target / target + eos cut to data.seq_len, the tokenizer's pad, and the loss on
  target tokens only (the batch's `weights`, one mean over the batch's targets);
* tokenizer: `jaxgen.data.tokenizer.build_tokenizer(cfg.data, ...)` (the
  SentencePiece model at data.tokenizer_path), vocabulary padded to a multiple of
  model.vocab_multiple as `jaxgen.models.factory.model_config` pads it;
* validation loss: the first eval.steps batches of one unshuffled pass over the
  validation split (batch eval.batch_size or train.batch_size), summed
  cross-entropy / summed weights, at every eval.every_steps and after the last
  step, and over the whole split at the end (eval.full_split_at_end);
* decoded metrics: greedy decoding (from bos; pad, bos and the vocabulary's
  padding ids never chosen; model.max_len - 1 new tokens, cut at the first eos)
  of the first eval.decode_examples validation pairs, sources encoded and cut by
  `pairs.encode_source`, scored by `jaxgen.train.text_metrics`
  (sacrebleu corpus chrF and BLEU, exact match), at every evaluation;
* learning rate: optax's warmup_cosine_decay_schedule as
  `jaxgen.train.optimizer.make_optimizer` builds it (0 -> train.learning_rate
  linearly over train.warmup_steps, cosine to train.min_learning_rate at
  train.decay_steps or train.steps; step 0 has learning rate 0), written out in
  Python (tests/test_torch_reference.py checks it against optax).

The model mirrors `jaxgen.models.encoder_decoder.EncoderDecoder`: a token table
shared by source and target (model.share_embeddings) that is also the output head
(model.tie_embeddings; else a separate bias-free head), no embedding scaling,
learned source and target position tables, dropout model.dropout on the
embeddings, pre-norm blocks (norm_first=True) with tanh-approximated GELU MLPs
(jax.nn.gelu's default; model.mlp_dim or 4 x wide), biases and LayerNorm biases
as model.use_bias, LayerNorm eps model.norm_eps, final LayerNorms after the
encoder and the decoder (nn.Transformer's encoder and decoder norms). Dropout is
where jaxgen has it, on the attention and MLP outputs before each residual add
(and on the embeddings); nn.Transformer's dropout on attention probabilities is
set to model.attention_dropout (0 unless the config has that key) and its
dropout after the MLP activation is removed. Init as jaxgen: normal(0.02) for
the tables, head and q/k/v and MLP input weights, normal(0.02 / sqrt(2 x layers))
for attention and MLP output weights (encoder layers for the encoder), zero
biases, unit LayerNorm scales. Masks: source padding (key padding on the
encoder's self-attention and the cross-attention), causal on the target.
The loss is the mean cross-entropy over target tokens; with train.label_smoothing
a, `F.cross_entropy(label_smoothing=a)` over the padded vocabulary (as jaxgen's),
and train.z_loss as jaxgen's; the reported losses are the plain cross-entropy.
AdamW (train.b1, b2, eps, weight_decay on matrices: what jaxgen's ndim >= 2 mask
decays, i.e. the >= 2-D tensors here and, with biases, the q/k/v biases, which are
[heads, head_dim] in jaxgen), global-norm clipping train.grad_clip.

Run from the repository root (torch is not a jaxgen dependency; the CPU wheel
is `pip install torch==2.13.0` on this machine)::

  jaxgen tokenizer train --config=configs/translate_de_en.py --vocab_size=4000  # once
  python benchmarks/reference/torch_translate.py --config=configs/translate_de_en.py
  # short side-by-side check (jaxgen's per-step losses are in WORKDIR/metrics.jsonl):
  python benchmarks/reference/torch_translate.py --config=configs/translate_de_en.py \\
      --config.train.steps=200 --config.eval.decode_examples=50 --threads=2 \\
      --metrics_jsonl=/tmp/torch_translate.jsonl
  jaxgen train --config=configs/translate_de_en.py --config.train.steps=200 \\
      --config.eval.decode_examples=50 --workdir=/tmp/tref_jax

Progress goes to stderr; the last line on stdout is one JSON object: wall_s is the
training steps' wall time (data loading included, evaluations not), eval_s all
evaluations' (loss and decoding), final_decode_s the last greedy decode's.
On a machine whose cores other jobs also use, pass --threads=1: torch's OpenMP
threads wait for each other by spinning, and 2 threads on 2 busy cores ran a
step 4-5x slower than 1 (measured 2026-11-30, load average 7.5).

Checked side by side with the short commands above (2026-11-30, 2 busy cores):
mean train loss over steps 41-50 / 91-100 / 141-150 / 191-200 was 6.92 / 5.56 /
5.13 / 4.82 here and 6.94 / 5.56 / 5.10 / 4.80 for jaxgen; validation loss at
step 200 4.394 and 4.370, chrF of 50 pairs 7.15 and 7.29; both 4,736,000 parameters.

What differs from jaxgen: the random streams (initial weights, dropout masks;
the data order is the same), float32 summation orders, and attention: the
encoder's padding queries attend to the source's tokens (jaxgen's attend to
padding only), and the target's padding queries see the source's tokens in the
cross-attention and earlier target positions; neither reaches a counted target.
Configs this does not mirror (rotary positions, RMSNorm, SwiGLU, grouped-query
attention, a head_dim other than embed_dim / num_heads, non-float32 dtypes) are
refused.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
from absl import app, flags
from ml_collections import config_flags
from torch.nn import functional as F

from jaxgen.data import pairs
from jaxgen.data.tokenizer import build_tokenizer
from jaxgen.models.factory import padded_vocab_size

# ----------------------------------------------------------------------------- model

class TorchEncoderDecoder(nn.Module):
  """jaxgen's EncoderDecoder on torch.nn.Transformer (see the module docstring)."""

  def __init__(self, m, vocab_size: int, max_len: int, max_source_len: int):
    super().__init__()
    refuse = {"model.position": (m.position, "learned"), "model.norm": (m.norm, "layernorm"),
              "model.mlp": (m.mlp, "gelu"), "model.dtype": (m.get("dtype", "float32"), "float32")}
    for key, (value, wanted) in refuse.items():
      if value != wanted:
        raise ValueError(f"{key}={value!r}: this reference only mirrors {wanted!r}")
    if m.num_kv_heads not in (0, m.num_heads):
      raise ValueError("grouped-query attention (model.num_kv_heads) is not mirrored")
    if m.head_dim not in (0, m.embed_dim // m.num_heads):
      raise ValueError("model.head_dim other than embed_dim / num_heads is not mirrored")
    d = m.embed_dim
    self.vocab_size, self.max_len, self.max_source_len = vocab_size, max_len, max_source_len
    self.share_embeddings, self.tie_embeddings = m.share_embeddings, m.tie_embeddings
    enc_layers = m.num_encoder_layers or m.num_layers
    dec_layers = m.num_layers

    self.embed = nn.Parameter(torch.empty(vocab_size, d))
    self.source_embed = None if m.share_embeddings else nn.Parameter(torch.empty(vocab_size, d))
    self.source_pos_embed = nn.Parameter(torch.empty(max_source_len, d))
    self.pos_embed = nn.Parameter(torch.empty(max_len, d))
    self.embed_dropout = nn.Dropout(m.dropout)
    with warnings.catch_warnings():  # norm_first turns off nested tensors, with a warning
      warnings.simplefilter("ignore", UserWarning)
      self.transformer = nn.Transformer(
          d_model=d, nhead=m.num_heads, num_encoder_layers=enc_layers,
          num_decoder_layers=dec_layers, dim_feedforward=m.mlp_dim or 4 * d,
          dropout=m.dropout, activation=nn.GELU(approximate="tanh"),
          layer_norm_eps=float(m.get("norm_eps", 1e-5)), batch_first=True, norm_first=True,
          bias=m.use_bias)
    self.head = None if m.tie_embeddings else nn.Linear(d, vocab_size, bias=False)

    attention_dropout = float(m.get("attention_dropout", 0.0))
    for layer in self.transformer.encoder.layers:
      layer.self_attn.dropout = attention_dropout
      layer.dropout = nn.Identity()  # jaxgen has no dropout inside the MLP
      # No inference fast path (taken in eval mode with biases): it would compute
      # the exact GELU, not the tanh approximation this layer's activation is.
      layer.activation_relu_or_gelu = 0
    for layer in self.transformer.decoder.layers:
      layer.self_attn.dropout = attention_dropout
      layer.multihead_attn.dropout = attention_dropout
      layer.dropout = nn.Identity()
    self._init(enc_layers, dec_layers)

  def _init(self, enc_layers: int, dec_layers: int):
    normal = lambda p, std: nn.init.normal_(p, 0.0, std)
    for p in (self.embed, self.source_embed, self.source_pos_embed, self.pos_embed):
      if p is not None:
        normal(p, 0.02)
    if self.head is not None:
      normal(self.head.weight, 0.02)
    for layers, n in ((self.transformer.encoder.layers, enc_layers),
                      (self.transformer.decoder.layers, dec_layers)):
      out_std = 0.02 / math.sqrt(2 * n)
      for layer in layers:
        for attn in (layer.self_attn, getattr(layer, "multihead_attn", None)):
          if attn is None:
            continue
          normal(attn.in_proj_weight, 0.02)
          normal(attn.out_proj.weight, out_std)
          for b in (attn.in_proj_bias, attn.out_proj.bias):
            if b is not None:
              nn.init.zeros_(b)
        normal(layer.linear1.weight, 0.02)
        normal(layer.linear2.weight, out_std)
        for b in (layer.linear1.bias, layer.linear2.bias):
          if b is not None:
            nn.init.zeros_(b)
    # LayerNorms keep nn.LayerNorm's ones / zeros.

  def decay_groups(self, weight_decay: float) -> list[dict]:
    """jaxgen decays every parameter with ndim >= 2; its q/k/v biases are [heads,
    head_dim], here one in_proj_bias vector per attention."""
    decay, no_decay = [], []
    for name, p in self.named_parameters():
      (decay if p.dim() >= 2 or name.endswith("in_proj_bias") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]

  def encode(self, source_BS, source_pad_BS):
    """The encoder's output [B, S, D] (after its final norm)."""
    table = self.embed if self.share_embeddings else self.source_embed
    s = source_BS.shape[1]
    x = F.embedding(source_BS, table) + self.source_pos_embed[:s]
    return self.transformer.encoder(self.embed_dropout(x), src_key_padding_mask=source_pad_BS)

  def decode(self, tokens_BT, memory_BSD, source_pad_BS):
    """Logits [B, T, V] for every target position."""
    t = tokens_BT.shape[1]
    x = self.embed_dropout(F.embedding(tokens_BT, self.embed) + self.pos_embed[:t])
    causal = nn.Transformer.generate_square_subsequent_mask(t, device=x.device)
    y = self.transformer.decoder(x, memory_BSD, tgt_mask=causal, tgt_is_causal=True,
                                 memory_key_padding_mask=source_pad_BS)
    return y @ self.embed.t() if self.head is None else self.head(y)

  def forward(self, source_BS, source_pad_BS, tokens_BT):
    return self.decode(tokens_BT, self.encode(source_BS, source_pad_BS), source_pad_BS)


def jaxgen_param_count(cfg, tokenizer_vocab: int) -> int:
  """Parameters of jaxgen's model for this config (built abstractly, nothing computed)."""
  import jax
  from flax import nnx

  from jaxgen.models.factory import create_model, model_config
  source_len = cfg.data.get("source_len", 0) or cfg.data.seq_len
  model_cfg = model_config(cfg.model, tokenizer_vocab, cfg.data.seq_len, source_len)
  abstract = nnx.eval_shape(lambda: create_model(model_cfg, nnx.Rngs(params=0)))
  return sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def build_model(cfg, tokenizer_vocab: int) -> TorchEncoderDecoder:
  """The torch model for `cfg`, sized as jaxgen's factory sizes it."""
  m, d = cfg.model, cfg.data
  if m.type != "encoder_decoder":
    raise ValueError(f"model.type={m.type!r}: this reference is for 'encoder_decoder'")
  vocab = padded_vocab_size(max(tokenizer_vocab, m.get("vocab_size", 0)),
                            m.get("vocab_multiple", 128))
  source_len = d.get("source_len", 0) or d.seq_len
  return TorchEncoderDecoder(m, vocab, max_len=m.max_len or d.seq_len,
                             max_source_len=m.max_source_len or source_len)


# ----------------------------------------------------------------------------- training

def learning_rate(t, step: int) -> float:
  """optax.warmup_cosine_decay_schedule(0, lr, warmup, max(decay or steps, warmup + 1),
  min_lr) at `step` (jaxgen.train.optimizer)."""
  warmup = t.warmup_steps
  decay = max(t.get("decay_steps", 0) or t.steps, warmup + 1)
  if step < warmup:
    return t.learning_rate * step / warmup
  frac = min(step - warmup, decay - warmup) / (decay - warmup)
  return t.min_learning_rate + (t.learning_rate - t.min_learning_rate) * 0.5 * (
      1.0 + math.cos(math.pi * frac))


def to_torch(batch: dict) -> dict:
  out = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}
  for k in ("source", "inputs", "targets"):
    out[k] = out[k].long()
  out["source_pad"] = out["source_segment_ids"] == 0
  out["weights"] = out["weights"].float()
  return out


def losses(logits_BTV, targets_BT, weights_BT, denom, label_smoothing=0.0, z_loss=0.0):
  """(loss to minimise, plain mean cross-entropy), each a weighted sum / denom."""
  logits = logits_BTV.float().reshape(-1, logits_BTV.shape[-1])
  targets, weights = targets_BT.reshape(-1), weights_BT.reshape(-1)
  loss_tok = F.cross_entropy(logits, targets, reduction="none", label_smoothing=label_smoothing)
  if label_smoothing:
    with torch.no_grad():
      ce = (F.cross_entropy(logits, targets, reduction="none") * weights).sum() / denom
  loss = (loss_tok * weights).sum() / denom
  if not label_smoothing:
    ce = loss.detach()
  if z_loss:
    loss = loss + z_loss * (torch.logsumexp(logits, -1).square() * weights).sum() / denom
  return loss, ce


def micro_batches(batch: dict, n: int):
  """jaxgen's grad accumulation split: row i of micro-batch m is row i*n + m."""
  if n == 1:
    yield batch
    return
  for m in range(n):
    yield {k: v[m::n] for k, v in batch.items()}


@torch.no_grad()
def validation_loss(model, batches) -> float:
  model.eval()
  total = count = 0.0
  for b in batches:
    logits = model(b["source"], b["source_pad"], b["inputs"])
    denom = max(float(b["weights"].sum()), 1.0)
    _, ce = losses(logits, b["targets"], b["weights"], denom)
    total += float(ce) * denom
    count += denom
  model.train()
  return total / count


@torch.no_grad()
def greedy_decode(model, tokenizer, sources, source_len: int, max_new: int,
                  batch_rows: int = 64) -> list[str]:
  """jaxgen's conditional.generate_from_sources at temperature 0, with truncate=True."""
  model.eval()
  never = torch.tensor([tokenizer.pad_id, tokenizer.bos_id])
  out = []
  for start in range(0, len(sources), batch_rows):
    rows = [pairs.encode_source(tokenizer, s, source_len) for s in sources[start:start + batch_rows]]
    src = torch.zeros((len(rows), source_len), dtype=torch.long)
    pad = torch.ones((len(rows), source_len), dtype=torch.bool)
    for i, r in enumerate(rows):
      src[i, :len(r)] = torch.from_numpy(r.astype(np.int64))
      pad[i, :len(r)] = False
    memory = model.encode(src, pad)
    tokens = torch.full((len(rows), 1), tokenizer.bos_id, dtype=torch.long)
    done = torch.zeros(len(rows), dtype=torch.bool)
    for _ in range(max_new):
      logits = model.decode(tokens, memory, pad)[:, -1].float()
      logits[:, tokenizer.vocab_size:] = -math.inf
      logits[:, never] = -math.inf
      nxt = logits.argmax(-1)
      tokens = torch.cat([tokens, nxt[:, None]], 1)
      done |= nxt == tokenizer.eos_id
      if bool(done.all()):  # the rest would be cut at eos anyway
        break
    for row in tokens[:, 1:].numpy():
      ends = np.flatnonzero(row == tokenizer.eos_id)
      out.append(tokenizer.decode(row[:ends[0]] if ends.size else row))
  model.train()
  return out


def log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def main(argv):
  del argv
  cfg = _CONFIG.value
  t, d, e = cfg.train, cfg.data, cfg.eval
  if _THREADS.value:
    torch.set_num_threads(_THREADS.value)
  random.seed(t.seed)
  np.random.seed(t.seed % 2**32)
  torch.manual_seed(t.seed)
  label_smoothing = float(t.get("label_smoothing", 0.0))
  z_loss = float(t.get("z_loss", 0.0))
  accum = t.get("grad_accum_steps", 1)

  t_setup = time.perf_counter()
  if not pairs.is_paired(d):
    raise ValueError(f"data.source={d.source!r} is not a paired source")
  train_pairs, eval_pairs = pairs.train_and_eval(d)
  tokenizer = build_tokenizer(d, lambda: pairs.vocabulary_texts(train_pairs, eval_pairs))
  source_len = d.get("source_len", 0) or d.seq_len
  data = lambda items, **kw: pairs.make_pair_dataset(
      items, tokenizer, source_len=source_len, target_len=d.seq_len, prefetch=d.prefetch, **kw)
  train_iter = iter(data(train_pairs, batch_size=t.batch_size, seed=t.seed, shuffle=d.shuffle))
  evaluating = bool(e.every_steps and e.steps)
  eval_batch = e.batch_size or t.batch_size
  eval_batches, full_batches, decode_pairs = [], [], []
  if evaluating:
    # The same first eval.steps batches of one unshuffled pass at every evaluation.
    full_batches = [to_torch(b) for b in data(eval_pairs, batch_size=eval_batch, seed=0,
                                               shuffle=False, repeat=False)]
    eval_batches = full_batches[:e.steps]
    decode_pairs = list(eval_pairs[:min(e.decode_examples, len(eval_pairs))])

  model = build_model(cfg, tokenizer.vocab_size)
  params = sum(p.numel() for p in model.parameters())
  jax_params = jaxgen_param_count(cfg, tokenizer.vocab_size) if _JAXGEN_PARAMS.value else None
  log(f"torch_translate: {params:,} parameters (jaxgen's model: "
      f"{'not counted' if jax_params is None else f'{jax_params:,}'}); vocabulary "
      f"{tokenizer.vocab_size} padded to {model.vocab_size}; {len(train_pairs)} train / "
      f"{len(eval_pairs)} validation pairs; {torch.get_num_threads()} threads")
  optimizer = torch.optim.AdamW(model.decay_groups(t.weight_decay), lr=0.0, betas=(t.b1, t.b2),
                                eps=t.eps)
  setup_s = time.perf_counter() - t_setup

  metrics_file = open(_METRICS.value, "w", encoding="utf-8") if _METRICS.value else None
  evals = []
  decode_s = eval_s = 0.0
  train_s = 0.0
  tokens_per_step = t.batch_size * d.seq_len
  last_log, last_log_time = 0, time.perf_counter()
  ce = float("nan")
  model.train()
  for step in range(t.steps):
    t0 = time.perf_counter()
    batch = to_torch(next(train_iter))
    lr = learning_rate(t, step)
    for group in optimizer.param_groups:
      group["lr"] = lr
    denom = max(float(batch["weights"].sum()), 1.0)
    ce_sum = 0.0
    for mb in micro_batches(batch, accum):
      logits = model(mb["source"], mb["source_pad"], mb["inputs"])
      loss, mb_ce = losses(logits, mb["targets"], mb["weights"], denom, label_smoothing, z_loss)
      loss.backward()
      ce_sum += float(mb_ce)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(
        model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf")))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    ce = ce_sum
    train_s += time.perf_counter() - t0
    if not math.isfinite(ce):
      raise RuntimeError(f"training diverged at step {step + 1}: train_loss={ce}")
    if metrics_file:
      metrics_file.write(json.dumps({"step": step + 1, "train_loss": ce, "learning_rate": lr,
                                     "grad_norm": grad_norm}) + "\n")
    last_step = step + 1 == t.steps
    if (step + 1) % t.log_every == 0 or last_step:
      now = time.perf_counter()
      rate = tokens_per_step * (step + 1 - last_log) / max(now - last_log_time, 1e-9)
      log(f"step {step + 1}/{t.steps} | train_loss {ce:.4f} | lr {lr:.3g} | "
          f"grad_norm {grad_norm:.3f} | {rate:,.0f} tok/s")
    if evaluating and ((step + 1) % e.every_steps == 0 or last_step):
      t1 = time.perf_counter()
      record = {"step": step + 1, "val_loss": validation_loss(model, eval_batches)}
      if decode_pairs:
        t2 = time.perf_counter()
        from jaxgen.train.text_metrics import text_metrics  # jaxgen's sacrebleu scoring
        outputs = greedy_decode(model, tokenizer, [s for s, _ in decode_pairs], source_len,
                                model.max_len - 1)
        scores = text_metrics(outputs, [ref for _, ref in decode_pairs])
        record.update({f"val_{k}": v for k, v in scores.items()})
        decode_s = time.perf_counter() - t2
        record["sample"] = f"{decode_pairs[0][0]} -> {outputs[0]}"
      if last_step and e.get("full_split_at_end", False):
        record["val_loss_full_split"] = validation_loss(model, full_batches)
      eval_s += time.perf_counter() - t1
      evals.append(record)
      log("eval " + " | ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in record.items()))
      if metrics_file:
        metrics_file.write(json.dumps(record) + "\n")
    if (step + 1) % t.log_every == 0 or last_step:
      last_log, last_log_time = step + 1, time.perf_counter()
  if metrics_file:
    metrics_file.close()
  close = getattr(train_iter, "close", None)
  if close is not None:
    close()

  final = evals[-1] if evals else {}
  print(json.dumps({
      "framework": "torch",
      "torch": torch.__version__,
      "threads": torch.get_num_threads(),
      "params": params,
      "jaxgen_params": jax_params,
      "steps": t.steps,
      "wall_s": round(train_s, 3),
      "eval_s": round(eval_s, 3),
      "final_decode_s": round(decode_s, 3),
      "setup_s": round(setup_s, 3),
      "tokens_per_s": round(tokens_per_step * t.steps / train_s, 1) if train_s else None,
      "final_train_loss": round(ce, 4),
      "val_loss": final.get("val_loss"),
      "val_loss_full_split": final.get("val_loss_full_split"),
      "val_chrf": final.get("val_chrf"),
      "val_bleu": final.get("val_bleu"),
      "val_exact_match": final.get("val_exact_match"),
      "decode_examples": len(decode_pairs),
      "evals": [{k: v for k, v in r.items() if k != "sample"} for r in evals],
  }), flush=True)


def define_flags() -> None:
  """The command line: absl flags, defined only when run as a script (the test imports
  this module alongside jaxgen's own `--config`)."""
  global _CONFIG, _THREADS, _METRICS, _JAXGEN_PARAMS
  _CONFIG = config_flags.DEFINE_config_file("config", None, "jaxgen recipe file.",
                                            lock_config=True)
  _THREADS = flags.DEFINE_integer("threads", None, "torch.set_num_threads; default: torch's.")
  _METRICS = flags.DEFINE_string("metrics_jsonl", None, "Also write each step's train_loss and "
                                 "learning_rate here, one JSON line a step (as jaxgen's "
                                 "metrics.jsonl).")
  _JAXGEN_PARAMS = flags.DEFINE_bool("jaxgen_params", True, "Count the parameters of jaxgen's "
                                     "model for this config too (builds it abstractly).")


if __name__ == "__main__":
  define_flags()
  app.run(main)
