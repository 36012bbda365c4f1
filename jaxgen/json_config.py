"""`--config=runs/a/config.json`: a workdir's config.json (the resolved config `jaxgen
train` and `jaxgen import` write there) read as a recipe, so a run can be resumed,
planned or inspected without the recipe file that started it.

JSON turned the config's tuples into lists (turned back here); keys jaxgen gained
since the run started take their defaults, and keys it no longer knows are
refused by the config checks like any unknown key.
"""

from __future__ import annotations

import json
import os


class RecipeOrJsonParser:
  """--config's parser: a .json path is read here, anything else by config_flags' own
  parser (`recipes`), which runs a recipe's get_config()."""

  def __init__(self, recipes):
    self._recipes = recipes

  def parse(self, path):
    if not str(path).endswith(".json"):
      return self._recipes.parse(path)
    import ml_collections
    try:
      with open(os.path.expanduser(path), encoding="utf-8") as f:
        obj = json.load(f)
    except ValueError as e:  # not JSON (or not UTF-8): an OSError, shown as a load error
      raise OSError(f"{path} is not a JSON config ({e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
      raise OSError(f"{path} is not a jaxgen config (a workdir's config.json, which `jaxgen "
                    "train` writes, has data, train and model sections)")
    from jaxgen import config as defaults
    from jaxgen.models import registry
    # Keys added to jaxgen since the run started take their defaults.
    model = registry.model_defaults(obj["model"].get("type"))
    base = defaults.base_config().to_dict()
    base["model"] = model.to_dict() if model is not None else {}
    cfg = ml_collections.ConfigDict(_merged(base, _as_tuples(obj)))
    cfg.lock()
    return cfg

  def __getattr__(self, name):
    return getattr(self._recipes, name)


def _merged(base: dict, over: dict) -> dict:
  out = dict(base)
  for key, value in over.items():
    both = isinstance(value, dict) and isinstance(base.get(key), dict)
    out[key] = _merged(base[key], value) if both else value
  return out


def _as_tuples(obj):
  """JSON's lists back to the tuples the config held (mesh.logical_axis_rules)."""
  if isinstance(obj, dict):
    return {k: _as_tuples(v) for k, v in obj.items()}
  return tuple(_as_tuples(v) for v in obj) if isinstance(obj, list) else obj
