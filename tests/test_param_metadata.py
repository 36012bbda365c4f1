"""Weight decay follows each parameter's own `decay` metadata, not its name; the
feed-forward factory builds what the config names."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

from jaxgen import config as base
from jaxgen.models import feed_forward
from jaxgen.models.params import decays, param
from jaxgen.models.transformer import TransformerConfig
from jaxgen.train.optimizer import make_optimizer


class Odd(nnx.Module):
  """Names that used to decide decay ('bias', 'kernel'), set against their metadata."""

  def __init__(self, rngs):
    ones = nnx.initializers.ones
    self.bias = param(rngs, ones, (4, 4), ("embed", "mlp"), decay=True)
    self.kernel = param(rngs, ones, (4, 4), ("embed", "mlp"), decay=False)
    self.vector = param(rngs, ones, (4,), ("embed",))
    self.matrix = param(rngs, ones, (4, 4), ("embed", "mlp"))


def test_decay_is_read_from_metadata_not_names():
  m = Odd(nnx.Rngs(0))
  assert [decays(v) for v in (m.bias, m.kernel, m.vector, m.matrix)] == [True, False, False, True]
  t = base.base_config().train
  t.update(warmup_steps=0, grad_clip=0.0, weight_decay=0.5, learning_rate=1e-3)
  opt, _ = make_optimizer(t)
  params = nnx.state(m, nnx.Param)
  # With zero gradients, Adam's step is 0 and only decoupled weight decay moves a parameter.
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = opt.update(zeros, opt.init(params), params)
  new = nnx.State(optax.apply_updates(params, updates))
  moved = {k: float(new[k][...].ravel()[0]) < 1.0 for k in ("bias", "kernel", "vector", "matrix")}
  assert moved == {"bias": True, "kernel": False, "vector": False, "matrix": True}


def test_feed_forward_factory_builds_the_named_kind():
  cfg = TransformerConfig(vocab_size=8, max_len=4, num_layers=1, num_heads=2, embed_dim=8)
  gelu = feed_forward.make(cfg, rngs=nnx.Rngs(0))
  swiglu = feed_forward.make(dataclasses.replace(cfg, mlp="swiglu"), rngs=nnx.Rngs(0))
  assert gelu.wg is None and swiglu.wg[...].shape == (8, 32)
  # TransformerConfig refuses an unknown kind itself; the factory checks it too.
  moe = types.SimpleNamespace(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
  moe.mlp = "moe"
  with pytest.raises(ValueError, match="model.mlp='moe'"):
    feed_forward.make(moe, rngs=nnx.Rngs(0))
