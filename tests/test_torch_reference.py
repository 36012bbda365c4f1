"""benchmarks/reference/torch_translate.py builds jaxgen's encoder-decoder in torch: the
same parameter count and decayed parameters, and optax's learning-rate schedule.
No training here (the reference's command in its docstring trains)."""

import importlib.util
import pathlib

import jax
import pytest
from flax import nnx

from jaxgen.models.factory import create_model, model_config
from jaxgen.train.optimizer import make_optimizer

torch = pytest.importorskip("torch", reason="torch is a test-only dependency (CI installs it)")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(path: pathlib.Path, name: str):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def ref():
  return _load(ROOT / "benchmarks/reference/torch_translate.py", "torch_translate")


def _recipe():
  return _load(ROOT / "configs/translate_de_en.py", "configs.translate_de_en").get_config()


def _jaxgen_params(cfg, vocab):
  model_cfg = model_config(cfg.model, vocab, cfg.data.seq_len, cfg.data.source_len)
  abstract = nnx.eval_shape(lambda: create_model(model_cfg, nnx.Rngs(params=0)))
  leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
  return sum(x.size for x in leaves), sum(x.size for x in leaves if x.ndim >= 2)


@pytest.mark.parametrize("overrides", [
    {},  # the recipe: shared, tied, no biases
    {"use_bias": True, "share_embeddings": False, "tie_embeddings": False,
     "num_encoder_layers": 3, "mlp_dim": 96, "max_len": 40},
])
def test_same_parameters_as_jaxgen(ref, overrides):
  cfg = _recipe()
  for key, value in overrides.items():
    cfg.model[key] = value
  if overrides:  # small, to stay fast
    cfg.model.embed_dim, cfg.model.num_heads, cfg.model.num_layers = 32, 2, 1
  vocab = 4000  # the recipe's SentencePiece vocabulary (padded to 4096 by both)
  model = ref.build_model(cfg, vocab)
  total, decayed = _jaxgen_params(cfg, vocab)
  assert sum(p.numel() for p in model.parameters()) == total
  decay_group = model.decay_groups(0.1)[0]
  assert decay_group["weight_decay"] == 0.1
  assert sum(p.numel() for p in decay_group["params"]) == decayed


def test_learning_rate_is_jaxgens_schedule(ref):
  t = _recipe().train
  t.steps, t.warmup_steps = 200, 30
  _, schedule = make_optimizer(t)
  for step in (0, 1, 15, 29, 30, 31, 100, 199, 200, 250):
    assert ref.learning_rate(t, step) == pytest.approx(float(schedule(step)), rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("use_bias", [False, True])
def test_forward_masks_padding(ref, use_bias):
  """Logits of a row do not depend on what its source padding holds, nor on later
  targets; eval mode computes what training mode does (no fast path, tanh GELU)."""
  cfg = _recipe()
  cfg.model.embed_dim, cfg.model.num_heads, cfg.model.num_layers = 32, 2, 1
  cfg.model.use_bias, cfg.model.dropout = use_bias, 0.0
  model = ref.build_model(cfg, 100).eval()
  source = torch.randint(4, 100, (2, 28))
  pad = torch.zeros(2, 28, dtype=torch.bool)
  pad[:, 10:] = True
  tokens = torch.randint(4, 100, (2, 28))
  with torch.no_grad():
    a = model(source, pad, tokens)
    other = source.clone()
    other[:, 10:] = 7
    changed = tokens.clone()
    changed[:, 20:] = 9
    b = model(other, pad, changed)
  torch.testing.assert_close(a[:, :20], b[:, :20], rtol=1e-5, atol=1e-5)
  # Encoder outputs (O(1) after the final norm), with MLP inputs large enough for
  # the exact and the tanh GELU to differ.
  with torch.no_grad():
    for layer in model.transformer.encoder.layers:
      layer.linear1.weight.mul_(50)
    evaluated = model.eval().encode(source, pad)[~pad]
    trained = model.train().encode(source, pad)[~pad]
  torch.testing.assert_close(evaluated, trained, rtol=1e-5, atol=1e-5)


def test_label_smoothed_loss_is_jaxgens_formula(ref):
  """train.label_smoothing a: (1 - a) * cross-entropy + a * mean over the V classes of
  -log p, on weighted targets; the reported cross-entropy stays the plain one."""
  torch.manual_seed(0)
  logits = torch.randn(2, 5, 16)
  targets = torch.randint(0, 16, (2, 5))
  weights = torch.tensor([[1.0] * 5, [1.0, 1.0, 0.0, 0.0, 0.0]])
  denom = float(weights.sum())
  logp = logits.log_softmax(-1)
  ce = -(logp.gather(-1, targets[..., None])[..., 0] * weights).sum() / denom
  uniform = (-(logp.mean(-1)) * weights).sum() / denom
  loss, reported = ref.losses(logits, targets, weights, denom, label_smoothing=0.1)
  torch.testing.assert_close(reported, ce)
  torch.testing.assert_close(loss, 0.9 * ce + 0.1 * uniform)
  plain, _ = ref.losses(logits, targets, weights, denom)
  torch.testing.assert_close(plain, ce)
