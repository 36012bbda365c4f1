"""`jaxgen import --hf=DIR --workdir=W`: a local Hugging Face GPT-2 or Llama checkpoint
as a jaxgen workdir.

W gets a step-0 checkpoint (the converted weights, a fresh optimizer state),
its config (also as W/config.py, a recipe that fine-tunes it: `jaxgen train
--config=W/config.py --workdir=W`), the tokenizer (W/hf_tokenizer/, read
through the `tokenizers` library; its whole tokenizer.json is also stored in
the checkpoint) and W/tokenizer.json. `jaxgen sample --workdir=W` then
generates from it. Only safetensors are read (sharded or not); nothing is
downloaded: a hub name instead of a directory is refused in one line.

Choices: the vocabulary is not padded (`model.vocab_multiple=1`), so every
logit, and the training loss, is exactly HF's; dropout is 0; the config's
`data.seq_len` is min(1024, the context).
"""

from __future__ import annotations

import json
import pathlib

from jaxgen.errors import UserError
from jaxgen.workdir_paths import hf_model_dir
from jaxgen.interop import hf_layouts, safetensors_io


def import_hf(hf_dir: str, workdir: str) -> pathlib.Path:
  from jaxgen import config as config_lib
  from jaxgen.data.hf_tokenizer import HfTokenizer
  from jaxgen.interop import workdir as workdir_lib
  from jaxgen.models.factory import model_config
  src = hf_model_dir(hf_dir)
  try:
    hf = json.loads((src / "config.json").read_text())
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read {src / 'config.json'}: {e}") from None
  if isinstance(hf, dict) and "model_type" not in hf and isinstance(hf.get("model"), dict):
    raise UserError(f"--hf={hf_dir} is a jaxgen workdir, not a Hugging Face model directory: "
                    f"sample or train it as it is (--workdir={hf_dir}), or export it first")
  kind, overrides = hf_layouts.model_overrides(hf)
  tokenizer = HfTokenizer.from_dir(src)
  vocab = int(hf["vocab_size"])
  if tokenizer.vocab_size > vocab:
    raise UserError(f"{src}: the tokenizer has {tokenizer.vocab_size} ids but the model "
                    f"only {vocab} rows")
  cfg = config_lib.base_config()
  cfg.model = config_lib.transformer_model()
  cfg.model.update(overrides)
  cfg.model.vocab_size = vocab
  cfg.model.vocab_multiple = 1
  cfg.data.tokenizer = "hf"
  wd = pathlib.Path(workdir).expanduser().absolute()
  cfg.data.tokenizer_path = str(wd / "hf_tokenizer")
  cfg.data.seq_len = min(1024, cfg.model.max_len)
  cfg.sample.prompt = ""
  model_cfg = model_config(cfg.model, tokenizer.vocab_size, cfg.data.seq_len)
  flat = hf_layouts.from_hf(kind, model_cfg, safetensors_io.read(src))
  flat = {name: x.astype("float32") for name, x in flat.items()}
  tok_dir = _tokenizer_dir(src)
  try:
    return workdir_lib.write(wd, cfg, tokenizer, flat, origin=str(src),
                             files={"config.py": _recipe(cfg, src, wd)},
                             dirs={"hf_tokenizer": tok_dir})
  finally:
    import shutil
    shutil.rmtree(tok_dir, ignore_errors=True)


def _tokenizer_dir(src: pathlib.Path) -> pathlib.Path:
  """A copy source holding only the tokenizer files (not the weights)."""
  import tempfile
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="jaxgen-hf-tok-"))
  for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "generation_config.json", "config.json"):
    if (src / name).is_file():
      (tmp / name).write_bytes((src / name).read_bytes())
  return tmp


def _recipe(cfg, src: pathlib.Path, wd: pathlib.Path) -> str:
  """W/config.py: the imported model's config as a recipe to fine-tune from."""
  model = json.dumps(cfg.model.to_dict(), indent=4, sort_keys=True)
  data = json.dumps({"tokenizer": cfg.data.tokenizer, "tokenizer_path": cfg.data.tokenizer_path,
                     "seq_len": cfg.data.seq_len}, indent=4)
  return f'''"""Fine-tunes the Hugging Face model imported from {src}.

jaxgen train --config={wd / "config.py"} --workdir={wd}

Written by `jaxgen import`. Change data.*, train.* and the rest freely; the
model.* keys that define the weights, and the tokenizer, must stay as they are.
"""

from jaxgen import config

MODEL = {model.replace("true", "True").replace("false", "False")}
DATA = {data}


def get_config():
  c = config.base_config()
  c.model = config.transformer_model()
  c.model.update(MODEL)
  c.data.update(DATA)
  c.sample.prompt = ""
  return c
'''
