"""Every recipe in configs/ parses, builds its model, and documents its command; the
Shakespeare recipes train a few steps as they stand."""

import ast
import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from jaxgen.models.factory import create_model, model_config
from jaxgen.parallel import mesh as mesh_lib
from jaxgen.train.loop import train_and_evaluate
from jaxgen.train.optimizer import make_optimizer
from jaxgen.train.state import count_params, create_train_state
from jaxgen.train.step import make_train_step
from tests.helpers import write_corpus

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.py"))
EXPECTED_PARAMS = {  # full-size parameter counts (vocabulary 65 padded to 128)
    "shakespeare_char_cpu": 812_160,
    "gpt2_124m": 124_373_760,  # nanoGPT, bias=False, vocab 50304
    "llama_1b": 1_104_218_112,  # Llama 3.2 1B's shape, vocab 32000, untied head
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


@pytest.mark.slow
def test_gpt2_shrunken_runs_one_step():
  cfg = load(CONFIGS[[p.stem for p in CONFIGS].index("gpt2_124m")])
  cfg.model.update(num_layers=2, num_heads=2, embed_dim=64, max_len=32, dtype="float32")
  cfg.data.seq_len, cfg.train.batch_size = 32, 2
  mesh = mesh_lib.make_mesh(cfg.mesh, jax.devices()[:1])
  mcfg = model_config(cfg.model, 65, cfg.data.seq_len)
  assert mcfg.vocab_size == 50304
  opt, schedule = make_optimizer(cfg.train)
  graphdef, state, _ = create_train_state(mcfg, opt, 0, mesh, tuple(cfg.mesh.logical_axis_rules))
  rng = np.random.default_rng(0)
  batch = {k: rng.integers(0, 50257, (2, 32), np.int32) for k in ("inputs", "targets")}
  state, metrics = jax.jit(make_train_step(graphdef, opt, schedule))(state, batch)
  assert int(state.step) == 1 and np.isfinite(float(metrics["train_loss"]))
  assert abs(float(metrics["train_loss"]) - np.log(50304)) < 0.5  # near-uniform at init


# Batch: the recipe's where a step is cheap on CPU; cut to 2 for the 10.8M-parameter
# Transformer at context 256 (still ~3 s/step on two cores).
@pytest.mark.parametrize("recipe,batch_size", [("shakespeare_char", 2),
                                               ("lstm_shakespeare_char", None)])
@pytest.mark.slow
def test_recipe_trains_a_few_steps(recipe, batch_size, tmp_path, monkeypatch):
  cfg = load(CONFIGS[[p.stem for p in CONFIGS].index(recipe)])
  model = cfg.model.to_dict()
  steps = 5
  # The model and optimizer stay the recipe's; only the run is cut down.
  cfg.data.source = write_corpus(tmp_path / "verse.txt")
  cfg.train.update(steps=steps, log_every=1, compilation_cache_dir="",
                   batch_size=batch_size or cfg.train.batch_size)
  cfg.eval.update(every_steps=0, full_split_at_end=False)
  cfg.sample.num_tokens = 0
  # The recipe's mesh (data=-1: every device) on one device: sharded steps over
  # 8 host devices on two cores run several times slower.
  make_mesh = mesh_lib.make_mesh
  monkeypatch.setattr(mesh_lib, "make_mesh", lambda m, d=None: make_mesh(m, jax.devices()[:1]))
  workdir = tmp_path / "run"
  train_and_evaluate(cfg, str(workdir))

  assert cfg.model.to_dict() == model
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  losses = np.array([l["train_loss"] for l in lines if "train_loss" in l])
  assert len(losses) == steps and np.isfinite(losses).all(), losses
  assert abs(losses[0] - np.log(128)) < 0.3, losses  # near-uniform at init
  assert losses[-1] < losses[0] - 0.2, losses
  # The end-of-run checkpoint, complete (Orbax renames its temporary folder last).
  names = [p.name for p in (workdir / "checkpoints").iterdir()]
  assert str(steps) in names and not [n for n in names if "tmp" in n], names


def load_doc(path):
  return ast.get_docstring(ast.parse(path.read_text())) or ""
