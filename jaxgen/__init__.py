"""jaxgen: train and sample text-generation models in JAX/Flax.

The layout, from the bottom layer up (each part uses the parts above it in this list):

  errors, messages   the one-line user error, and counted messages
  parallel/          the device mesh (axes from mesh.axes), shardings from logical axis
                     names, the activation constraints; imports no other part of jaxgen
  models/            Flax NNX modules behind one interface (models/interface.py); each
                     family is one module that registers itself in models/registry.py,
                     whose table of names the config checks read before JAX starts
  data/              records from every source (readers), splits, tokenizers, the token
                     store, packing, mixtures and the Grain pipeline
  tasks              what each data.task (lm, seq2seq) makes of the data, the batch
                     schema, the end-of-run sample
  config, config_check, config_docs
                     the default keys, their checks before anything runs, their docs
  train/             optimizer, train state, the jitted step, evaluation, checkpoints,
                     the loop, `jaxgen plan`
  sample/            decoding with a cache, beam search, one batching path for prompts
                     and sources, restoring a workdir
  interop/           Hugging Face import and export
  cli/, cli_help, main
                     the command line: one table from each command to its flags and
                     function, one module per command group (cli/), its help, and
                     main, which parses, looks the command up and runs it

Exceptions: train/ and sample/ use each other (restoring a workdir reads the train
state and its checkpoints; evaluation and the end-of-run sample decode), and
data/store_prepare.py runs `jaxgen tokenizer train` for a recipe whose SentencePiece
model does not exist yet. jaxgen/parallel/ has none (tests/test_parallel_layer.py).
"""

__version__ = "0.1.0"
