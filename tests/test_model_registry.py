"""Model families register themselves; the step adds a family's auxiliary losses.

A fake family registered here (a bigram table with a weight penalty as its
auxiliary loss) goes through the same factory, train step and evaluation as
the built-in ones; every built-in family's FLOPs per token is checked against
a count by hand from its config.
"""

import contextlib
import dataclasses
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxgen import config
from jaxgen.models import factory, interface, registry
from jaxgen.models.params import num_values, param
from jaxgen.train import evaluation, loop
from jaxgen.train.state import TrainState, abstract_train_state, model_flops_per_token
from jaxgen.train.step import make_eval_step, make_train_step
from tests.helpers import REPO

V = 128  # every tiny config's vocabulary of 50, padded to a multiple of 128


@dataclasses.dataclass(frozen=True)
class ToyConfig:
  vocab_size: int
  max_len: int
  aux_weight: float = 0.25


class ToyLM(interface.Model, nnx.Module):
  """Logits are rows of a [V, V] table; the auxiliary loss is weight * mean(table^2)."""

  def __init__(self, cfg: ToyConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.table = param(rngs, nnx.initializers.normal(0.5), (cfg.vocab_size, cfg.vocab_size),
                       ("vocab", None))

  def batch_outputs(self, batch, *, dropout_rng=None):
    del dropout_rng
    table_VV = self.table[...]
    return (jnp.take(table_VV, batch["inputs"], axis=0),
            {"toy_aux": toy_aux(table_VV, self.cfg.aux_weight)})


def toy_aux(table_VV, weight):
  return weight * jnp.mean(jnp.square(table_VV))


@pytest.fixture
def toy_family():
  family = registry.register(registry.Family(
      name="toy", config_type=ToyConfig, model_type=ToyLM,
      build_config=lambda m, **sizes: ToyConfig(sizes["vocab_size"], sizes["seq_len"]),
      flops_per_token=lambda cfg, params, seq_len, source_len: 6.0 * num_values(params)))
  yield family
  registry.unregister("toy")


def toy_batch(rows=4, length=8, vocab=16, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab, (rows, length + 1)).astype(np.int32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}


@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_the_step_minimises_cross_entropy_plus_the_auxiliary_loss(toy_family, grad_accum_steps):
  cfg = ToyConfig(vocab_size=16, max_len=8)
  graphdef, params = nnx.split(factory.create_model(cfg, nnx.Rngs(0)))
  assert isinstance(nnx.merge(graphdef, params), ToyLM) and not toy_family.conditional
  opt = optax.sgd(1.0)
  step = jax.jit(make_train_step(graphdef, opt, optax.constant_schedule(1.0),
                                 grad_accum_steps=grad_accum_steps))
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt.init(params),
                     rng=jax.random.key_data(jax.random.key(0)))
  batch = toy_batch()
  new_state, metrics = step(state, batch)

  def by_hand(table_VV):
    ce = optax.softmax_cross_entropy_with_integer_labels(
        table_VV[batch["inputs"]], batch["targets"]).mean()
    return ce + toy_aux(table_VV, cfg.aux_weight), ce

  table = params["table"][...]
  (loss, ce), grad = jax.value_and_grad(by_hand, has_aux=True)(table)
  aux = toy_aux(table, cfg.aux_weight)
  assert set(metrics) == {"train_loss", "grad_norm", "learning_rate", "train_toy_aux"}
  np.testing.assert_allclose(metrics["train_loss"], ce, rtol=1e-6)
  np.testing.assert_allclose(metrics["train_toy_aux"], aux, rtol=1e-6)
  np.testing.assert_allclose(loss, ce + aux, rtol=1e-6)
  # SGD with rate 1: the update is minus the gradient of cross-entropy + aux.
  np.testing.assert_allclose(table - new_state.params["table"][...], grad, atol=1e-6)
  ce_grad = jax.grad(lambda t: by_hand(t)[1])(table)
  assert not np.allclose(grad, ce_grad, atol=1e-4)  # the aux term did reach the gradient


def test_evaluation_reports_the_auxiliary_loss(toy_family):
  del toy_family
  cfg = ToyConfig(vocab_size=16, max_len=8)
  model = factory.create_model(cfg, nnx.Rngs(1))
  graphdef, params = nnx.split(model)
  eval_step = jax.jit(make_eval_step(graphdef))
  batches = [toy_batch(seed=s) for s in range(3)]
  total, count, aux = eval_step(params, batches[0])
  assert float(count) == 32
  np.testing.assert_allclose(aux["toy_aux"], toy_aux(params["table"][...], 0.25) * 32,
                             rtol=1e-6)
  mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
  loss, means = evaluation.evaluate(eval_step, params, batches, None,
                                    NamedSharding(mesh, P("data", None)))
  ce = np.mean([optax.softmax_cross_entropy_with_integer_labels(
      model.batch_logits(b), b["targets"]).mean() for b in batches])
  np.testing.assert_allclose(loss, ce, rtol=1e-5)
  assert list(means) == ["toy_aux"]
  np.testing.assert_allclose(means["toy_aux"], toy_aux(params["table"][...], 0.25), rtol=1e-6)
  # The loop's evaluation record: val_loss beside val_toy_aux.
  setup = types.SimpleNamespace(eval_parts=[], eval_data=batches)
  run_cfg = ml_collections.ConfigDict({"eval": {"steps": 3}})
  val_loss, record = loop._validate(setup, run_cfg, QuietWriter(), 1, eval_step, params,
                                    NamedSharding(mesh, P("data", None)))
  assert val_loss == loss and record == {"val_toy_aux": means["toy_aux"]}


class QuietWriter:
  """The part of metrics.MetricsWriter that evaluation uses."""

  @contextlib.contextmanager
  def progress(self, what, total):
    del what, total
    yield types.SimpleNamespace(update=lambda: None)


def test_a_registered_family_is_built_from_config_model(toy_family):
  m = config.transformer_model()
  with m.unlocked():
    m.type = "toy"
  cfg = factory.model_config(m, 50, 8)
  assert cfg == ToyConfig(vocab_size=V, max_len=8)
  assert registry.of_config(cfg) is toy_family and "toy" in registry.names()
  assert factory.context_limit(cfg) == 8


def test_the_built_in_families_have_no_auxiliary_losses():
  batch = {"inputs": jnp.zeros((2, 8), jnp.int32), "source": jnp.ones((2, 6), jnp.int32)}
  for name in registry.KNOWN:
    cfg = factory.model_config(model_section(name), 50, 8, 6)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: factory.create_model(cfg,
                                                                                nnx.Rngs(0))))
    logits, aux = jax.eval_shape(lambda p: nnx.merge(graphdef, p).batch_outputs(batch),
                                 abstract)
    assert logits.shape == (2, 8, V) and aux == {}, name


def test_the_registry_agrees_with_each_family_module():
  for name, known in registry.KNOWN.items():
    family = registry.get(name)
    assert family.name == name and family.conditional == known.conditional
    assert family.config_type.__module__ == known.module == family.model_type.__module__
    assert issubclass(family.model_type, interface.Model)
    assert registry.model_defaults(name).type == name
  with pytest.raises(ValueError, match="built-in"):
    registry.unregister("transformer")


def test_the_config_checks_know_the_families_without_importing_jax():
  code = ("import sys\nfrom jaxgen import config_check\nfrom jaxgen.models import registry\n"
          "print(registry.names(), registry.is_conditional('encoder_decoder'), "
          "'jax' in sys.modules, 'flax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True).stdout
  assert out == ("('transformer', 'lstm', 'encoder_decoder', 'lstm_attention') True "
                 "False False\n")


# FLOPs per token, counted by hand: 6 per parameter per token it multiplies (lookup
# tables multiply nothing), and 12 per head dimension per attended position per layer.

D, N, K, H, F = 32, 4, 2, 8, 128  # width, heads, key/value heads, head size, MLP width


def attention_values(kv_heads=K):
  return D * H * (2 * N + 2 * kv_heads)  # wq, wo; wk, wv


@pytest.mark.parametrize("tied", [True, False])
def test_transformer_flops_per_token_by_hand(tied):
  t, layers = 16, 2
  per_block = 2 * D + attention_values() + 2 * D * F  # two LayerNorm scales, no biases
  n = layers * per_block + D + V * D  # final norm; the table, as the head or (untied) the head
  want = 6 * n + 12 * layers * N * H * t
  assert flops("transformer", t, 0, tie_embeddings=tied, num_kv_heads=K) == want


@pytest.mark.parametrize("shared", [True, False])
def test_encoder_decoder_flops_per_token_by_hand(shared):
  t, s, enc, dec = 12, 20, 3, 2
  # Over source tokens: the encoder, its final norm, and each decoder layer's
  # cross-attention keys and values (projections of the encoder's output).
  per_source = enc * (2 * D + attention_values() + 2 * D * F) + D + dec * 2 * D * K * H
  # Over target tokens: the rest of the decoder, its final norm and the output head.
  per_target = dec * (3 * D + attention_values() + 2 * D * N * H + 2 * D * F) + D + V * D
  want = (6 * per_target + 12 * dec * N * H * (t + s)  # self-attention over T, cross over S
          + (6 * per_source + 12 * enc * N * H * s) * s / t)  # S/T source tokens per target
  got = flops("encoder_decoder", t, s, num_layers=dec, num_encoder_layers=enc, num_kv_heads=K,
              share_embeddings=shared, tie_embeddings=shared, max_source_len=s)
  assert got == pytest.approx(want, rel=1e-12)


def test_lstm_flops_per_token_by_hand():
  e, h = 16, 24
  layer = lambda d: d * 4 * h + h * 4 * h + 4 * h  # w_ih, w_hh, bias
  n = V * e + layer(e) + layer(h) + h * V + V  # every parameter, the embedding too
  assert flops("lstm", 64, 0, embed_dim=e, hidden_size=h, num_layers=2) == 6 * n


def test_lstm_attention_flops_per_token_by_hand():
  e, h = 16, 24
  layer = lambda d: d * 4 * h + h * 4 * h + 4 * h
  m = 2 * h  # bidirectional encoder output
  encoder = 2 * (layer(e) + layer(m))  # two layers each way
  decoder = layer(e) + layer(h) + h * 4 * h  # and the input feeding's weight
  attention = m * h + (m + h) * h  # luong's W_a, the combining layer
  n = V * e + encoder + decoder + attention + h * V + V
  assert flops("lstm_attention", 10, 14, embed_dim=e, hidden_size=h, num_layers=2,
               num_encoder_layers=2) == 6 * n


def model_section(name: str, **overrides):
  m = registry.model_defaults(name)
  defaults = dict(num_layers=2, num_heads=N, embed_dim=D) if "num_heads" in m else {}
  m.update({**defaults, **overrides})
  return m


def flops(name: str, seq_len: int, source_len: int, **overrides) -> float:
  cfg = factory.model_config(model_section(name, **overrides), 50, seq_len, source_len)
  _, state = abstract_train_state(cfg, optax.sgd(0.1))
  return model_flops_per_token(cfg, state.params, seq_len, source_len)
