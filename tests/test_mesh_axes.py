"""The mesh's axes come from the config (mesh.axes): another axis, here an 'expert' axis,
is a config change that the checks, the mesh, the shardings and a training run follow."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxgen import config_check
from jaxgen.errors import UserError
from jaxgen.parallel import mesh as mesh_lib, specs
from jaxgen.train.loop import train_and_evaluate
from tests.helpers import one_line, tiny_transformer_config, write_corpus
from tests.train_helpers import train_losses

AXES = ("data", "expert", "fsdp", "tensor")


def with_expert_axis(cfg, data=2, expert=2, fsdp=1, tensor=2):
  cfg.mesh.axes = AXES
  cfg.mesh.expert = expert
  cfg.mesh.update(data=data, fsdp=fsdp, tensor=tensor)
  rules = dict(cfg.mesh.logical_axis_rules)
  rules["mlp"] = ("expert", "tensor")  # what an MoE's expert dimension would take
  cfg.mesh.logical_axis_rules = tuple(rules.items())
  return cfg


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  return write_corpus(tmp_path_factory.mktemp("corpus") / "verse.txt")


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")
def test_an_expert_axis_is_a_config_change(source):
  cfg = with_expert_axis(tiny_transformer_config(source))
  config_check.check(cfg)
  mesh = mesh_lib.make_mesh(cfg.mesh, jax.devices()[:8])
  assert mesh.axis_names == AXES
  assert dict(mesh.shape) == {"data": 2, "expert": 2, "fsdp": 1, "tensor": 2}
  rules = cfg.mesh.logical_axis_rules
  assert specs.logical_to_spec(("embed", "mlp"), (32, 64), mesh, rules) == P(
      None, ("expert", "tensor"))
  assert config_check.launch_problems(cfg, 8) == []
  assert "mesh.data * mesh.expert * mesh.fsdp * mesh.tensor" in config_check.launch_problems(
      cfg, 4)[0]


def test_axes_that_are_not_declared_are_refused_in_one_line(source):
  cfg = tiny_transformer_config(source)
  cfg.mesh.expert = 2  # a size for an axis mesh.axes does not name
  with pytest.raises(UserError, match="mesh.expert is not a key") as err:
    config_check.check(cfg)
  assert "\n" not in one_line(err)
  cfg = with_expert_axis(tiny_transformer_config(source))
  cfg.mesh.axes = ("data", "fsdp", "tensor", "expert", "fsdp")
  with pytest.raises(UserError, match="names an axis twice"):
    config_check.check(cfg)
  cfg = tiny_transformer_config(source)
  cfg.mesh.logical_axis_rules = (("mlp", "expert"),)  # no such axis in mesh.axes
  with pytest.raises(UserError, match="names a mesh axis that does not exist"):
    config_check.check(cfg)


@pytest.mark.slow
@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")
def test_training_on_a_mesh_with_an_expert_axis_matches_one_without(source, tmp_path):
  """The 2 x 2 x 1 x 2 mesh trains the losses a data x tensor mesh of the same devices
  trains (the expert axis shards the MLP further)."""
  expert = with_expert_axis(tiny_transformer_config(source))
  plain = tiny_transformer_config(source)
  plain.mesh.update(data=2, fsdp=1, tensor=4)
  train_and_evaluate(expert, str(tmp_path / "expert"))
  train_and_evaluate(plain, str(tmp_path / "plain"))
  got, want = train_losses(tmp_path / "expert"), train_losses(tmp_path / "plain")
  assert len(got) == len(want) == 20
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
