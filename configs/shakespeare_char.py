"""Character-level Transformer on tiny Shakespeare: nanoGPT's GPU recipe.

6 layers, 6 heads, 384 wide, context 256, batch 64, 5000 steps, dropout 0.2,
lr 1e-3 cosine to 1e-4 after 100 warm-up steps, AdamW beta2 0.99. bf16
compute with fp32 master weights on accelerators (`--config.model.dtype=float32`
for full precision).

  jaxgen train --config=configs/shakespeare_char.py --workdir=runs/shakespeare_char
"""

from jaxgen import config as base


def get_config():
  c = base.base_config()
  c.model = base.transformer_model()
  c.model.num_layers = 6
  c.model.num_heads = 6
  c.model.embed_dim = 384
  c.model.dropout = 0.2
  c.model.dtype = "bfloat16"
  c.data.seq_len = 256
  c.train.steps = 5000
  c.train.batch_size = 64
  c.train.learning_rate = 1e-3
  c.train.min_learning_rate = 1e-4
  c.train.warmup_steps = 100
  c.train.b2 = 0.99
  c.eval.every_steps = 250
  c.eval.steps = 200
  return c
