"""Shared pieces of the Hugging Face interoperability tests (torch/transformers not imported here)."""

from __future__ import annotations

import pathlib

import jax
import numpy as np
from flax import nnx

from jaxgen import config as config_lib
from jaxgen.data.tokenizer import CharTokenizer
from jaxgen.interop import flat_params, workdir
from jaxgen.models.factory import create_model, model_config

TEXT = "the quick brown fox jumps over the lazy dog.\nTHE END: 0123456789, ok?\n"

GPT2_LAYOUT = dict(position="learned", norm="layernorm", mlp="gelu")
LLAMA_LAYOUT = dict(position="rope", norm="rmsnorm", mlp="swiglu", rope_base=500.0)


def run_config(**model):
  cfg = config_lib.base_config()
  cfg.model = config_lib.transformer_model()
  cfg.model.update(dict(num_layers=2, num_heads=4, embed_dim=32, mlp_dim=48, max_len=64,
                        **model))
  cfg.data.seq_len = 64
  return cfg


def random_workdir(path: pathlib.Path, cfg, tokenizer=None, seed: int = 0) -> pathlib.Path:
  """A workdir holding a step-0 checkpoint whose every parameter is random (biases and
  norm scales too, so a misplaced one shows), large enough that logits spread out."""
  tokenizer = tokenizer or CharTokenizer.from_text(TEXT)
  model_cfg = model_config(cfg.model, tokenizer.vocab_size, cfg.data.seq_len)
  model = create_model(model_cfg, nnx.Rngs(params=seed))
  flat = flat_params.flatten(nnx.state(model, nnx.Param), getattr(model_cfg, "scan_layers", False))
  rng = np.random.default_rng(seed)
  for name, x in flat.items():
    if name.endswith(".scale"):
      flat[name] = (1 + 0.2 * rng.standard_normal(x.shape)).astype(np.float32)
    else:
      flat[name] = (0.3 * rng.standard_normal(x.shape) / np.sqrt(max(x.shape[0], 1) ** 0.5)
                    ).astype(np.float32)
  return workdir.write(path, cfg, tokenizer, flat, origin="test")


def jaxgen_logits(wd, tokens_BT: np.ndarray, cut: bool = True) -> np.ndarray:
  """Logits of the workdir's newest checkpoint; `cut` drops the padded vocabulary."""
  from jaxgen.sample.restore import restore
  graphdef, params, _, tokenizer = restore(str(wd))
  model = nnx.merge(graphdef, params)
  logits = np.asarray(jax.jit(lambda t: model(t))(tokens_BT))
  return logits[..., :tokenizer.vocab_size] if cut else logits


def jaxgen_greedy(wd, prompt_ids: np.ndarray, n: int, **sampling) -> np.ndarray:
  from jaxgen.models.factory import context_limit
  from jaxgen.sample import decode
  from jaxgen.sample.restore import restore
  graphdef, params, cfg, tok = restore(str(wd))
  max_len = context_limit(model_config(cfg.model, tok.vocab_size, cfg.data.seq_len))
  never = tuple(sorted({tok.pad_id, tok.bos_id} - {tok.eos_id}))
  return decode.generate(graphdef, params, [prompt_ids], n, temperature=0.0,
                         vocab_size=tok.vocab_size, max_len=max_len, exclude_ids=never,
                         **sampling)[0]


def until_eos(tokens, eos: int) -> list[int]:
  tokens = list(np.asarray(tokens))
  return tokens[:tokens.index(eos)] if eos in tokens else tokens
