"""The pure train and eval steps: `train_step(state, batch) -> (state, metrics)`."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxgen.parallel import activations
from jaxgen.train.state import TrainState


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, *, grad_accum_steps: int = 1,
                    z_loss: float = 0.0, label_smoothing: float = 0.0,
                    mesh: jax.sharding.Mesh | None = None, rules=()) -> Callable:
  """The (unjitted) train step; `batch` holds int32 `inputs` and `targets` [B, T] (and
  whatever else the model's `batch_logits` reads: see `jaxgen.models.interface`).

  With a `mesh`, the model's activations are constrained to the layouts that
  `rules` give their logical names (see jaxgen/parallel/activations.py).
  """

  def loss_fn(params, batch, rng, denom):
    logits_BTV, aux = nnx.merge(graphdef, params).batch_outputs(batch, dropout_rng=rng)
    loss, ce = cross_entropy(logits_BTV, batch["targets"], z_loss, batch.get("weights"), denom,
                             label_smoothing)
    # Each micro-batch's auxiliary losses are its own means: a 1/n share of each
    # makes the summed gradients (and the summed metrics) the whole batch's mean.
    aux = {name: value / grad_accum_steps for name, value in aux.items()}
    if aux:  # a loss without auxiliary terms stays exactly the cross-entropy's
      loss = loss + sum(aux.values())
    return loss, (ce, aux)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    # Set inside the traced function, so it holds wherever tracing happens
    # (the first call, `.lower()`, a retrace) and nowhere else.
    with activations.use(mesh, rules):
      return _train_step(state, batch)

  def _train_step(state, batch):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    # One denominator for the whole batch keeps the loss a mean over every
    # target that counts, however the micro-batches split the padding.
    denom = _weight_sum(batch)
    if grad_accum_steps == 1:
      (_, (ce, aux)), grads = grad_fn(state.params, batch, rng, denom)
    else:
      (ce, aux), grads = _accumulate(grad_fn, state.params, batch, rng, denom,
                                     grad_accum_steps)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"train_loss": ce, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(state.step),
               **{f"train_{name}": value for name, value in aux.items()}}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def jit_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation,
                   schedule: optax.Schedule, train_cfg, state_sharding,
                   batch_sharding, rules) -> Callable:
  """The one compiled train step used by training and the benchmarks: sharded in and
  out as the state and batch are, with the incoming state's buffers donated.

  Activations are sharded over the batch's mesh by `rules`, the config's
  `mesh.logical_axis_rules`.
  """
  step = make_train_step(graphdef, optimizer, schedule,
                         grad_accum_steps=train_cfg.grad_accum_steps, z_loss=train_cfg.z_loss,
                         label_smoothing=train_cfg.get("label_smoothing", 0.0), mesh=batch_sharding.mesh, rules=rules)
  return jax.jit(step, in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, None), donate_argnums=0)


def make_eval_step(graphdef: nnx.GraphDef, mesh=None, rules=()) -> Callable:
  """`eval_step(params, batch) -> (summed cross-entropy, targets counted)`, and for a
  model with auxiliary losses a third item: {name: its loss times targets counted}.

  Sums rather than means, so that batches with more padding weigh less.
  Activations are sharded over `mesh` by `rules`, as in the train step.
  """

  def eval_step(params, batch):
    with activations.use(mesh, rules):
      logits_BTV, aux = nnx.merge(graphdef, params).batch_outputs(batch)
    denom = _weight_sum(batch)
    ce = cross_entropy(logits_BTV, batch["targets"], 0.0, batch.get("weights"), denom)[1]
    if not aux:
      return ce * denom, denom
    return ce * denom, denom, {name: value * denom for name, value in aux.items()}

  return eval_step


def cross_entropy(logits_BTV, targets_BT, z_loss: float, weights_BT=None, denom=None,
                  label_smoothing: float = 0.0):
  """(loss to minimise, mean cross-entropy) over the targets with weight 1, in float32.

  `denom` (default: the weights' sum) is what the weighted sums are divided by.
  With `label_smoothing` a, the loss is PyTorch's `CrossEntropyLoss(label_smoothing=a)`:
  (1 - a) * cross-entropy + a * the mean over the V classes of -log p; the
  cross-entropy reported stays the plain one.
  """
  logits_BTV = logits_BTV.astype(jnp.float32)
  ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
  if weights_BT is None:
    weights_BT = jnp.ones_like(ce_BT)
  if denom is None:
    denom = jnp.maximum(weights_BT.sum(), 1.0)
  ce = (ce_BT * weights_BT).sum() / denom
  loss = ce
  if label_smoothing:
    # mean_v(-log p_v) = log Z - mean_v(logit_v), without a [B, T, V] one-hot.
    uniform_BT = jax.nn.logsumexp(logits_BTV, axis=-1) - logits_BTV.mean(axis=-1)
    loss = ((1.0 - label_smoothing) * ce
            + label_smoothing * (uniform_BT * weights_BT).sum() / denom)
  if z_loss:
    # PaLM's z-loss keeps log Z near 0, which stabilises low-precision training.
    log_z_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
    loss = ce + z_loss * (jnp.square(log_z_BT) * weights_BT).sum() / denom
  return loss, ce


def _weight_sum(batch):
  if "weights" in batch:
    return jnp.maximum(batch["weights"].astype(jnp.float32).sum(), 1.0)
  return jnp.asarray(batch["targets"].size, jnp.float32)


def _accumulate(grad_fn, params, batch, rng, denom, n):
  """Loss and gradient of the whole batch from `n` micro-batches, one at a time
  (lax.scan); each micro-batch's sums are divided by the whole batch's `denom`."""

  def split(x_BT):
    # Row i of micro-batch m is row i*n + m: each micro-batch takes an equal
    # share of every device's rows, so no data moves between devices.
    b = x_BT.shape[0]
    return x_BT.reshape(b // n, n, *x_BT.shape[1:]).swapaxes(0, 1)

  micro = jax.tree.map(split, batch)

  def body(carry, xs):
    ce_sum, grad_sum = carry
    mb, i = xs
    (_, (ce, aux)), g = grad_fn(params, mb, jax.random.fold_in(rng, i), denom)
    return (ce_sum + ce, jax.tree.map(jnp.add, grad_sum, g)), aux

  zeros = jax.tree.map(jnp.zeros_like, params)
  # The auxiliary losses leave the scan one per micro-batch: their names are known
  # only once the model has been traced, too late to shape a carry.
  (ce_sum, grad_sum), aux_N = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros),
                                           (micro, jnp.arange(n)))
  return (ce_sum, jax.tree.map(lambda a_N: a_N.sum(axis=0), aux_N)), grad_sum
