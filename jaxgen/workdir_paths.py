"""The directories a command reads, checked with nothing but the file system.

A wrong `--workdir` or `--hf` gets its one line before JAX and the model code are
imported (seconds at every start), and the checks live in one place for the
command line and the Python API alike.
"""

from __future__ import annotations

import pathlib

from jaxgen.errors import UserError


def checkpoints_of(workdir: str | pathlib.Path) -> pathlib.Path:
  """The workdir, which holds a checkpoints directory; UserError if it does not."""
  wd = pathlib.Path(workdir).expanduser()
  if not (wd / "checkpoints").is_dir():
    raise UserError(f"{wd} holds no checkpoints; pass the --workdir of a `jaxgen train` run")
  return wd


def hf_model_dir(hf_dir: str) -> pathlib.Path:
  """The absolute directory of a model written by save_pretrained; UserError otherwise."""
  src = pathlib.Path(hf_dir).expanduser()
  if src.is_dir():
    if not (src / "config.json").is_file():
      raise UserError(f"--hf={hf_dir} has no config.json; point it to a directory written "
                      "by save_pretrained")
    return src.absolute()
  if src.exists():
    raise UserError(f"--hf={hf_dir} is a file; pass the model's directory")
  raise UserError(f"--hf={hf_dir} is not a local directory; jaxgen imports offline and "
                  "downloads nothing: fetch a hub model first (e.g. `huggingface-cli "
                  f"download {hf_dir} --local-dir DIR`) and pass --hf=DIR")
