"""Every recipe in configs/ parses, builds its model, and documents its command."""

import ast
import importlib.util
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from jaxgen.models.factory import create_model, model_config
from jaxgen.train import sharding
from jaxgen.train.optimizer import make_optimizer
from jaxgen.train.state import count_params, create_train_state
from jaxgen.train.step import make_train_step

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.py"))
EXPECTED_PARAMS = {  # full-size parameter counts (vocabulary 65 padded to 128)
    "shakespeare_char_cpu": 812_160,
    "gpt2_124m": 124_373_760,  # nanoGPT, bias=False, vocab 50304
}


def load(path):
  spec = importlib.util.spec_from_file_location(f"configs.{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_every_recipe_is_found():
  assert {p.stem for p in CONFIGS} >= {"shakespeare_char_cpu", "shakespeare_char",
                                       "lstm_shakespeare_char", "gpt2_124m"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_recipe_parses_and_builds(path):
  cfg = load(path)
  assert f"--config=configs/{path.name}" in load_doc(path)
  mcfg = model_config(cfg.model, 65, cfg.data.seq_len)
  abstract = nnx.eval_shape(lambda: create_model(mcfg, nnx.Rngs(0)))
  n = count_params(nnx.state(abstract, nnx.Param))
  if path.stem in EXPECTED_PARAMS:
    assert n == EXPECTED_PARAMS[path.stem]
  assert n > 0


def test_gpt2_shrunken_runs_one_step():
  cfg = load(CONFIGS[[p.stem for p in CONFIGS].index("gpt2_124m")])
  cfg.model.update(num_layers=2, num_heads=2, embed_dim=64, max_len=32, dtype="float32")
  cfg.data.seq_len, cfg.train.batch_size = 32, 2
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  mcfg = model_config(cfg.model, 65, cfg.data.seq_len)
  assert mcfg.vocab_size == 50304
  opt, schedule = make_optimizer(cfg.train)
  graphdef, state, _ = create_train_state(mcfg, opt, 0, mesh, tuple(cfg.mesh.logical_axis_rules))
  rng = np.random.default_rng(0)
  batch = {k: rng.integers(0, 50257, (2, 32), np.int32) for k in ("inputs", "targets")}
  state, metrics = jax.jit(make_train_step(graphdef, opt, schedule))(state, batch)
  assert int(state.step) == 1 and np.isfinite(float(metrics["train_loss"]))
  assert abs(float(metrics["train_loss"]) - np.log(50304)) < 0.5  # near-uniform at init


def load_doc(path):
  return ast.get_docstring(ast.parse(path.read_text())) or ""
