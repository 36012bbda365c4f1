"""Text from a trained workdir: restore what sampling needs, then generate.

`generate_text` is the notebook API; `jaxgen sample` calls it.
"""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
import numpy as np
from jax.sharding import SingleDeviceSharding

from jaxgen.data.tokenizer import load_tokenizer
from jaxgen.errors import UserError
from jaxgen.models.factory import context_limit, model_config
from jaxgen.sample.decode import generate
from jaxgen.train.checkpoint import Checkpointer
from jaxgen.train.optimizer import make_optimizer
from jaxgen.train.state import abstract_train_state


def generate_text(workdir: str, prompt: str = "", *, max_new_tokens: int = 200,
                  temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  num_samples: int = 1, seed: int = 0) -> list[str]:
  """`num_samples` continuations of `prompt` from the newest checkpoint in `workdir`."""
  _check_options(temperature, top_k, top_p, max_new_tokens, num_samples)
  wd = pathlib.Path(workdir).expanduser()
  for name in ("config.json", "tokenizer.json"):
    if not (wd / name).is_file():
      raise UserError(f"{wd} holds no trained run ({name} is missing); pass the --workdir "
                      "of a `jaxgen train` run")
  cfg = ml_collections.ConfigDict(json.loads((wd / "config.json").read_text()))
  tokenizer = load_tokenizer(wd / "tokenizer.json")
  model_cfg = model_config(cfg.model, tokenizer.vocab_size, cfg.data.seq_len)
  # An empty prompt starts from the first vocabulary entry (a newline in
  # character vocabularies built from text with line breaks).
  prompt_ids = tokenizer.encode(prompt) if prompt else np.zeros((1,), np.int32)
  max_len = context_limit(model_cfg)
  if max_len is not None and len(prompt_ids) >= max_len:
    raise UserError(f"the prompt is {len(prompt_ids)} tokens but the model's context is "
                    f"{max_len}; shorten the prompt")
  ckpt = Checkpointer(wd, read_only=True)
  try:
    if ckpt.latest_step() is None:
      raise UserError(f"{wd / 'checkpoints'} holds no complete checkpoint; train first "
                      "(checkpoints are written every checkpoint.every_steps and at the end)")
    graphdef, abstract = abstract_train_state(model_cfg, make_optimizer(cfg.train)[0])
    params = ckpt.restore(abstract, SingleDeviceSharding(jax.devices()[0])).params
  finally:
    ckpt.close()

  batch = np.repeat(prompt_ids[None, :], num_samples, axis=0)
  tokens = generate(graphdef, params, batch, max_new_tokens, seed=seed, temperature=temperature,
                    top_k=top_k, top_p=top_p, vocab_size=tokenizer.vocab_size, max_len=max_len)
  return [prompt + tokenizer.decode(row) for row in tokens]


def _check_options(temperature, top_k, top_p, max_new_tokens, num_samples):
  if temperature < 0:
    raise UserError(f"--temperature={temperature} is negative; use 0 (greedy) or more")
  if not 0 < top_p <= 1:
    raise UserError(f"--top_p={top_p} is outside (0, 1]; 1 turns nucleus sampling off")
  if top_k < 0:
    raise UserError(f"--top_k={top_k} is negative; use 0 (off) or a positive count")
  if max_new_tokens < 1 or num_samples < 1:
    raise UserError("--max_new_tokens and --num_samples must be at least 1")
