"""AdamW with linear warm-up, cosine decay and global-norm clipping (optax)."""

from __future__ import annotations

import jax
import ml_collections
import optax
from flax import nnx

# Parameters added to a layer's output rather than multiplied with its input: never
# decayed, whatever their rank (attention's [heads, head_dim] biases are 2-D).
_ADDITIVE = frozenset({"scale", "bias", "bq", "bk", "bv", "bo", "bi", "head_b"})


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

  A scanned stack's leading 'layers' axis does not count: its norm scales are [L, D]
  and must not be decayed when the same model unscanned would not be.
  """
  def decays(path, leaf):
    is_var = isinstance(leaf, nnx.Variable)
    axes = (leaf.get_metadata().get("logical_axes") if is_var else None) or ()
    rank = len(leaf.shape) - (1 if axes[:1] == ("layers",) else 0)
    name = str(getattr(path[-1], "key", getattr(path[-1], "name", path[-1]))) if path else ""
    decay = name not in _ADDITIVE and rank >= 2
    return leaf.replace(decay) if is_var else decay
  return jax.tree_util.tree_map_with_path(
      decays, params, is_leaf=lambda x: isinstance(x, nnx.Variable))
