"""LSTM encoder-decoder with attention that reverses strings: synthetic:reverse, on a CPU.

Sources of 1-16 letters from a..z, targets the same letters reversed; a
character vocabulary. A bidirectional 1-layer 128-wide encoder, a 1-layer
decoder with Luong attention and input feeding; greedy validation exact
match reaches 0.99 within a few minutes on two cores (benchmarks/RESULTS.md).

  jaxgen train --config=configs/lstm_attention_reverse.py --workdir=runs/lstm_reverse
  jaxgen sample --workdir=runs/lstm_reverse --source=abcdef --temperature=0
"""

from jaxgen import config as base


def get_config():
  c = base.base_config()
  c.model = base.lstm_attention_model()
  c.model.num_layers = 1
  c.model.num_encoder_layers = 1
  c.model.embed_dim = 64
  c.model.hidden_size = 128
  c.model.bidirectional = True
  c.model.attention = "luong"
  c.data.source = "synthetic:reverse"
  c.data.tokenizer = "char"
  c.data.synthetic_min_len = 1
  c.data.synthetic_max_len = 16
  c.data.seq_len = 18
  c.data.source_len = 18
  c.train.steps = 1500
  c.train.batch_size = 64
  c.train.learning_rate = 3e-3
  c.train.min_learning_rate = 1e-4
  c.train.warmup_steps = 100
  c.train.b2 = 0.99
  c.train.weight_decay = 0.0
  c.eval.every_steps = 500
  c.eval.steps = 4
  c.eval.decode_examples = 500
  c.checkpoint.every_steps = 500
  c.sample.temperature = 0.0
  return c
