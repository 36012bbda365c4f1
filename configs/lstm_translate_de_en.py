"""German -> English translation with an LSTM encoder-decoder with attention, on a CPU.

The same data, split and SentencePiece vocabulary as configs/translate_de_en.py:
a bidirectional 1-layer encoder and a 1-layer decoder with Luong attention and
input feeding, 256 wide, dropout and label smoothing against overfitting (the
corpus is 15k pairs). Validation chrF 20.6 (BLEU 3.6), close to the
Transformer's, in 14 minutes on two cores or 22 on one (benchmarks/RESULTS.md).
From the repository root:

  jaxgen tokenizer train --config=configs/lstm_translate_de_en.py --vocab_size=4000
  jaxgen train --config=configs/lstm_translate_de_en.py --workdir=runs/lstm_de_en
  jaxgen sample --workdir=runs/lstm_de_en --source="Das ist gut." --beam_size=4
"""

from jaxgen import config as base


def get_config():
  c = base.base_config()
  c.model = base.lstm_attention_model()
  c.model.num_layers = 1
  c.model.num_encoder_layers = 1
  c.model.embed_dim = 256
  c.model.hidden_size = 256
  c.model.bidirectional = True
  c.model.attention = "luong"
  c.model.dropout = 0.3
  c.data.source = "tsv:../shared/data/ding_de_en/pairs.tsv"
  c.data.val_fraction = 0.1
  c.data.tokenizer = "sentencepiece"
  c.data.tokenizer_path = "tokenizers/ding_de_en_4k.model"
  c.data.seq_len = 28
  c.data.source_len = 28
  c.train.steps = 5000
  c.train.batch_size = 64
  c.train.learning_rate = 2e-3
  c.train.min_learning_rate = 1e-4
  c.train.warmup_steps = 200
  c.train.b2 = 0.99
  c.train.weight_decay = 0.0
  c.train.label_smoothing = 0.1
  c.eval.every_steps = 1000
  c.eval.steps = 10
  c.eval.decode_examples = 500
  c.checkpoint.every_steps = 1000
  c.sample.temperature = 0.0
  return c
