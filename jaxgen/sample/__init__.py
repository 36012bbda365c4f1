"""Sampling: `jaxgen.sample.generate(workdir, prompt, ...)` for notebooks."""


def generate(*args, **kwargs):
  """Texts from a trained workdir; see `jaxgen.sample.restore.generate`."""
  from jaxgen.sample.restore import generate as _generate  # jax loads on first use
  return _generate(*args, **kwargs)
