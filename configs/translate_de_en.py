"""German -> English translation with a Transformer encoder-decoder, on a CPU.

The Ding dictionary's 16,503 sentence pairs (../shared/data/ding_de_en; a hashed
10% sample for validation, data.pair_split), one SentencePiece vocabulary for
both sides, a 2+2-layer 256-wide model with dropout; sized to train on two CPU
cores in about 17 minutes. Copying the source scores chrF 16.2 on the
validation pairs; this reaches chrF 21.8-21.9 (BLEU 3.2-3.9) and overfits
after ~3000 steps: short of the chrF 30 wanted. Packed pairs with dropout 0.3
and label smoothing 0.1 reach 22.1, and 2.4x as many steps level off at 23.3;
a 2k vocabulary and dropout 0.5 did worse (benchmarks/RESULTS.md). Its
PyTorch twin, benchmarks/reference/torch_translate.py, trained side by side
reaches chrF 21.0 in 1.83x jaxgen's wall time; see benchmarks/RESULTS.md.
From the repository root:

  jaxgen tokenizer train --config=configs/translate_de_en.py --vocab_size=4000
  jaxgen train --config=configs/translate_de_en.py --workdir=runs/de_en
  jaxgen sample --workdir=runs/de_en --source="Das ist gut." --beam_size=4
"""

from jaxgen import config as base


def get_config():
  c = base.base_config()
  c.model = base.encoder_decoder_model()
  c.model.num_layers = 2
  c.model.num_encoder_layers = 2
  c.model.num_heads = 4
  c.model.embed_dim = 256
  c.model.dropout = 0.1
  c.data.source = "tsv:../shared/data/ding_de_en/pairs.tsv"
  c.data.val_fraction = 0.1
  c.data.tokenizer = "sentencepiece"
  c.data.tokenizer_path = "tokenizers/ding_de_en_4k.model"
  # Tokens with bos/eos: 96% of targets and sources fit; longer ones are cut (a width
  # for the rare long pair would cost every batch its padding).
  c.data.seq_len = 28
  c.data.source_len = 28
  c.train.steps = 5000
  c.train.batch_size = 64
  c.train.learning_rate = 1e-3
  c.train.min_learning_rate = 5e-5
  c.train.warmup_steps = 300
  c.train.b2 = 0.98
  c.train.weight_decay = 0.1
  c.eval.every_steps = 1000
  c.eval.steps = 10
  c.eval.decode_examples = 500
  c.checkpoint.every_steps = 1000
  c.sample.temperature = 0.0
  return c
