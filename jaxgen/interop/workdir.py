"""A jaxgen workdir written from parameters alone: a step-0 checkpoint, its config, its tokenizer.

`jaxgen import` uses it for converted Hugging Face weights; `adopt` turns such
a starting checkpoint into the first checkpoint of the `jaxgen train` run that
fine-tunes it (same parameters; the run's own config, optimizer state and data
position), so training then resumes from it like from any checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import SingleDeviceSharding

from jaxgen.errors import UserError

IMPORTED = "imported_from"  # meta key marking a checkpoint written from outside weights


def write(workdir: str | pathlib.Path, cfg: ml_collections.ConfigDict, tokenizer,
          flat: dict[str, np.ndarray], *, origin: str, files: dict[str, str] | None = None,
          dirs: dict[str, pathlib.Path] | None = None) -> pathlib.Path:
  """Creates `workdir` (absent or empty) holding a step-0 checkpoint of `flat` params.

  `flat` holds jaxgen's flat parameter names; the vocabulary rows may be fewer
  than the padded model's (the rest are zeros). `files` are extra text files
  and `dirs` directories copied in. Written in a temporary directory renamed
  into place.
  """
  from jaxgen.interop import flat_params
  from jaxgen.models.factory import model_config
  from jaxgen.train.checkpoint import Checkpointer
  from jaxgen.train.optimizer import make_optimizer
  from jaxgen.train.state import abstract_train_state
  wd = pathlib.Path(workdir).expanduser()
  if wd.exists() and (not wd.is_dir() or any(wd.iterdir())):
    raise UserError(f"--workdir={workdir} already exists and is not empty; import into a "
                    "new directory")
  model_cfg = model_config(cfg.model, tokenizer.vocab_size, cfg.data.seq_len)
  optimizer = make_optimizer(cfg.train)[0]
  _, abstract = abstract_train_state(model_cfg, optimizer)
  flat = _pad_vocab(flat, model_cfg.vocab_size)
  try:
    params = flat_params.unflatten(abstract.params, flat, getattr(model_cfg, "scan_layers", False))
  except (KeyError, ValueError) as e:
    raise UserError(f"the converted weights do not fit the model: {e}") from None
  params = jax.device_put(params, SingleDeviceSharding(jax.devices()[0]))
  state = fresh_state(params, optimizer, cfg.train.seed)
  meta = {"config": json.loads(cfg.to_json_best_effort()), "tokenizer": tokenizer.spec(),
          IMPORTED: origin}
  wd.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{wd.name}.", dir=wd.parent))
  try:
    ckpt = Checkpointer(tmp)
    ckpt.save(0, state, meta=meta)
    ckpt.close()
    tokenizer.save(tmp / "tokenizer.json")
    (tmp / "config.json").write_text(cfg.to_json_best_effort(indent=2) + "\n")
    for name, text in (files or {}).items():
      (tmp / name).write_text(text, encoding="utf-8")
    for name, src in (dirs or {}).items():
      shutil.copytree(src, tmp / name)
    umask_modes(tmp, *(tmp / name for name in dirs or {}))  # mkdtemps make 0700
    if wd.exists():
      wd.rmdir()
    tmp.rename(wd)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return wd


def umask_modes(*paths: pathlib.Path) -> None:
  """Gives `paths` the modes new directories and files get under the umask."""
  umask = os.umask(0)
  os.umask(umask)
  for path in paths:
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def fresh_state(params, optimizer, seed: int):
  """Step 0 with `params`, a new optimizer state and the RNG a new run would have."""
  from jaxgen.train.state import TrainState
  rng = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 1))  # as state._init_fn
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=rng)


def adopt(cfg: ml_collections.ConfigDict, workdir: str) -> None:
  """Before `jaxgen train`: an imported workdir's step-0 checkpoint becomes this run's.

  Does nothing unless the workdir's only checkpoint is an imported one. The
  config's tokenizer and model must be the imported ones (one line if not).
  """
  from jaxgen.models.factory import model_config
  from jaxgen.train.checkpoint import Checkpointer
  wd = pathlib.Path(workdir).expanduser()
  if not (wd / "checkpoints").is_dir():
    return
  reader = Checkpointer(wd, read_only=True)
  try:
    if reader.all_steps() != [0]:
      return
    meta = reader.meta(0)
    if IMPORTED not in meta:
      return
    if jax.process_count() > 1:
      raise UserError(f"{wd} holds an imported checkpoint; start its fine-tuning once on a "
                      "single process, then scale out")
    from jaxgen.data.tokenizer import tokenizer_from_spec
    from jaxgen.train.loop import prepare  # the run's own checks, tokenizer and data
    from jaxgen.train.optimizer import make_optimizer
    from jaxgen.train.state import abstract_train_state
    s = prepare(cfg, workdir)
    saved_tok = tokenizer_from_spec(meta["tokenizer"])
    where = f"the checkpoint imported into {wd} ({meta[IMPORTED]})"
    if saved_tok != s.tokenizer:
      raise UserError(f"data.tokenizer gives {s.tokenizer!r}, but {where} uses "
                      f"{saved_tok!r}; use data.tokenizer='hf' with data.tokenizer_path="
                      f"{wd / 'hf_tokenizer'} (as {wd / 'config.py'} does)")
    saved = ml_collections.ConfigDict(meta["config"])
    theirs = dataclasses.asdict(model_config(saved.model, saved_tok.vocab_size,
                                             saved.data.seq_len))
    ours = dataclasses.asdict(s.model_cfg)
    # How the model is computed may differ; what its weights are may not.
    free = {"dropout", "scan_layers", "remat", "attention_backend", "dtype"}
    differ = [f"model.{k}={ours[k]!r} (imported: {theirs.get(k)!r})" for k in ours
              if k not in free and ours[k] != theirs.get(k)]
    if type(s.model_cfg).__name__ != "TransformerConfig" or differ:
      raise UserError(f"this config's model differs from {where}: {', '.join(differ)}; "
                      f"start from {wd / 'config.py'}")
    optimizer = make_optimizer(cfg.train)[0]
    _, saved_abstract = abstract_train_state(model_config(saved.model, saved_tok.vocab_size,
                                                          saved.data.seq_len), optimizer)
    params = reader.restore_params(saved_abstract.params,
                                   SingleDeviceSharding(jax.devices()[0]), 0)
  finally:
    reader.close()
  if ours["scan_layers"] != theirs["scan_layers"]:
    from jaxgen.interop import flat_params
    _, abstract = abstract_train_state(s.model_cfg, optimizer)
    params = flat_params.unflatten(abstract.params,
                                   flat_params.flatten(params, theirs["scan_layers"]),
                                   ours["scan_layers"])
  state = fresh_state(params, optimizer, cfg.train.seed)
  train_iter = iter(s.train_data)
  data_state = json.dumps(train_iter.get_state()).encode()
  getattr(train_iter, "close", lambda: None)()
  _replace_checkpoints(wd, state, {**s.meta, "fine_tunes": meta[IMPORTED]}, data_state)


def _replace_checkpoints(wd: pathlib.Path, state, meta: dict, data_state: bytes) -> None:
  from jaxgen.train.checkpoint import Checkpointer
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=".adopt.", dir=wd))
  try:
    ckpt = Checkpointer(tmp)
    ckpt.save(0, state, meta=meta, data_state=data_state)
    ckpt.close()
    old = wd / ".checkpoints.imported"
    (wd / "checkpoints").rename(old)
    (tmp / "checkpoints").rename(wd / "checkpoints")
    shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _pad_vocab(flat: dict[str, np.ndarray], vocab: int) -> dict[str, np.ndarray]:
  """Zero rows (columns for the head) up to the padded vocabulary."""
  flat = dict(flat)
  table = flat.get("embed.table")
  if table is not None and table.shape[0] < vocab:
    flat["embed.table"] = np.concatenate(
        [table, np.zeros((vocab - table.shape[0],) + table.shape[1:], table.dtype)])
  if "head" in flat and flat["head"].shape[-1] < vocab:
    head = flat["head"]
    flat["head"] = np.concatenate(
        [head, np.zeros(head.shape[:-1] + (vocab - head.shape[-1],), head.dtype)], axis=-1)
  return flat
