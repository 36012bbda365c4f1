"""A Transformer on Python source code, trained from a token store (a CPU recipe).

The corpus is the top-level modules of this Python's standard library (each file a
document, about 200 of them: nothing downloaded), tokenized once into a token store
with a SentencePiece model of 4,096 pieces that `jaxgen data prepare` trains first from
the train split; training then reads the store by memory map. The model is the CPU
Shakespeare recipe's shape (4 layers, 4 heads, 128 wide) at context 128, packed
documents.

  jaxgen data prepare --config=configs/python_code_cpu.py --out=stores/pycode --vocab_size=4096
  jaxgen train --config=configs/python_code_cpu.py --config.data.source=store:stores/pycode \
    --workdir=runs/pycode
"""

import sysconfig

from jaxgen import config as base


def get_config():
  c = base.base_config()
  c.data.source = f"text:{sysconfig.get_paths()['stdlib']}/*.py"
  c.data.tokenizer = "sentencepiece"
  c.data.tokenizer_path = "stores/pycode_4k.model"  # trained by the prepare above
  c.data.mode = "pack"
  c.data.seq_len = 128
  c.model = base.transformer_model()
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.embed_dim = 128
  c.model.dropout = 0.0
  c.train.steps = 2000
  c.train.batch_size = 16
  c.train.learning_rate = 1e-3
  c.train.min_learning_rate = 1e-4
  c.train.warmup_steps = 100
  c.train.b2 = 0.99
  c.eval.every_steps = 250
  c.eval.steps = 20
  c.sample.prompt = "def "
  return c
