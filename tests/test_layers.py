"""Norms and MLPs of jaxgen.models.layers against plain float64 numpy formulas.

Every parameter is set to random values (not the ones/zeros of the init), so
a layer that skips its scale, bias or a weight cannot match by accident, and
the inputs are chosen so that each detail tested (where eps goes, tanh-GELU
against erf-GELU, which weight is gated) moves the output by far more than
the tolerance.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxgen.models import layers

D, F = 16, 24
TOL = dict(rtol=2e-5, atol=2e-6)  # float32 against float64


def _rand(seed, shape, scale=1.0, offset=0.0):
  return np.random.default_rng(seed).normal(offset, scale, shape)


def _set(variable, value):
  variable.set_value(jnp.asarray(value, jnp.float32))


def _f32(a):
  """The float32 values the module sees, as float64 for the reference."""
  return np.asarray(np.asarray(a, np.float32), np.float64)


# --- references -------------------------------------------------------------

def _layer_norm_ref(x, scale, bias, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)  # biased, as in the paper
  y = (x - mean) / np.sqrt(var + eps) * scale
  return y if bias is None else y + bias


def _rms_norm_ref(x, scale, eps):
  return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * scale


def _gelu_tanh(x):
  return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _gelu_erf(x):
  return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _silu(x):
  return x / (1.0 + np.exp(-x))


# --- norms ------------------------------------------------------------------

# Small-variance rows (std 3e-3, var 1e-5 = eps) make eps move the output by
# tens of percent, so eps outside the square root, or a different eps, fails.
@pytest.mark.parametrize("row_std", [1.0, 3e-3])
@pytest.mark.parametrize("use_bias", [True, False])
def test_layer_norm_matches_formula(use_bias, row_std):
  eps = 1e-5
  ln = layers.LayerNorm(D, use_bias, eps, jnp.float32, rngs=nnx.Rngs(0))
  scale, bias = _rand(1, (D,), 0.5, 1.0), _rand(2, (D,))
  _set(ln.scale, scale)
  if use_bias:
    _set(ln.bias, bias)
  x = _f32(_rand(3, (2, 5, D), row_std, offset=0.7 * row_std))  # a mean to subtract
  want = _layer_norm_ref(x, _f32(scale), _f32(bias) if use_bias else None, eps)
  got = np.asarray(ln(jnp.asarray(x, jnp.float32)), np.float64)
  np.testing.assert_allclose(got, want, **TOL)
  if row_std < 1:  # the case can tell where eps goes
    wrong = _layer_norm_ref(x, _f32(scale), None, 0.0) + (_f32(bias) if use_bias else 0)
    assert np.abs(wrong - want).max() > 100 * TOL["rtol"] * np.abs(want).max()


@pytest.mark.parametrize("row_std", [1.0, 3e-3])
def test_rms_norm_matches_formula(row_std):
  eps = 1e-5
  norm = layers.RMSNorm(D, eps, jnp.float32, rngs=nnx.Rngs(0))
  scale = _rand(1, (D,), 0.5, 1.0)
  _set(norm.scale, scale)
  # A non-zero mean: RMSNorm must not subtract it (LayerNorm would).
  x = _f32(_rand(3, (2, 5, D), row_std, offset=2 * row_std))
  want = _rms_norm_ref(x, _f32(scale), eps)
  np.testing.assert_allclose(np.asarray(norm(jnp.asarray(x, jnp.float32)), np.float64), want,
                             **TOL)
  assert np.abs(_layer_norm_ref(x, _f32(scale), None, eps) - want).max() > 0.1


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
def test_norms_compute_in_float32_and_return_the_input_dtype(kind):
  norm = layers.make_norm(kind, D, True, 1e-5, jnp.float32, rngs=nnx.Rngs(0))
  assert isinstance(norm, layers.RMSNorm if kind == "rmsnorm" else layers.LayerNorm)
  scale = _rand(1, (D,), 0.5, 1.0)
  _set(norm.scale, scale)
  if kind == "layernorm":
    _set(norm.bias, np.zeros(D))
  x_bf16 = jnp.asarray(_rand(3, (4, D), 1.0, offset=0.3), jnp.bfloat16)
  got = norm(x_bf16)
  assert got.dtype == jnp.bfloat16
  x = np.asarray(x_bf16.astype(jnp.float32), np.float64)
  want = (_rms_norm_ref(x, _f32(scale), 1e-5) if kind == "rmsnorm"
          else _layer_norm_ref(x, _f32(scale), None, 1e-5))
  # The float64 result rounded once to bf16: at most half a bf16 ulp (2^-9 relative) off.
  np.testing.assert_allclose(np.asarray(got.astype(jnp.float32), np.float64), want,
                             rtol=2 ** -8, atol=1e-6)


# --- MLPs -------------------------------------------------------------------

def _mlp(kind, use_bias):
  mlp = layers.Mlp(D, F, kind, use_bias, jnp.float32, jnp.float32, 0.02, rngs=nnx.Rngs(0))
  # Weights of std 1/sqrt(fan_in) * 1.5 put the hidden pre-activations at
  # |h| ~ 1.5, where tanh-GELU and erf-GELU differ by up to ~1e-3.
  w = {"wi": _rand(1, (D, F), 1.5 / math.sqrt(D)), "wo": _rand(2, (F, D), 1 / math.sqrt(F)),
       "wg": _rand(3, (D, F), 1.5 / math.sqrt(D)), "bi": _rand(4, (F,), 0.3),
       "bo": _rand(5, (D,), 0.3)}
  for name, value in w.items():
    if getattr(mlp, name, None) is not None:
      _set(getattr(mlp, name), value)
  return mlp, {k: _f32(v) for k, v in w.items()}


@pytest.mark.parametrize("use_bias", [False, True])
def test_gelu_mlp_uses_the_tanh_approximation(use_bias):
  mlp, w = _mlp("gelu", use_bias)
  assert mlp.wg is None
  x = _f32(_rand(6, (2, 5, D)))

  def ref(gelu):
    h = x @ w["wi"] + (w["bi"] if use_bias else 0)
    return gelu(h) @ w["wo"] + (w["bo"] if use_bias else 0)

  got = np.asarray(mlp(jnp.asarray(x, jnp.float32)), np.float64)
  assert got.shape == x.shape
  np.testing.assert_allclose(got, ref(_gelu_tanh), **TOL)
  # The test can tell the two GELUs apart: erf's output is far outside the tolerance.
  assert np.abs(ref(_gelu_erf) - got).max() > 50 * TOL["atol"]


@pytest.mark.parametrize("use_bias", [False, True])
def test_swiglu_mlp_matches_formula(use_bias):
  mlp, w = _mlp("swiglu", use_bias)
  x = _f32(_rand(6, (2, 5, D)))
  # (silu(x Wg) * (x Wi + bi)) Wo + bo: Llama's (silu(x W1) * (x W3)) W2 with
  # W1 = wg (gate), W3 = wi (up), W2 = wo (down); the bias goes on the up path.
  h = _silu(x @ w["wg"]) * (x @ w["wi"] + (w["bi"] if use_bias else 0))
  want = h @ w["wo"] + (w["bo"] if use_bias else 0)
  got = np.asarray(mlp(jnp.asarray(x, jnp.float32)), np.float64)
  np.testing.assert_allclose(got, want, **TOL)
  swapped = _silu(x @ w["wi"]) * (x @ w["wg"]) @ w["wo"]  # gate on the wrong weight
  assert np.abs(swapped - want).max() > 0.1


def test_dropout_is_inverted_and_keeps_one_minus_rate():
  x = jnp.ones((200, 100))
  y = np.asarray(layers.dropout(x, 0.25, jax.random.key(0)))
  kept = y != 0
  np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
  assert abs(kept.mean() - 0.75) < 0.01
  assert layers.dropout(x, 0.25, None) is x and layers.dropout(x, 0.0, jax.random.key(0)) is x
