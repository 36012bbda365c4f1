"""GPT-2 small (124M): 12 layers, 12 heads, 768 wide, context 1024, no biases.

For throughput work on accelerators: vocabulary 50304 (50257 padded to a
multiple of 128), bf16 compute, fp32 master weights, cuDNN attention where
available. The char-level Shakespeare source stands in until a sub-word
tokenizer and a larger corpus are configured.

  python benchmarks/train_throughput.py --config=configs/gpt2_124m.py --vocab_size=50257
  jaxgen train --config=configs/gpt2_124m.py --workdir=runs/gpt2
"""

from jaxgen import config as base


def get_config():
  c = base.base_config()
  c.model = base.transformer_model()
  c.model.num_layers = 12
  c.model.num_heads = 12
  c.model.embed_dim = 768
  c.model.use_bias = False
  c.model.dropout = 0.0
  c.model.dtype = "bfloat16"
  c.model.max_len = 1024
  c.model.vocab_size = 50304  # GPT-2's 50257 rounded up to a multiple of 128
  c.data.seq_len = 1024
  c.train.steps = 5000
  c.train.batch_size = 16
  c.train.learning_rate = 6e-4
  c.train.min_learning_rate = 6e-5
  c.train.warmup_steps = 700
  c.train.b2 = 0.95
  c.train.weight_decay = 0.1
  c.eval.every_steps = 500
  c.eval.steps = 20
  return c
