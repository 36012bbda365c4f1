"""Small building blocks shared by the language models: embedding, norms, dropout.

The feed-forward layers live in feed_forward.py (`Mlp` is re-exported here).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgen.parallel.activations import constrain
from jaxgen.models.params import param

__all__ = ["Embed", "LayerNorm", "RMSNorm", "Mlp", "dropout", "make_norm", "param", "tokens_2d"]

# Logical names of activations (see jaxgen/parallel/activations.py): the residual
# stream, and token matrices [M = B*T, .], whose rows split as the batch does.
BTD = ("batch", "length", "embed")
MD = ("batch", "embed")


class Embed(nnx.Module):
  """Token embedding whose table doubles as the tied output head."""

  def __init__(self, vocab_size: int, embed_dim: int, param_dtype, *, rngs: nnx.Rngs):
    self.table = param(rngs, nnx.initializers.normal(0.02), (vocab_size, embed_dim),
                       ("vocab", "embed"), param_dtype)

  def __call__(self, tokens_BT: jax.Array) -> jax.Array:
    # Whole rows for the lookup: a table split along 'embed' (over fsdp) would
    # give embeddings split along D, which XLA cannot turn into the batch-split
    # residual stream without gathering everything (and likewise for the
    # gradient's scatter). Rows split over 'vocab' are looked up where they live.
    table_VD = constrain(self.table[...], ("vocab", None))
    return constrain(jnp.take(table_VD, tokens_BT, axis=0), BTD)

  def attend(self, x_BTD: jax.Array) -> jax.Array:
    """Float32 logits against every token's embedding."""
    return jnp.einsum("BTD,VD->BTV", x_BTD, self.table[...].astype(x_BTD.dtype),
                      preferred_element_type=jnp.float32)


class LayerNorm(nnx.Module):
  """LayerNorm computed in float32 whatever the input dtype."""

  def __init__(self, dim: int, use_bias: bool, eps: float, param_dtype, *, rngs: nnx.Rngs):
    self.eps = eps
    self.scale = param(rngs, nnx.initializers.ones, (dim,), ("embed",), param_dtype)
    self.bias = param(rngs, nnx.initializers.zeros, (dim,), ("embed",),
                      param_dtype) if use_bias else None

  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    x = x_BTD.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...]
    if self.bias is not None:
      y = y + self.bias[...]
    return y.astype(x_BTD.dtype)


class RMSNorm(nnx.Module):
  """RMSNorm (no mean subtraction, no bias), computed in float32."""

  def __init__(self, dim: int, eps: float, param_dtype, *, rngs: nnx.Rngs):
    self.eps = eps
    self.scale = param(rngs, nnx.initializers.ones, (dim,), ("embed",), param_dtype)

  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    x = x_BTD.astype(jnp.float32)
    y = x * jax.lax.rsqrt(jnp.square(x).mean(-1, keepdims=True) + self.eps) * self.scale[...]
    return y.astype(x_BTD.dtype)


def make_norm(kind: str, dim: int, use_bias: bool, eps: float, param_dtype, rngs: nnx.Rngs):
  if kind == "rmsnorm":
    return RMSNorm(dim, eps, param_dtype, rngs=rngs)
  return LayerNorm(dim, use_bias, eps, param_dtype, rngs=rngs)


def tokens_2d(x_BTD: jax.Array) -> jax.Array:
  """[B, T, D] -> [M = B*T, D].

  Projections run on 2-D token matrices: the weight gradient is then a plain
  x^T @ dy, which XLA's CPU backend computes without the slow transposed
  copies that the 3-D einsum's gradient gets (measured 40% faster for the MLP).
  """
  return x_BTD.reshape(-1, x_BTD.shape[-1])


def dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Inverted dropout; identity when `rng` is None or `rate` is 0."""
  if rng is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def __getattr__(name):
  # `layers.Mlp` as before it moved to feed_forward.py (which imports this module).
  if name == "Mlp":
    from jaxgen.models.feed_forward import Mlp
    return Mlp
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
