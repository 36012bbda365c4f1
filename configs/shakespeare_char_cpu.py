"""Character-level Transformer on tiny Shakespeare, sized for a laptop CPU.

nanoGPT's CPU recipe (4 layers, 4 heads, 128 wide, context 64, batch 12,
2000 steps, lr 1e-3 cosine to 1e-4 after 100 warm-up steps, AdamW beta2 0.99,
no dropout); reaches validation loss ~1.88 in about a minute on two cores.

  jaxgen train --config=configs/shakespeare_char_cpu.py --workdir=runs/sc
"""

from jaxgen import config as base


def get_config():
  c = base.base_config()
  c.model = base.transformer_model()
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.embed_dim = 128
  c.model.dropout = 0.0
  c.data.seq_len = 64
  c.train.steps = 2000
  c.train.batch_size = 12
  c.train.learning_rate = 1e-3
  c.train.min_learning_rate = 1e-4
  c.train.warmup_steps = 100
  c.train.b2 = 0.99
  c.eval.every_steps = 250
  c.eval.steps = 20
  return c
