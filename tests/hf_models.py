"""Tiny random transformers models saved with save_pretrained and a byte tokenizer, for
the import tests. Imports torch and transformers: a test module imports this only after
its `pytest.importorskip` of both."""

import torch
import transformers

from jaxgen.data.tokenizer import ByteTokenizer
from jaxgen.interop.hf_tokenizer_export import tokenizer_files


VOCAB = 300  # more rows than the byte tokenizer's 259 ids, as many HF checkpoints have


_SPECIAL = dict(bos_token_id=2, eos_token_id=1)


def hf_configs():
  common = dict(vocab_size=VOCAB, **_SPECIAL)
  llama = dict(hidden_size=32, intermediate_size=48, num_attention_heads=4,
               num_hidden_layers=2, max_position_embeddings=64, rms_norm_eps=1e-6,
               rope_theta=1000.0, pad_token_id=0, **common)
  return {
      "gpt2": lambda: transformers.GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                              **common),
      "llama_gqa1_tied": lambda: transformers.LlamaConfig(num_key_value_heads=1,
                                                          tie_word_embeddings=True, **llama),
      "llama_gqa2_untied": lambda: transformers.LlamaConfig(num_key_value_heads=2,
                                                            tie_word_embeddings=False, **llama),
      "llama_gqa4_bias": lambda: transformers.LlamaConfig(
          num_key_value_heads=4, attention_bias=True, mlp_bias=True, **llama),
  }


def save_random_hf(path, name: str, max_shard_size="5GB"):
  """A transformers model with every parameter random, saved with its (byte) tokenizer."""
  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_config(hf_configs()[name]()).eval()
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=g) * 1.0 / max(p.shape[0], 1) ** 0.25)
    for name, p in model.named_parameters():
      if name.endswith("gate_proj.bias"):  # jaxgen's SwiGLU has no gate bias
        p.zero_()
  model.save_pretrained(path, max_shard_size=max_shard_size)
  for file, text in tokenizer_files(ByteTokenizer()).items():
    (path / file).write_text(text)
  return model
