"""Safetensors files as Hugging Face writes and reads them, through safetensors.numpy.

One `model.safetensors`, or past `max_shard_size` bytes the shards
`model-00001-of-0000N.safetensors` with `model.safetensors.index.json` (its
`weight_map` names each tensor's shard), as `save_pretrained` does. Shards
are filled in the tensors' order, a tensor never split; a tensor larger than
the limit gets a shard of its own.
"""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np

from jaxgen.errors import UserError

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str | int) -> int:
  """Bytes in '5GB', '200MB', '10KiB' or a plain integer (HF's max_shard_size forms)."""
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", str(text).upper())
  if not m or m.group(2) not in _UNITS or float(m.group(1)) <= 0:
    raise UserError(f"--max_shard_size={text} is not a size; use e.g. 5GB, 500MB or 100KB")
  return int(float(m.group(1)) * _UNITS[m.group(2)])


def write(directory: pathlib.Path, tensors: dict[str, np.ndarray], max_shard_bytes: int,
          prefix: str = "model") -> list[str]:
  """Writes `tensors` into `directory`; returns the file names written."""
  from safetensors.numpy import save_file
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, x in tensors.items():
    if shards[-1] and size + x.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = x
    size += x.nbytes
  meta = {"format": "pt"}  # transformers refuses safetensors without a known format
  if len(shards) == 1:
    save_file(shards[0], str(directory / f"{prefix}.safetensors"), metadata=meta)
    return [f"{prefix}.safetensors"]
  names = [f"{prefix}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  weight_map = {}
  for file, shard in zip(names, shards):
    save_file(shard, str(directory / file), metadata=meta)
    weight_map.update({name: file for name in shard})
  index = {"metadata": {"total_size": sum(x.nbytes for x in tensors.values())},
           "weight_map": weight_map}
  (directory / f"{prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
  return names + [f"{prefix}.safetensors.index.json"]


def read(directory: pathlib.Path) -> dict[str, np.ndarray]:
  """Every tensor of a Hugging Face model directory, sharded or not."""
  from safetensors.numpy import load_file
  if (directory / INDEX).is_file():
    try:
      weight_map = json.loads((directory / INDEX).read_text())["weight_map"]
    except (OSError, ValueError, KeyError) as e:
      raise UserError(f"{directory / INDEX} is not a safetensors index ({e})") from None
    files = sorted(set(weight_map.values()))
  elif (directory / SINGLE).is_file():
    files = [SINGLE]
  else:
    bins = [p.name for p in directory.glob("*.bin")]
    hint = (f"; it has {bins[0]}: load and save_pretrained it with safe_serialization=True "
            "first" if bins else "")
    raise UserError(f"{directory} has no {SINGLE} or {INDEX}{hint}")
  tensors: dict[str, np.ndarray] = {}
  for file in files:
    try:
      tensors.update(load_file(str(directory / file)))
    except FileNotFoundError:
      raise UserError(f"{directory / file}, named in the index, is missing") from None
    except Exception as e:  # safetensors raises its own error types, or TypeError for bf16
      raise UserError(f"{directory / file} cannot be read as numpy arrays "
                      f"({' '.join(str(e).split())[:200]}); save it in float32 or float16"
                      ) from None
  return tensors
