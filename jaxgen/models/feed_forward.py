"""Feed-forward layers: `make` builds a block's MLP from its config; a new kind (a
mixture of experts next) is one more entry in `KINDS` and one branch in `make`.

Shapes: B batch, T length, M = B*T tokens, D width, F hidden width.
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxgen.models import layers
from jaxgen.models.params import param
from jaxgen.parallel.activations import constrain

KINDS = ("gelu", "swiglu")  # GPT-2's GELU MLP, Llama's gated SiLU (SwiGLU)


def make(cfg, *, rngs: nnx.Rngs) -> nnx.Module:
  """The feed-forward layer of a block whose config (a TransformerConfig) says `mlp`,
  `embed_dim`, `mlp_width`, `use_bias`, dtypes and `out_init_std`."""
  if cfg.mlp not in KINDS:
    raise ValueError(f"model.mlp={cfg.mlp!r} is not one of {KINDS}")
  return Mlp(cfg.embed_dim, cfg.mlp_width, cfg.mlp, cfg.use_bias, cfg.dtype, cfg.param_dtype,
             cfg.out_init_std, rngs=rngs)


class Mlp(nnx.Module):
  """GELU MLP (GPT-2) or SwiGLU (Llama): D -> F -> D."""

  def __init__(self, dim: int, hidden: int, kind: str, use_bias: bool, dtype, param_dtype,
               out_init_std: float, *, rngs: nnx.Rngs):
    self.kind, self.dtype = kind, dtype
    init = nnx.initializers.normal(0.02)
    self.wi = param(rngs, init, (dim, hidden), ("embed", "mlp"), param_dtype)
    self.wg = param(rngs, init, (dim, hidden), ("embed", "mlp"),
                    param_dtype) if kind == "swiglu" else None
    self.wo = param(rngs, nnx.initializers.normal(out_init_std), (hidden, dim), ("mlp", "embed"),
                    param_dtype)
    zeros = nnx.initializers.zeros
    self.bi = param(rngs, zeros, (hidden,), ("mlp",), param_dtype) if use_bias else None
    self.bo = param(rngs, zeros, (dim,), ("embed",), param_dtype) if use_bias else None

  def __call__(self, x_BTD: jax.Array) -> jax.Array:
    dt = self.dtype
    x_MD = constrain(layers.tokens_2d(x_BTD).astype(dt), layers.MD)
    h_MF = x_MD @ self.wi[...].astype(dt)
    if self.bi is not None:
      h_MF += self.bi[...].astype(dt)
    if self.wg is not None:
      h_MF = jax.nn.silu(x_MD @ self.wg[...].astype(dt)) * h_MF
    else:
      h_MF = jax.nn.gelu(h_MF, approximate=True)
    # Megatron's layout: the hidden units split over the tensor axis, so the
    # second matmul ends in one reduction rather than a gather of h.
    h_MF = constrain(h_MF, ("batch", "mlp"))
    y_MD = h_MF @ self.wo[...].astype(dt)
    if self.bo is not None:
      y_MD += self.bo[...].astype(dt)
    return constrain(y_MD, layers.MD).reshape(x_BTD.shape[:-1] + (y_MD.shape[-1],))
