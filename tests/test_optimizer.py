"""Optimizer: schedule shape, decay on matrices only, z-loss and label smoothing in the
gradient only."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxgen import config as base
from jaxgen.models.factory import create_model, model_config
from jaxgen.train.optimizer import _is_matrix, make_optimizer
from jaxgen.train.step import cross_entropy


def train_section(**overrides):
  t = base.base_config().train
  t.update({**dict(steps=1000, warmup_steps=100, learning_rate=1e-3, min_learning_rate=1e-4),
            **overrides})
  return t


def test_warmup_then_cosine_to_the_minimum():
  _, schedule = make_optimizer(train_section())
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(50)), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(100)), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(550)), (1e-3 + 1e-4) / 2, rtol=1e-5)
  np.testing.assert_allclose(float(schedule(1000)), 1e-4, rtol=1e-5)


def test_weight_decay_touches_matrices_only():
  # With zero gradients, Adam's step is 0 and only decoupled weight decay moves a parameter.
  opt, _ = make_optimizer(train_section(warmup_steps=0, grad_clip=0.0, weight_decay=0.5))
  params = {"kernel": jnp.ones((4, 4)), "scale": jnp.ones((4,)), "bias": jnp.ones((4,))}
  state = opt.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = opt.update(zeros, state, params)
  new = optax.apply_updates(params, updates)
  assert float(new["kernel"][0, 0]) < 1.0
  assert float(new["scale"][0]) == 1.0 and float(new["bias"][0]) == 1.0


def _decayed_names(model_section, **overrides):
  model_section.update(overrides)
  model = create_model(model_config(model_section, 64, 16), nnx.Rngs(params=0))
  mask = _is_matrix(nnx.state(model, nnx.Param))
  flat = jax.tree_util.tree_flatten_with_path(mask)[0]
  return ({jax.tree_util.keystr(path[:-1]).replace("encoder_", "") for path, v in flat if v},
          {jax.tree_util.keystr(path[:-1]) for path, v in flat if not v})


@pytest.mark.parametrize("make", [base.transformer_model, base.encoder_decoder_model])
def test_scanned_layers_decay_what_looped_layers_decay(make):
  # A scanned stack's norm scales are [L, D] and its biases [L, D] or [L, N, H]; the
  # 'layers' axis must not turn them into decayed "matrices".
  small = dict(num_layers=2, num_heads=2, embed_dim=16, use_bias=True)
  if make is base.encoder_decoder_model:
    small["num_encoder_layers"] = 2
  looped, _ = _decayed_names(make(), **small, scan_layers=False)
  scanned, scanned_kept = _decayed_names(make(), **small, scan_layers=True)
  strip = lambda names: {n.replace("['blocks'][0]", "['blocks']").replace("['blocks'][1]", "['blocks']")
                         for n in names}
  assert strip(looped) == scanned
  assert not any(n.endswith(("['scale']", "['bias']", "['bq']", "['bk']", "['bv']", "['bo']",
                             "['bi']")) for n in scanned)
  assert {"['blocks']['attn']['bq']", "['blocks']['attn_norm']['scale']"} <= scanned_kept
  assert "['blocks']['mlp']['wi']" in scanned


@pytest.mark.parametrize("make", [base.lstm_model, base.lstm_attention_model])
def test_lstm_decays_its_kernels_not_its_biases(make):
  decayed, kept = _decayed_names(make(), hidden_size=16)
  assert decayed and all("bias" not in n and "head_b" not in n for n in decayed)
  assert any("bias" in n for n in kept)


def test_z_loss_changes_the_objective_not_the_reported_cross_entropy():
  logits = jax.random.normal(jax.random.key(0), (2, 3, 8)) * 3 + 2
  targets = jnp.array([[1, 2, 3], [4, 5, 6]])
  loss0, ce0 = cross_entropy(logits, targets, 0.0)
  loss1, ce1 = cross_entropy(logits, targets, 1e-2)
  assert float(ce0) == float(ce1) == float(loss0)
  z = jax.nn.logsumexp(logits, axis=-1)
  np.testing.assert_allclose(float(loss1), float(ce0) + 1e-2 * float(jnp.mean(z ** 2)), rtol=1e-6)


def test_label_smoothing_is_the_one_hot_reference_with_weights():
  logits = jax.random.normal(jax.random.key(1), (2, 3, 8)) * 3
  targets = jnp.array([[1, 2, 3], [4, 5, 6]])
  weights = jnp.array([[1, 1, 0], [1, 0, 0]], jnp.float32)
  loss, ce = cross_entropy(logits, targets, 0.0, weights, label_smoothing=0.1)
  smoothed = optax.smooth_labels(jax.nn.one_hot(targets, 8), 0.1)
  per_token = optax.softmax_cross_entropy(logits, smoothed)
  np.testing.assert_allclose(float(loss), float((per_token * weights).sum() / 3), rtol=1e-6)
  plain = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  np.testing.assert_allclose(float(ce), float((plain * weights).sum() / 3), rtol=1e-6)
  assert abs(float(loss) - float(ce)) > 1e-3
