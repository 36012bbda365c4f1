"""A jaxgen LSTM LM as a safetensors state dict in torch.nn.LSTM naming, with its module.

transformers has no LSTM language model, so the export holds what loads it in
plain PyTorch: `model.safetensors` with the names and shapes of the module
below (`embedding.weight`, `lstm.weight_ih_l{k}` [4H, in], `lstm.weight_hh_l{k}`
[4H, H], `lstm.bias_ih_l{k}`, `lstm.bias_hh_l{k}` (zeros: jaxgen has one bias),
`head.weight` [V, H], `head.bias`), `config.json`, and `modeling_jaxgen_lstm.py`:

    from modeling_jaxgen_lstm import JaxgenLSTM
    model = JaxgenLSTM.from_pretrained("DIR")   # needs torch and safetensors
    logits, state = model(token_ids)           # [B, T, V], (h, c)

Gate order needs no permutation: jaxgen fuses (i, f, g, o), torch's order.
"""

from __future__ import annotations

import numpy as np

MODULE_FILE = "modeling_jaxgen_lstm.py"

MODULE = '''"""jaxgen's LSTM language model in PyTorch (written by `jaxgen export`)."""

import json
import os

import torch
from torch import nn


class JaxgenLSTM(nn.Module):
  """Embedding -> nn.LSTM (gate order i, f, g, o, as jaxgen) -> linear head."""

  def __init__(self, vocab_size, embed_dim, hidden_size, num_layers, **unused):
    super().__init__()
    self.embedding = nn.Embedding(vocab_size, embed_dim)
    self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True)
    self.head = nn.Linear(hidden_size, vocab_size)

  def forward(self, tokens, state=None):
    """Logits [B, T, V] for tokens [B, T] and the new (h, c); state None starts at zero."""
    out, state = self.lstm(self.embedding(tokens), state)
    return self.head(out), state

  @classmethod
  def from_pretrained(cls, directory):
    from safetensors.torch import load_file
    with open(os.path.join(directory, "config.json")) as f:
      model = cls(**json.load(f))
    index = os.path.join(directory, "model.safetensors.index.json")
    files = (sorted(set(json.load(open(index))["weight_map"].values()))
             if os.path.exists(index) else ["model.safetensors"])
    state = {}
    for file in files:
      state.update(load_file(os.path.join(directory, file)))
    model.load_state_dict(state)
    return model.eval()
'''


def convert(cfg, flat: dict[str, np.ndarray], vocab: int, special: dict
            ) -> tuple[dict, dict[str, np.ndarray], dict[str, str]]:
  """(config.json, tensors, {file: text}) for an LSTMConfig's flat params."""
  h = cfg.hidden_size
  flat = dict(flat)
  out = {"embedding.weight": flat.pop("embedding")[:vocab]}
  for k in range(cfg.num_layers):
    out[f"lstm.weight_ih_l{k}"] = flat.pop(f"layers.{k}.w_ih").T
    out[f"lstm.weight_hh_l{k}"] = flat.pop(f"layers.{k}.w_hh").T
    out[f"lstm.bias_ih_l{k}"] = flat.pop(f"layers.{k}.bias")
    out[f"lstm.bias_hh_l{k}"] = np.zeros((4 * h,), out[f"lstm.bias_ih_l{k}"].dtype)
  out["head.weight"] = flat.pop("head_w")[:, :vocab].T
  out["head.bias"] = flat.pop("head_b")[:vocab]
  if flat:
    raise ValueError(f"LSTM parameters without a torch place: {sorted(flat)}")
  config = {"model_type": "jaxgen_lstm", "architectures": ["JaxgenLSTM"],
            "vocab_size": vocab, "embed_dim": cfg.embed_dim, "hidden_size": h,
            "num_layers": cfg.num_layers, **special}
  tensors = {name: np.ascontiguousarray(x) for name, x in out.items()}
  return config, tensors, {MODULE_FILE: MODULE}
