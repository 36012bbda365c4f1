"""Llama-style 1.1B: 16 layers, 2048 wide, 32 query heads sharing 8 key/value heads,
SwiGLU MLP 8192 wide, RMSNorm, rotary positions, untied output head, context 2048.

Llama 3.2 1B's shape with a 32,000-token vocabulary (Llama 2's size, already a
multiple of 128): 1,104,218,112 parameters. bf16 compute with fp32 master
weights; layers are scanned (one compiled block) and rematerialised in the
backward pass, so activations hold one layer's internals at a time.

Check the run before paying for the chips, then train (the char-level
Shakespeare source stands in until a sub-word tokenizer and corpus are set):

  jaxgen plan --config=configs/llama_1b.py --devices=1 --chip=h200
  jaxgen plan --config=configs/llama_1b.py --devices=8 --chip=h200
  jaxgen train --config=configs/llama_1b.py --workdir=runs/llama_1b
"""

from jaxgen import config as base


def get_config():
  c = base.base_config()
  c.model = base.transformer_model()
  c.model.num_layers = 16
  c.model.num_heads = 32
  c.model.num_kv_heads = 8
  c.model.embed_dim = 2048
  c.model.mlp_dim = 8192
  c.model.mlp = "swiglu"
  c.model.norm = "rmsnorm"
  c.model.position = "rope"
  c.model.tie_embeddings = False
  c.model.use_bias = False
  c.model.dropout = 0.0
  c.model.scan_layers = True
  c.model.remat = "full"
  c.model.dtype = "bfloat16"
  c.model.max_len = 2048
  c.model.vocab_size = 32000
  c.data.seq_len = 2048
  c.train.steps = 20000
  c.train.batch_size = 32
  c.train.learning_rate = 3e-4
  c.train.min_learning_rate = 3e-5
  c.train.warmup_steps = 2000
  c.train.b2 = 0.95
  c.train.weight_decay = 0.1
  c.eval.every_steps = 1000
  c.eval.steps = 20
  return c
