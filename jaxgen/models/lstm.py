"""Multi-layer LSTM language model, scanned over time.

Gate order in every fused [.., 4H] array is (i, f, g, o), the PyTorch/cuDNN
order: input gate, forget gate, cell candidate, output gate. Per step:

  i, f, g, o = split(x_t @ W_ih + b + h @ W_hh, 4)
  c = sigmoid(f) * c + sigmoid(i) * tanh(g)
  h = sigmoid(o) * tanh(c)

Speed comes from keeping the sequential part small: the input projection of
all timesteps is one large matmul before the scan (for a small vocabulary, a
gather from the projected embedding table), the scan body runs only the
[B, H] @ [H, 4H] recurrent matmul plus elementwise gate math, and a
hand-written VJP keeps the weight gradients out of the backward loop.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxgen import metrics
from jaxgen.models import layers, registry
from jaxgen.parallel.activations import constrain, spec_for
from jaxgen.models.interface import DecoderOnly
from jaxgen.models.params import num_values, param

# One (h_BH, c_BH) pair per layer, float32.
Carry = tuple[tuple[jax.Array, jax.Array], ...]

# Logical names of activations (see jaxgen/parallel/activations.py). Inside the time
# scan only the batch is split: splitting the 4H gates or H over the tensor
# axis would put a collective in every time step, so they stay whole.
TBG = ("length", "batch", None)
BH = ("batch", None)


@dataclasses.dataclass(frozen=True)
class LSTMConfig:
  """Shape and numerics of an `LSTMLM`."""

  vocab_size: int  # Already padded (to a multiple of 128) by the caller.
  embed_dim: int = 256
  hidden_size: int = 256
  num_layers: int = 2
  dropout: float = 0.0  # Between layers and before the head; 0 disables it.
  dtype: Any = jnp.float32  # Matmul inputs; use bf16 on accelerators.
  param_dtype: Any = jnp.float32  # Master weights stay fp32 for the optimizer.
  # Time-scan unroll. Measured on the 2-core CPU recipe (2x256, T=64, B=32)
  # 2 and 4 tie (~134 ms/step), 1 is ~5% slower, 8 and 16 1.2x and 2x
  # slower; DESIGN.md's H200 numbers favour 4, so 4 it is.
  unroll: int = 4
  # A forget-gate bias of 1 keeps sigmoid(f) near 0.73 at init so the cell
  # remembers by default and gradients flow across many steps (Jozefowicz
  # et al. 2015); zero would halve the memory each step from the start.
  forget_bias: float = 1.0


class LSTMLM(DecoderOnly, nnx.Module):
  """Token embedding -> num_layers LSTM layers -> linear head over vocab.

  Dropout takes an explicit key (`dropout_rng`, None disables it), as in the
  Transformer, so the model holds only parameters: the train step derives
  the key from the step number and `nnx.merge(graphdef, params)` suffices.
  """

  def __init__(self, cfg: LSTMConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    # Unit-variance embeddings, so lecun-normal W_ih gives O(1) gate inputs.
    self.embedding = param(
        rngs, nnx.initializers.normal(stddev=1.0),
        (cfg.vocab_size, cfg.embed_dim), ("vocab", "embed"), cfg.param_dtype)
    in_dims = [cfg.embed_dim] + [cfg.hidden_size] * (cfg.num_layers - 1)
    self.layers = nnx.List([LSTMLayer(d, cfg, rngs=rngs) for d in in_dims])
    self.head_w = param(
        rngs, nnx.initializers.lecun_normal(),
        (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), cfg.param_dtype)
    self.head_b = param(
        rngs, nnx.initializers.zeros_init(), (cfg.vocab_size,), ("vocab",),
        cfg.param_dtype)

  def __call__(
      self, tokens_BT: jax.Array, *, dropout_rng: jax.Array | None = None
  ) -> jax.Array:
    """Float32 logits [B, T, V] for training, starting from a zero carry."""
    carry = self.initial_carry(tokens_BT.shape[0])
    logits_BTV, _ = self.forward_with_carry(
        tokens_BT, carry, dropout_rng=dropout_rng)
    return logits_BTV

  def forward_with_carry(
      self, tokens_BT: jax.Array, carry: Carry, *,
      dropout_rng: jax.Array | None = None
  ) -> tuple[jax.Array, Carry]:
    """Logits [B, T, V] and the carry after the last token, for generation."""
    # Whole rows for the lookup, as in layers.Embed.
    embedding_VD = constrain(self.embedding[...].astype(self.cfg.dtype), ("vocab", None))
    tokens_TB = tokens_BT.T
    if self.cfg.vocab_size <= tokens_TB.size:
      # Small vocabulary (characters): project the V embedding rows once and
      # gather, instead of projecting B*T embedded tokens. This drops the
      # first layer's three large matmuls (forward, dx, dW_ih) per step.
      gates_in_TBG = self.layers[0].project_vocab(embedding_VD, tokens_TB)
    else:
      x_TBD = jnp.take(embedding_VD, tokens_TB, axis=0, mode="clip")
      gates_in_TBG = self.layers[0].project(x_TBD)
    return self._forward_layers(gates_in_TBG, carry, dropout_rng)

  def initial_carry(self, batch_size: int) -> Carry:
    zeros_BH = jnp.zeros((batch_size, self.cfg.hidden_size), jnp.float32)
    return tuple((zeros_BH, zeros_BH) for _ in range(self.cfg.num_layers))

  def init_cache(self, batch_size: int, max_len: int | None = None,
                 dtype: Any = None) -> Carry:
    """The sampler's interface (shared with the Transformer): a zero carry."""
    del max_len, dtype  # An LSTM's state does not grow with the context.
    return self.initial_carry(batch_size)

  def decode(
      self, tokens_BT: jax.Array, cache: Carry
  ) -> tuple[jax.Array, Carry]:
    """Logits for `tokens_BT` continuing from `cache`, and the new cache."""
    return self.forward_with_carry(tokens_BT, cache)

  @property
  def context_len(self) -> None:
    """An LSTM reads sequences of any length (the sampler's interface)."""
    return None

  def prefill(
      self, tokens_BT: jax.Array, lengths_B: jax.Array, cache: Carry
  ) -> tuple[jax.Array, Carry]:
    """Continues each row by its first `lengths_B` tokens (the rest is padding).

    Returns the logits [B, V] after each row's last real token and the new
    carry; a row's carry stops at its last real token, so padding leaves it
    as it was (and a row with length 0 gets its previous logits again).
    """
    embedding_VD = self.embedding[...].astype(self.cfg.dtype)
    tokens_TB = tokens_BT.T
    valid_TB = jnp.arange(tokens_TB.shape[0])[:, None] < lengths_B
    x_TBD = jnp.take(embedding_VD, tokens_TB, axis=0, mode="clip")
    new_carry = []
    for layer, layer_carry in zip(self.layers, cache):
      x_TBD, layer_carry = layer.recur_masked(layer.project(x_TBD), layer_carry, valid_TB)
      new_carry.append(layer_carry)
    h_BH = new_carry[-1][0]
    logits_BV = jnp.dot(h_BH.astype(self.cfg.dtype), self.head_w[...].astype(self.cfg.dtype),
                        preferred_element_type=jnp.float32)
    return logits_BV + self.head_b[...].astype(jnp.float32), tuple(new_carry)

  def _forward_embedded(
      self, x_BTD: jax.Array, carry: Carry, *,
      dropout_rng: jax.Array | None = None
  ) -> tuple[jax.Array, Carry]:
    """The model after the embedding lookup (lets tests differentiate wrt x)."""
    x_TBD = jnp.swapaxes(x_BTD, 0, 1).astype(self.cfg.dtype)
    return self._forward_layers(
        self.layers[0].project(x_TBD), carry, dropout_rng)

  def _forward_layers(
      self, gates_in_TBG: jax.Array, carry: Carry,
      dropout_rng: jax.Array | None
  ) -> tuple[jax.Array, Carry]:
    """Runs all layers given the first layer's input projection."""
    if len(carry) != self.cfg.num_layers:
      raise ValueError(
          f"carry has {len(carry)} layers, model has {self.cfg.num_layers}")
    # Time-major throughout: the scan walks the leading axis, and staying
    # [T, B, .] between layers avoids a transpose per layer.
    new_carry = []
    for index, (layer, layer_carry) in enumerate(zip(self.layers, carry)):
      if index > 0:
        gates_in_TBG = layer.project(x_TBH)
      x_TBH, layer_carry = layer.recur(gates_in_TBG, layer_carry)
      if dropout_rng is not None:  # Between layers and before the head.
        x_TBH = layers.dropout(
            x_TBH, self.cfg.dropout, jax.random.fold_in(dropout_rng, index))
      new_carry.append(layer_carry)
    # Head in time-major, then one transpose: XLA's CPU runtime rejects the
    # bf16 x bf16 -> f32 dot that a fused "TBH,HV->BTV" becomes.
    logits_TBV = _dot_rows(x_TBH, self.head_w[...].astype(self.cfg.dtype))
    logits_TBV = constrain(logits_TBV + self.head_b[...].astype(jnp.float32),
                           ("length", "batch", "vocab"))
    return jnp.swapaxes(logits_TBV, 0, 1), tuple(new_carry)


class LSTMLayer(nnx.Module):
  """One LSTM layer over a whole time-major sequence."""

  def __init__(self, in_dim: int, cfg: LSTMConfig, *, rngs: nnx.Rngs):
    hidden = cfg.hidden_size
    self.dtype = cfg.dtype
    self.unroll = cfg.unroll
    self.w_ih = param(
        rngs, nnx.initializers.lecun_normal(), (in_dim, 4 * hidden),
        ("embed", "mlp"), cfg.param_dtype)
    # Orthogonal recurrence neither grows nor shrinks h at init.
    self.w_hh = param(
        rngs, nnx.initializers.orthogonal(), (hidden, 4 * hidden),
        ("embed", "mlp"), cfg.param_dtype)
    self.bias = param(
        rngs, _gate_bias_init(cfg.forget_bias), (4 * hidden,), ("mlp",),
        cfg.param_dtype)

  def project(self, x_TBD: jax.Array) -> jax.Array:
    """Input projection of all timesteps in one matmul, outside the scan."""
    gates_in_TBG = _dot_rows(x_TBD.astype(self.dtype), self.w_ih[...].astype(self.dtype))
    return gates_in_TBG + self.bias[...].astype(jnp.float32)

  def project_vocab(
      self, embedding_VD: jax.Array, tokens_TB: jax.Array
  ) -> jax.Array:
    """`project` of embedded tokens, computed per vocabulary row."""
    table_VG = self.project(embedding_VD[None])[0]
    # "clip" skips the out-of-range select that the default "fill" adds.
    return jnp.take(table_VG, tokens_TB, axis=0, mode="clip")

  def recur(
      self, gates_in_TBG: jax.Array, carry: tuple[jax.Array, jax.Array]
  ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """h for every step [T, B, H] and the final (h_BH, c_BH)."""
    # W_hh gathered whole once, before the loop, rather than per step inside it.
    w_hh_HG = constrain(self.w_hh[...].astype(self.dtype), (None, None))
    h0_BH, c0_BH = (constrain(a.astype(jnp.float32), BH) for a in carry)
    h_TBH, h_BH, c_BH = _recurrence(constrain(gates_in_TBG, TBG), w_hh_HG, h0_BH, c0_BH,
                                    self.unroll)
    return constrain(h_TBH, TBG), (h_BH, c_BH)

  def recur_masked(
      self, gates_in_TBG: jax.Array, carry: tuple[jax.Array, jax.Array],
      valid_TB: jax.Array
  ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """`recur` where a row's carry only advances at its valid steps (decoding only:
    no hand-written gradient)."""
    w_hh_HG = self.w_hh[...].astype(self.dtype)
    scale_G = _gate_scale(w_hh_HG.shape[0])

    def step(carry, xs):
      gates_in_BG, valid_B1 = xs
      h_BH, c_BH, _ = _cell(gates_in_BG, *carry, w_hh_HG, scale_G)
      carry = tuple(jnp.where(valid_B1, new, old) for new, old in zip((h_BH, c_BH), carry))
      return carry, carry[0].astype(self.dtype)

    carry = tuple(a.astype(jnp.float32) for a in carry)
    carry, h_TBH = jax.lax.scan(step, carry, (gates_in_TBG, valid_TB[:, :, None]),
                                unroll=self.unroll)
    return h_TBH, carry


# The family (jaxgen.models.registry): its config from config.model, its FLOPs.


def config_from(m, *, vocab_size: int, seq_len: int, source_len: int, dtype,
                param_dtype) -> LSTMConfig:
  del seq_len, source_len  # an LSTM reads any length, and no source
  return LSTMConfig(vocab_size=vocab_size, embed_dim=m.embed_dim, hidden_size=m.hidden_size,
                    num_layers=m.num_layers, dropout=m.dropout, unroll=m.unroll, dtype=dtype,
                    param_dtype=param_dtype)


def flops_per_token(cfg, params: nnx.State, seq_len: int, source_len: int = 0) -> float:
  """6N, every parameter counted (the embedding too), and no attention."""
  del cfg, source_len
  return metrics.flops_per_token(num_values(params), 0, 0, 0, seq_len)


# The recurrence has a hand-written VJP, as cuDNN does: autodiff of the scan
# would accumulate dL/dW_hh inside the backward loop, one thin
# [H, B] @ [B, 4H] matmul and a [H, 4H] add per step. Here the backward loop
# only emits each step's gate gradients and the W_hh gradient is one large
# matmul over all timesteps afterwards.
@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _recurrence(
    gates_in_TBG: jax.Array, w_hh_HG: jax.Array, h0_BH: jax.Array,
    c0_BH: jax.Array, unroll: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Runs the cell over time: (h for every step, final h, final c)."""
  out, _ = _recurrence_fwd(gates_in_TBG, w_hh_HG, h0_BH, c0_BH, unroll)
  return out


def _recurrence_fwd(
    gates_in_TBG: jax.Array, w_hh_HG: jax.Array, h0_BH: jax.Array,
    c0_BH: jax.Array, unroll: int
) -> tuple[tuple[jax.Array, jax.Array, jax.Array], tuple[jax.Array, ...]]:
  dtype = w_hh_HG.dtype
  scale_G = _gate_scale(w_hh_HG.shape[0])

  def step(carry, gates_in_BG):
    h_BH, c_BH, acts_BG = _cell(gates_in_BG, *carry, w_hh_HG, scale_G)
    return (h_BH, c_BH), (h_BH.astype(dtype), c_BH, acts_BG)

  (h_BH, c_BH), (h_TBH, c_TBH, acts_TBG) = jax.lax.scan(
      step, (h0_BH, c0_BH), gates_in_TBG, unroll=unroll)
  residuals = (w_hh_HG, h0_BH, c0_BH, h_TBH, c_TBH, acts_TBG)
  return (h_TBH, h_BH, c_BH), residuals


def _cell(gates_in_BG, h_BH, c_BH, w_hh_HG, scale_G):
  """One step of the cell: the new (h, c) in float32 and the gate activations."""
  gates_BG = gates_in_BG + jnp.dot(
      h_BH.astype(w_hh_HG.dtype), w_hh_HG, preferred_element_type=jnp.float32)
  # sigmoid(x) = 0.5 * tanh(x / 2) + 0.5, so one tanh over all four gates
  # gives every activation in one fused elementwise pass.
  acts_BG = jnp.tanh(gates_BG * scale_G) * scale_G + (1 - scale_G)
  i_BH, f_BH, g_BH, o_BH = jnp.split(acts_BG, 4, axis=-1)
  # Gate math and the cell state stay fp32 even when matmuls are bf16.
  c_BH = f_BH * c_BH + i_BH * g_BH
  return o_BH * jnp.tanh(c_BH), c_BH, acts_BG


def _recurrence_bwd(
    unroll: int, residuals: tuple[jax.Array, ...],
    cotangents: tuple[jax.Array, jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  w_hh_HG, h0_BH, c0_BH, h_TBH, c_TBH, acts_TBG = residuals
  dh_out_TBH, dh_last_BH, dc_last_BH = cotangents
  dtype = w_hh_HG.dtype
  # d act / d pre-activation = (1 - a) * (a + k): k = 0 gives the sigmoid's
  # a(1 - a), k = 1 the tanh's 1 - a^2.
  k_G = 2 * _gate_scale(w_hh_HG.shape[0]) - 1
  c_prev_TBH = jnp.concatenate([c0_BH[None], c_TBH[:-1]], axis=0)
  # Transposed once here rather than inside the loop: measured ~10% faster
  # backward loop on CPU, where the in-loop transposed operand is repacked.
  w_hh_GH = constrain(w_hh_HG.T, (None, None))

  def step(carry, xs):
    dh_next_BH, dc_next_BH = carry
    dh_out_BH, c_BH, c_prev_BH, acts_BG = xs
    i_BH, f_BH, g_BH, o_BH = jnp.split(acts_BG, 4, axis=-1)
    dh_BH = dh_out_BH.astype(jnp.float32) + dh_next_BH
    tanh_c_BH = jnp.tanh(c_BH)
    dc_BH = dc_next_BH + dh_BH * o_BH * (1 - tanh_c_BH * tanh_c_BH)
    dacts_BG = jnp.concatenate(
        [dc_BH * g_BH, dc_BH * c_prev_BH, dc_BH * i_BH, dh_BH * tanh_c_BH],
        axis=-1)
    dgates_BG = constrain(dacts_BG * (1 - acts_BG) * (acts_BG + k_G), BH)
    dh_prev_BH = jnp.dot(dgates_BG.astype(dtype), w_hh_GH,
                         preferred_element_type=jnp.float32)
    return (dh_prev_BH, dc_BH * f_BH), dgates_BG

  (dh0_BH, dc0_BH), dgates_TBG = jax.lax.scan(
      step, (dh_last_BH.astype(jnp.float32), dc_last_BH.astype(jnp.float32)),
      (dh_out_TBH, c_TBH, c_prev_TBH, acts_TBG), reverse=True, unroll=unroll)
  h_prev_TBH = jnp.concatenate([h0_BH[None].astype(dtype), h_TBH[:-1]], axis=0)
  if _batch_split(h_prev_TBH):  # see _dot_rows
    dw_hh_HG = jnp.einsum("TBH,TBG->HG", h_prev_TBH, dgates_TBG.astype(dtype),
                          preferred_element_type=jnp.float32)
  else:
    dw_hh_HG = jnp.dot(layers.tokens_2d(h_prev_TBH).T,
                       layers.tokens_2d(dgates_TBG.astype(dtype)),
                       preferred_element_type=jnp.float32)
  return dgates_TBG, dw_hh_HG.astype(dtype), dh0_BH, dc0_BH


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def _dot_rows(x_TBX: jax.Array, w_XY: jax.Array) -> jax.Array:
  """x @ w over the last axis of a time-major [T, B, X] activation, in float32.

  On one device a 2-D matmul on [T*B, X] token rows (see layers.tokens_2d).
  When the batch is split over devices, merging T with the split B gives rows
  that no device holds in one block, and XLA would gather the whole tensor to
  make them; there the 3-D product keeps every device's rows where they are.
  """
  if _batch_split(x_TBX):
    return jnp.einsum("TBX,XY->TBY", x_TBX, w_XY, preferred_element_type=jnp.float32)
  y_MY = jnp.dot(layers.tokens_2d(x_TBX), w_XY, preferred_element_type=jnp.float32)
  return y_MY.reshape(x_TBX.shape[:-1] + (w_XY.shape[-1],))


def _batch_split(x_TBX: jax.Array) -> bool:
  """Whether the active activation sharding splits this time-major array's batch."""
  spec = spec_for(TBG, x_TBX.shape)
  return spec is not None and spec[1] is not None


def _gate_scale(hidden: int) -> jax.Array:
  """[4H] pre-tanh scale: 1/2 for the sigmoid gates i, f, o and 1 for g."""
  half, one = jnp.full((hidden,), 0.5), jnp.ones((hidden,))
  return jnp.concatenate([half, half, one, half])


def _gate_bias_init(forget_bias: float) -> Callable[..., jax.Array]:
  """Zero gate bias except `forget_bias` on the forget slice (order i,f,g,o)."""

  def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    del key
    hidden = shape[0] // 4
    return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(forget_bias)

  return init


registry.register(registry.Family(
    name="lstm", config_type=LSTMConfig, build_config=config_from, model_type=LSTMLM,
    flops_per_token=flops_per_token, context_limit=lambda cfg: None))
