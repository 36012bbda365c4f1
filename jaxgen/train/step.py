"""The pure train and eval steps: `train_step(state, batch) -> (state, metrics)`."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxgen.train.state import TrainState


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, *, grad_accum_steps: int = 1,
                    z_loss: float = 0.0) -> Callable:
  """The (unjitted) train step; `batch` holds int32 `inputs` and `targets` [B, T]."""

  def loss_fn(params, batch, rng):
    model = nnx.merge(graphdef, params)
    logits_BTV = model(batch["inputs"], dropout_rng=rng)
    return cross_entropy(logits_BTV, batch["targets"], z_loss)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    if grad_accum_steps == 1:
      (_, ce), grads = grad_fn(state.params, batch, rng)
    else:
      ce, grads = _accumulate(grad_fn, state.params, batch, rng, grad_accum_steps)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"train_loss": ce, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(state.step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def jit_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                   schedule: optax.Schedule, train_cfg, state_sharding,
                   batch_sharding) -> Callable:
  """The one compiled train step used by training and the benchmarks: sharded in and
  out as the state and batch are, with the incoming state's buffers donated."""
  step = make_train_step(graphdef, optimizer, schedule,
                         grad_accum_steps=train_cfg.grad_accum_steps, z_loss=train_cfg.z_loss)
  return jax.jit(step, in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, None), donate_argnums=0)


def make_eval_step(graphdef: nnx.GraphDef) -> Callable:
  """`eval_step(params, batch) -> mean cross-entropy` (no dropout, no z-loss)."""

  def eval_step(params, batch):
    logits_BTV = nnx.merge(graphdef, params)(batch["inputs"])
    return cross_entropy(logits_BTV, batch["targets"], 0.0)[1]

  return eval_step


def cross_entropy(logits_BTV, targets_BT, z_loss: float):
  """(loss to minimise, mean cross-entropy), in float32."""
  logits_BTV = logits_BTV.astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT).mean()
  loss = ce
  if z_loss:
    # PaLM's z-loss keeps log Z near 0, which stabilises low-precision training.
    loss = ce + z_loss * jnp.square(jax.nn.logsumexp(logits_BTV, axis=-1)).mean()
  return loss, ce


def _accumulate(grad_fn, params, batch, rng, n):
  """Mean loss and gradient over `n` micro-batches, one at a time (lax.scan)."""

  def split(x_BT):
    # Row i of micro-batch m is row i*n + m: each micro-batch takes an equal
    # share of every device's rows, so no data moves between devices.
    b = x_BT.shape[0]
    return x_BT.reshape(b // n, n, *x_BT.shape[1:]).swapaxes(0, 1)

  micro = jax.tree.map(split, batch)

  def body(carry, xs):
    ce_sum, grad_sum = carry
    mb, i = xs
    (_, ce), g = grad_fn(params, mb, jax.random.fold_in(rng, i))
    return (ce_sum + ce, jax.tree.map(jnp.add, grad_sum, g)), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  (ce_sum, grad_sum), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros),
                                       (micro, jnp.arange(n)))
  return ce_sum / n, jax.tree.map(lambda g: g / n, grad_sum)
