"""Shared test fixtures' building blocks: small corpora and configs."""

import importlib.util
import pathlib

import ml_collections
import pytest

from jaxgen import config as base

REPO = pathlib.Path(__file__).resolve().parents[1]

# Preparing TFDS data sets (not reading them) needs TensorFlow: the [tfds] extra.
needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                              reason="preparing TFDS data sets needs TensorFlow: "
                              "pip install -e '.[tfds]' (the [test] extra includes it)")

# XLA:CPU spends most of this suite's time compiling (the tests' models are tiny), and most
# of a compile in LLVM's optimisation passes. The suite checks what programs compute, not
# how fast they run, so it compiles with those passes off: about a third less time. Every
# process the suite starts gets them too, through xla_flags(). Benchmarks never use them.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def xla_flags(devices: int | None = None) -> str:
  """XLA_FLAGS for a process the suite starts: fast compiles, and `devices` host devices."""
  count = [] if devices is None else [f"--xla_force_host_platform_device_count={devices}"]
  return " ".join([FAST_COMPILE_FLAGS, *count])


SHARED_CORPUS = pathlib.Path(__file__).resolve().parents[2] / "shared/data/tiny_shakespeare/input.txt"

_VERSE = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
    "Or to take arms against a sea of troubles\n"
    "And by opposing end them. To die: to sleep;\n"
)


def write_corpus(path: pathlib.Path, repeats: int = 60) -> str:
  """A small UTF-8 corpus (about 13 KB) with a 40-odd character vocabulary."""
  path.write_text(_VERSE * repeats, encoding="utf-8")
  return f"text:{path}"


def tiny_transformer_config(source: str, **train):
  c = base.base_config()
  c.model = base.transformer_model()
  c.model.num_layers, c.model.num_heads, c.model.embed_dim = 2, 4, 32
  c.data.source, c.data.seq_len = source, 32
  c.train.update({**dict(steps=20, batch_size=16, warmup_steps=5, log_every=10,
                         compilation_cache_dir=""), **train})
  c.eval.update(every_steps=0, steps=2)
  c.sample.num_tokens = 0
  return c


def tiny_lstm_config(source: str, **train):
  c = tiny_transformer_config(source, **train)
  c.model = base.lstm_model()
  c.model.num_layers, c.model.embed_dim, c.model.hidden_size, c.model.unroll = 2, 32, 32, 4
  return c


def one_line(err) -> str:
  """The message of a raised UserError (a pytest ExceptionInfo), checked to be one line."""
  message = str(err.value)
  assert "\n" not in message
  return message


def unigram_entropy(text: str) -> float:
  """Entropy in nats of `text`'s character frequencies: the loss of a model that
  learned which characters occur and how often, but nothing about their order.

  A trained model's loss must beat it; ln(vocabulary) (a uniform guess over
  the corpus's characters) is a weaker bound still.
  """
  import collections
  import math
  counts = collections.Counter(text)
  n = sum(counts.values())
  return -sum(c / n * math.log(c / n) for c in counts.values())


def jaxpr_eqns(jaxpr):
  """Every equation of a (closed) jaxpr, recursing into jit, scan, remat and custom_vjp bodies."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
          yield from jaxpr_eqns(sub)


def dot_operand_dtypes(jaxpr) -> list[tuple[str, ...]]:
  """The operand dtypes of every matrix multiply in `jaxpr`."""
  return [tuple(str(v.aval.dtype) for v in e.invars) for e in jaxpr_eqns(jaxpr)
          if e.primitive.name == "dot_general"]


def assert_one_error(out, needle: str) -> None:
  """A finished command (subprocess.CompletedProcess) failed with a non-zero exit, no
  traceback, and stderr exactly one `jaxgen: error:` line containing `needle`."""
  shown = f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
  assert out.returncode != 0, shown
  assert "Traceback" not in out.stdout + out.stderr, shown
  lines = [line for line in out.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("jaxgen: error: "), shown
  assert needle in lines[0], shown


def run_jaxgen(*args: str):
  """`python -m jaxgen ARGS` from the repository root on one CPU device, finished."""
  import os
  import subprocess
  import sys
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags())
  return subprocess.run([sys.executable, "-m", "jaxgen", *args],
                        cwd=pathlib.Path(__file__).resolve().parents[1], env=env,
                        capture_output=True, text=True, timeout=300)


def older_meta(setup, key: str) -> dict:
  """setup's checkpoint metadata as a jaxgen without the data `key` saved it."""
  import json
  older = {"config": json.loads(json.dumps(setup.meta["config"])),
           "tokenizer": setup.meta["tokenizer"]}
  del older["config"]["data"][key]
  return older


def recipe_config(path: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location("recipe", REPO / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def leaves(cfg: ml_collections.ConfigDict) -> dict[str, object]:
  return {f"{section}.{key}": value for section in cfg.keys()
          for key, value in cfg[section].items()}


def reverse_config(**train):
  """A tiny reverse task: 1-5 letters of 6, a 2+2-layer 64-wide encoder-decoder."""
  c = base.base_config()
  c.model = base.encoder_decoder_model()
  c.model.update(num_layers=2, num_encoder_layers=2, num_heads=4, embed_dim=64)
  c.data.update(source="synthetic:reverse", seq_len=8, source_len=8, synthetic_min_len=1,
                synthetic_max_len=5, synthetic_symbols=6, synthetic_train_examples=5000,
                synthetic_eval_examples=64)
  c.train.update({**dict(steps=20, batch_size=16, warmup_steps=5, log_every=1,
                         compilation_cache_dir="", weight_decay=0.0), **train})
  c.eval.update(every_steps=0, steps=2, decode_examples=64)
  c.sample.update(num_tokens=0, temperature=0.0)
  c.checkpoint.update(every_steps=0)
  return c
