"""Optimizer: schedule shape, decay on matrices only, z-loss and label smoothing in the
gradient only."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen import config as base
from jaxgen.train.optimizer import make_optimizer
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
