"""Two-layer character LSTM on tiny Shakespeare (char-rnn style), CPU-sized.

2 layers of 256, context 64, batch 32, Adam 2e-3 with cosine decay to 2e-4,
global-norm clipping 1.0, 2000 steps.

  jaxgen train --config=configs/lstm_shakespeare_char.py --workdir=runs/lstm
"""

from jaxgen import config as base


def get_config():
  c = base.base_config()
  c.model = base.lstm_model()
  c.model.num_layers = 2
  c.model.embed_dim = 256
  c.model.hidden_size = 256
  c.model.unroll = 2  # on 2 CPU cores: 2 -> 123 ms/step, 1 -> 128, 4 -> 135, 8 -> 166
  c.data.seq_len = 64
  c.train.steps = 2000
  c.train.batch_size = 32
  c.train.learning_rate = 2e-3
  c.train.min_learning_rate = 2e-4
  c.train.warmup_steps = 0
  c.train.b2 = 0.999
  c.train.weight_decay = 0.0  # plain Adam
  c.train.grad_clip = 1.0
  c.eval.every_steps = 250
  c.eval.steps = 20
  return c
