"""Default run configuration; recipes in configs/ start from these and override.

The keys here are the public interface of `--config.*` flags. A recipe holds
only the keys of its model family, so a misspelt or foreign key is rejected
by the flag parser instead of being silently ignored.
"""

from __future__ import annotations

import ml_collections

# Logical axis -> mesh axes. Batch goes over data and fsdp; weights are
# sharded along 'embed' over fsdp (ZeRO-3 style) and along heads/mlp/vocab
# over tensor (Megatron style). Axes missing here are replicated.
DEFAULT_LOGICAL_AXIS_RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
)


def base_config() -> ml_collections.ConfigDict:
  """Everything except `model`, which `transformer_model` or `lstm_model` fills."""
  c = ml_collections.ConfigDict()

  c.data = ml_collections.ConfigDict()
  # bundled:NAME | tfds:NAME[:VERSION] | text:PATH_OR_GLOB | jsonl:PATH_OR_GLOB.
  # bundled:tiny_shakespeare ships with jaxgen: TFDS's tiny_shakespeare, offline.
  c.data.source = "bundled:tiny_shakespeare"
  c.data.task = ""  # 'lm' | 'seq2seq' (jaxgen/tasks.py); '' = the one data.source implies
  # e.g. 'store:/d/web:0.7,store:/d/code:0.3' (data/mixture.py); '' trains on data.source
  c.data.mixture = ""  # document sources drawn from by weight, instead of data.source
  c.data.train_split = "train"  # tfds and bundled split names
  c.data.eval_split = "validation"
  c.data.text_key = "text"  # the text feature of tfds records and jsonl objects
  c.data.text_lines = False  # text: one document per line instead of per file
  c.data.val_fraction = 0.1  # text/jsonl: held out for validation (nanoGPT's 10%)
  c.data.tfds_data_dir = ""  # '' = TFDS's default (~/tensorflow_datasets)
  c.data.tfds_manual_dir = ""  # local files a TFDS builder prepares from, offline
  c.data.tokenizer = "char"  # 'char' | 'byte' | 'sentencepiece' | 'hf'
  # sentencepiece: the .model (`jaxgen tokenizer train` writes it); hf: a directory
  # with a Hugging Face tokenizer.json (`jaxgen import` writes one into the workdir)
  c.data.tokenizer_path = ""
  # 'windows' (random, nanoGPT) | 'concat' | 'pack' (segment ids). Pairs are padded one
  # per row unless 'pack', which puts several in a row (encoder_decoder only).
  c.data.mode = "windows"
  c.data.shuffle = True  # concat/pack: reshuffle every epoch
  c.data.prefetch = 2  # batches prepared ahead in background threads
  # Local text/jsonl/tsv files are read into memory; more than this many MB of them is
  # refused in one line that gives the `jaxgen data prepare` command (a token store),
  # except in data.mode='pack', which reads them lazily (data/lazy_files.py).
  c.data.max_in_memory_mb = 512
  c.data.seq_len = 64  # training window (context) length; with pairs, the target length
  # Paired sources (conditional generation, see jaxgen/data/pairs.py): tsv:PATH_OR_GLOB,
  # synthetic:copy|reverse|sort|addition, or jsonl:PATH_OR_GLOB or tfds:NAME[:VERSION]
  # with data.source_key set (tfds:wmt14_translate/de-en: source_key='de', target_key='en').
  c.data.source_len = 0  # source tokens (with eos) per pair; 0: data.seq_len
  # tsv/jsonl pairs held out for validation (data.val_fraction of them): 'hashed' picks
  # them by a hash of their text, keeping pairs that share a source or target together;
  # 'tail' takes the file's last ones (a sorted file's tail is not a sample of it).
  c.data.pair_split = "hashed"
  # Several text/jsonl documents (one is cut at 1 - val_fraction of its characters, as
  # nanoGPT cuts it): 'hashed' holds out val_fraction of the characters, whole documents
  # taken by a hash of their text and the one that passes the fraction cut there; 'tail'
  # the last ceil(val_fraction * n) documents whatever their sizes (jaxgen before this key).
  c.data.doc_split = "hashed"
  c.data.source_key = ""  # jsonl/tfds: the source field; '' reads documents (data.text_key)
  c.data.target_key = "target"  # jsonl/tfds: the target field
  c.data.synthetic_seed = 0
  c.data.synthetic_min_len = 1  # symbols per source (digits per number for addition)
  c.data.synthetic_max_len = 16
  c.data.synthetic_symbols = 26  # the first N letters a..z
  c.data.synthetic_train_examples = 100_000
  c.data.synthetic_eval_examples = 1_000

  c.train = ml_collections.ConfigDict()
  c.train.steps = 2000
  c.train.batch_size = 12  # global batch, split over mesh.data * mesh.fsdp
  c.train.grad_accum_steps = 1  # micro-batches per step; batch_size must divide evenly
  c.train.seed = 0
  c.train.learning_rate = 1e-3  # peak
  c.train.min_learning_rate = 1e-4  # end of the cosine decay
  c.train.warmup_steps = 100
  c.train.decay_steps = 0  # 0: decay over train.steps
  c.train.b1 = 0.9
  c.train.b2 = 0.99
  c.train.eps = 1e-8
  c.train.weight_decay = 0.1  # matrices only; norms, biases and vectors are not decayed
  c.train.grad_clip = 1.0  # global-norm clipping; 0 disables
  c.train.z_loss = 0.0  # PaLM's auxiliary loss on log Z; 1e-4 is a common value
  c.train.label_smoothing = 0.0  # 0.1 regularises small data sets (translation)
  c.train.log_every = 50
  c.train.compilation_cache_dir = "~/.cache/jaxgen/xla"  # '' disables the persistent cache

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 250
  c.eval.steps = 20  # batches per evaluation
  c.eval.batch_size = 0  # 0: same as train.batch_size
  # After the last step, also the loss over the whole validation split in one
  # pass (`val_loss_full_split`): exact where eval.steps samples. It runs once the
  # final checkpoint is complete on disk; a Ctrl-C or SIGTERM during it skips it.
  c.eval.full_split_at_end = True
  # Caps that pass at about this many target tokens: its first
  # max(1, N // (eval batch size * data.seq_len)) batches (`val_full_split_tokens`
  # says how many it read). 0: the whole split, however long it takes.
  c.eval.full_split_max_tokens = 1_000_000
  # Conditional models: greedy-decode the first N validation pairs at every evaluation
  # for val_exact_match, val_bleu and val_chrf (sacrebleu); 0 skips it.
  c.eval.decode_examples = 200

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 500  # also saved at the end of training; 0: only at the end
  c.checkpoint.keep = 3  # newest checkpoints kept
  c.checkpoint.keep_best = True  # also keep the one with the lowest validation loss

  c.mesh = ml_collections.ConfigDict()
  # The mesh's axes, outermost first; each has its size in mesh.<axis>. Another axis
  # (e.g. 'expert') is a name here, a size key, and rules that map names onto it.
  c.mesh.axes = ("data", "fsdp", "tensor")
  c.mesh.data = -1  # -1: all devices left over by the other axes
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.logical_axis_rules = DEFAULT_LOGICAL_AXIS_RULES
  # How many ways of mesh.data / mesh.fsdp cross hosts (data-centre network):
  # the rest of each axis, and all of mesh.tensor, stay within a host. 1 keeps
  # the plain device order, which puts process boundaries on the data axis.
  c.mesh.dcn_data = 1
  c.mesh.dcn_fsdp = 1

  # Several processes (hosts) form one job through JAX's distributed runtime.
  # Unset keys come from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
  # JAX_PROCESS_ID and JAX_LOCAL_DEVICE_IDS, then from a cluster JAX detects
  # (SLURM, Open MPI, TPU pods, Kubernetes); with none, one plain process.
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ""  # host:port of process 0
  c.distributed.num_processes = 0  # 0: not set here
  c.distributed.process_id = -1  # -1: not set here
  c.distributed.local_device_ids = ""  # e.g. "0,1"; '': not set here
  c.distributed.initialization_timeout_s = 300  # waiting for every process to join
  # A process silent this long counts as lost, and the others stop.
  c.distributed.heartbeat_timeout_s = 30

  c.sample = ml_collections.ConfigDict()
  c.sample.num_tokens = 300  # sample printed at the end of training; 0 skips it
  c.sample.prompt = "\n"
  c.sample.temperature = 0.8
  c.sample.top_k = 0  # 0: no top-k filter
  return c


def transformer_model() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.type = "transformer"
  m.num_layers = 4
  m.num_heads = 4
  m.num_kv_heads = 0  # 0: same as num_heads (no grouped-query attention)
  m.embed_dim = 128
  m.head_dim = 0  # 0: embed_dim // num_heads
  m.mlp_dim = 0  # 0: 4 * embed_dim
  m.max_len = 0  # 0: data.seq_len
  m.position = "learned"  # 'learned' | 'rope'
  m.rope_base = 10000.0  # RoPE's base wavelength (HF's rope_theta)
  m.norm = "layernorm"  # 'layernorm' | 'rmsnorm'
  m.mlp = "gelu"  # 'gelu' | 'swiglu'
  m.norm_eps = 1e-5  # LayerNorm/RMSNorm epsilon (imported Llamas often use 1e-6)
  m.use_bias = False
  m.dropout = 0.0
  m.tie_embeddings = True
  m.scan_layers = False
  m.remat = "none"  # 'none' | 'full' | 'dots'
  m.attention_backend = "auto"  # 'auto' | 'xla' | 'cudnn'
  m.dtype = "float32"  # compute dtype; 'bfloat16' on accelerators
  m.param_dtype = "float32"
  m.vocab_size = 0  # 0: the tokenizer's; set larger to reserve ids (GPT-2: 50304)
  m.vocab_multiple = 128  # pad the vocabulary for fast head matmuls
  return m


def encoder_decoder_model() -> ml_collections.ConfigDict:
  """A Transformer encoder-decoder: the decoder-only keys (num_layers, max_len: the
  decoder's) plus the encoder's depth and source length."""
  m = transformer_model()
  m.type = "encoder_decoder"
  m.num_encoder_layers = 0  # 0: same as num_layers
  m.max_source_len = 0  # 0: data.source_len
  m.share_embeddings = True  # one token table for both sides (one vocabulary)
  return m


def lstm_attention_model() -> ml_collections.ConfigDict:
  """An LSTM encoder-decoder with attention and input feeding."""
  m = lstm_model()
  m.type = "lstm_attention"
  m.num_encoder_layers = 0  # 0: same as num_layers (the decoder's)
  m.bidirectional = True  # the encoder reads the source both ways
  m.attention = "luong"  # 'luong' (multiplicative) | 'bahdanau' (additive)
  m.share_embeddings = True
  return m


def lstm_model() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.type = "lstm"
  m.num_layers = 2
  m.embed_dim = 256
  m.hidden_size = 256
  m.dropout = 0.0
  m.unroll = 4  # time steps per scan iteration; see benchmarks/train_throughput.py
  m.dtype = "float32"
  m.param_dtype = "float32"
  m.vocab_multiple = 128
  return m
