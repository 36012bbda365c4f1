"""Hugging Face transformers' GPT-2 `generate` as the decoding benchmark's peer.

Optional: needs `pip install torch transformers`, which jaxgen does not depend
on. The peer is a randomly initialised `GPT2LMHeadModel` of the recipe's
shape (layers, heads, width, MLP width, context and padded vocabulary), run
with its own key/value cache (`use_cache=True`) and `min_new_tokens` equal to
`max_new_tokens`, so it never stops early.

It runs in a child process started without the benchmark's glibc malloc
settings (`jaxgen.host`): they help XLA but made torch 3-10x slower here,
and the peer should run as its users run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np


def gpt2_peer(model_cfg, threads: int):
  """(peer, None) for a GPT-2-shaped Transformer config, or (None, why not)."""
  if not hasattr(model_cfg, "num_heads"):
    return None, "skipped: transformers has no GPT-2 counterpart of an LSTM"
  if model_cfg.position != "learned" or model_cfg.mlp != "gelu" or model_cfg.norm != "layernorm":
    return None, "skipped: only GPT-2-style models (learned positions, GELU, LayerNorm) have a peer"
  shape = dict(vocab_size=model_cfg.vocab_size, n_positions=model_cfg.max_len,
               n_embd=model_cfg.embed_dim, n_layer=model_cfg.num_layers,
               n_head=model_cfg.num_heads, n_inner=model_cfg.mlp_width,
               dtype=np.dtype(model_cfg.dtype).name, threads=threads)
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env["USE_TF"] = "0"  # transformers would otherwise import TensorFlow where it is installed
  child = subprocess.Popen([sys.executable, __file__, json.dumps(shape)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, env=env)
  hello = json.loads(child.stdout.readline())
  if "error" in hello:
    child.wait()
    return None, f"skipped: {hello['error']}"
  return _Peer(child, hello["description"]), None


class _Peer:
  """The parent's handle: sends prompts, gets back the seconds each call took."""

  def __init__(self, child, description):
    self.child, self.description = child, description

  def generate(self, prompt_BP: np.ndarray, new_tokens: int, beam_size: int = 0) -> float:
    """Seconds for greedy (or beam) continuations of the prompt rows by `new_tokens`."""
    request = {"prompt": np.asarray(prompt_BP).tolist(), "new_tokens": new_tokens,
               "beam_size": beam_size}
    self.child.stdin.write(json.dumps(request) + "\n")
    self.child.stdin.flush()
    return json.loads(self.child.stdout.readline())["seconds"]


def _serve(shape: dict) -> None:
  try:
    import torch
    import transformers
  except ImportError as e:
    print(json.dumps({"error": f"{e.name} is not installed (pip install torch transformers)"}),
          flush=True)
    return
  torch.set_num_threads(shape.pop("threads"))
  dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[shape.pop("dtype")]
  last = shape["vocab_size"] - 1  # a padded id: stands in for eos and pad
  config = transformers.GPT2Config(**shape, activation_function="gelu_new", bos_token_id=last,
                                   eos_token_id=last, pad_token_id=last)
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(config).to(dtype).eval()
  description = (f"transformers {transformers.__version__} GPT2LMHeadModel.generate, "
                 f"torch {torch.__version__}, "
                 f"{sum(p.numel() for p in model.parameters())} params")
  print(json.dumps({"description": description}), flush=True)
  for line in sys.stdin:
    request = json.loads(line)
    ids = torch.as_tensor(np.asarray(request["prompt"], np.int64))
    n = request["new_tokens"]
    t0 = time.perf_counter()
    with torch.inference_mode():
      model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                     min_new_tokens=n, do_sample=False,
                     num_beams=max(request["beam_size"], 1), early_stopping=False,
                     use_cache=True)
    print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


if __name__ == "__main__":
  _serve(json.loads(sys.argv[1]))
