"""`jaxgen tokenizer train`: a SentencePiece model from the config's training data."""

from __future__ import annotations

import json
import pathlib

import ml_collections

from jaxgen import tasks
from jaxgen.cli import common
from jaxgen.cli.command import Command
from jaxgen.errors import UserError


def run() -> None:
  common.setup_jax(common.CONFIG.value)
  tokenizer_train(common.CONFIG.value, common.VOCAB_SIZE.value)


def tokenizer_train(cfg: ml_collections.ConfigDict, vocab_size: int) -> pathlib.Path:
  """Trains a SentencePiece model on the training split (both sides of paired data)
  into `data.tokenizer_path`."""
  from jaxgen.data.tokenizer import train_sentencepiece
  d = cfg.data
  if not d.tokenizer_path:
    raise UserError("data.tokenizer_path is empty: set where the SentencePiece model goes, "
                    "e.g. --config.data.tokenizer_path=tokenizers/shakespeare_1k.model")
  path = pathlib.Path(d.tokenizer_path).expanduser()
  if path.exists():
    raise UserError(f"{path} already exists; remove it or choose another "
                    "data.tokenizer_path (nothing is overwritten)")
  if vocab_size < 1:
    raise UserError(f"--vocab_size={vocab_size} must be positive")
  tokenizer = train_sentencepiece(tasks.task_of(d).tokenizer_texts(cfg), vocab_size, path)
  print(json.dumps({"tokenizer": str(path), "vocab_size": tokenizer.vocab_size}), flush=True)
  return path


COMMANDS = {"tokenizer train": Command(
    "train a SentencePiece tokenizer on the config's training data",
    ("config", "vocab_size"), (), run,
    helps={"vocab_size": "the tokenizer's vocabulary size: the number of SentencePiece pieces "
                         "to train, e.g. 1024."})}
