"""AdamW with linear warm-up, cosine decay and global-norm clipping (optax)."""

from __future__ import annotations

import jax
import ml_collections
import optax
from flax import nnx

from jaxgen.models.params import decays as _decay_flag


def make_optimizer(t: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation,
                                                          optax.Schedule]:
  """The optimizer for config section `train`, and its learning-rate schedule."""
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=t.learning_rate, warmup_steps=t.warmup_steps,
      decay_steps=max(t.decay_steps or t.steps, t.warmup_steps + 1),
      end_value=t.min_learning_rate)
  adamw = optax.adamw(schedule, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay,
                      mask=_is_matrix)
  if t.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(t.grad_clip), adamw), schedule
  return adamw, schedule


def _is_matrix(params):
  """Decay matrices (kernels, embeddings); not norm scales or biases (nanoGPT, GPT-3).

  Each parameter says so itself (`decay` metadata, see jaxgen.models.params), set
  where it is created: no list of names here to keep in step with the models. A leaf
  without that metadata (a plain array) decays when it is a matrix, rank >= 2, not
  counting a scanned stack's leading 'layers' axis.
  """
  def decays(leaf):
    is_var = isinstance(leaf, nnx.Variable)
    flag = _decay_flag(leaf) if is_var else None
    if flag is None:
      axes = (leaf.get_metadata().get("logical_axes") if is_var else None) or ()
      flag = len(leaf.shape) - (1 if axes[:1] == ("layers",) else 0) >= 2
    return leaf.replace(flag) if is_var else flag
  return jax.tree.map(decays, params, is_leaf=lambda x: isinstance(x, nnx.Variable))
