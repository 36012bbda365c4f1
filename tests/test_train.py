"""Training end to end: loss goes down, meshes agree, divergence stops, accumulation."""

import json

import jax
import numpy as np
import pytest

from jaxgen.errors import UserError
from jaxgen.models.factory import model_config
from jaxgen.train import sharding
from jaxgen.train.loop import train_and_evaluate
from jaxgen.train.optimizer import make_optimizer
from jaxgen.train.state import create_train_state
from jaxgen.train.step import make_train_step
from tests.helpers import tiny_lstm_config, tiny_transformer_config, write_corpus

MESHES = [(1, 1, 1), (8, 1, 1), (2, 2, 2), (1, 4, 2)]


def train_losses(workdir):
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return np.array([l["train_loss"] for l in lines if "train_loss" in l])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  return write_corpus(tmp_path_factory.mktemp("corpus") / "verse.txt")


def run(cfg, workdir, mesh=(1, 1, 1)):
  cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = mesh
  devices = jax.devices()[: mesh[0] * mesh[1] * mesh[2]]
  # The loop uses every visible device; restrict via the mesh helper's device list.
  original = sharding.make_mesh
  sharding.make_mesh = lambda m, d=None: original(m, devices)
  try:
    return train_and_evaluate(cfg, str(workdir))
  finally:
    sharding.make_mesh = original


def test_short_run_lowers_loss_and_writes_outputs(source, tmp_path):
  cfg = tiny_transformer_config(source, steps=60, learning_rate=3e-3)
  cfg.eval.every_steps = 30
  cfg.sample.num_tokens = 20
  result = run(cfg, tmp_path / "run")
  losses = train_losses(tmp_path / "run")
  assert len(losses) == 60
  assert losses[-5:].mean() < losses[:5].mean() - 1.0
  assert result["val_loss"] < np.log(128) - 1.0
  assert len(result["sample"]) >= 20
  for name in ("metrics.jsonl", "tokenizer.json", "config.json", "loss.png"):
    assert (tmp_path / "run" / name).exists(), name
  assert list((tmp_path / "run" / "tensorboard").iterdir())
  _check_full_split_loss(tmp_path / "run", cfg, result["val_loss_full_split"])


def _check_full_split_loss(workdir, cfg, reported):
  """The end-of-run validation loss, recomputed: every non-overlapping window of the
  validation text (and its closing eos) through the restored model, plain numpy batching."""
  import optax
  from jaxgen.data.sources import load_text
  from jaxgen.sample.restore import restore
  graphdef, params, _, tokenizer = restore(str(workdir))
  model = __import__("flax").nnx.merge(graphdef, params)
  text = load_text(cfg.data.source)
  ids = np.append(tokenizer.encode(text[int(len(text) * 0.9):]), tokenizer.eos_id)
  n = cfg.data.seq_len + 1
  chunks = ids[:len(ids) // n * n].reshape(-1, n)
  b = cfg.train.batch_size
  chunks = chunks[:len(chunks) // b * b]
  ce = optax.softmax_cross_entropy_with_integer_labels(model(chunks[:, :-1]), chunks[:, 1:])
  np.testing.assert_allclose(reported, float(ce.mean()), rtol=1e-5)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices: set "
                    "XLA_FLAGS=--xla_force_host_platform_device_count=8")
def test_meshes_agree_on_training_losses(source, tmp_path):
  losses = {}
  for mesh in MESHES:
    workdir = tmp_path / "x".join(map(str, mesh))
    run(tiny_transformer_config(source), workdir, mesh)
    losses[mesh] = train_losses(workdir)
  reference = losses[(1, 1, 1)]
  assert len(reference) == 20 and reference[-1] < reference[0]
  for mesh, got in losses.items():
    np.testing.assert_allclose(got, reference, atol=1e-4, rtol=0, err_msg=f"mesh {mesh}")


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")
def test_lstm_meshes_agree(source, tmp_path):
  losses = [train_losses(run(tiny_lstm_config(source, steps=10), tmp_path / str(m), m)
                         and tmp_path / str(m)) for m in [(1, 1, 1), (2, 2, 2)]]
  np.testing.assert_allclose(losses[1], losses[0], atol=1e-4, rtol=0)


def test_divergence_stops_with_one_line(source, tmp_path):
  cfg = tiny_transformer_config(source, learning_rate=1e30, grad_clip=0.0, warmup_steps=0)
  with pytest.raises(UserError, match=r"training diverged at step \d+"):
    run(cfg, tmp_path / "run")
  assert (tmp_path / "run" / "metrics.jsonl").exists()


def test_gradient_accumulation_matches_one_big_batch(source):
  cfg = tiny_transformer_config(source, grad_clip=1.0)
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  rules = tuple(cfg.mesh.logical_axis_rules)
  mcfg = model_config(cfg.model, 50, 32)
  opt, schedule = make_optimizer(cfg.train)
  rng = np.random.default_rng(0)
  batch = {k: rng.integers(0, 50, (16, 32), np.int32) for k in ("inputs", "targets")}
  results = []
  for accum in (1, 4):
    graphdef, state, _ = create_train_state(mcfg, opt, 0, mesh, rules)
    step = jax.jit(make_train_step(graphdef, opt, schedule, grad_accum_steps=accum))
    state, metrics = step(state, batch)
    results.append((state, metrics))
  (s1, m1), (s4, m4) = results
  np.testing.assert_allclose(m4["train_loss"], m1["train_loss"], rtol=1e-6)
  np.testing.assert_allclose(m4["grad_norm"], m1["grad_norm"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s4.params)):
    np.testing.assert_allclose(a, b, atol=1e-6)
