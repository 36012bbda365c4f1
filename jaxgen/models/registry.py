"""Model families by `model.type`: each registers itself here, as Levanter's
`LmConfig.register_subclass` does, and the trainer, planner and sampler ask the
registry instead of naming families.

A family is one module that ends with `register(Family(...))`: its frozen config
dataclass, the builder of that dataclass from `config.model`, its model class
(which provides `jaxgen.models.interface.Model`), its context limit and its
training FLOPs per token. Adding one is that module plus its line in `KNOWN`.

`KNOWN` exists because the command line checks a config before JAX is imported:
it holds what those checks need (the names, which module registers each, whether
it generates from a source, where its `config.model` defaults come from), and
this module imports neither JAX nor Flax. `get` imports a family's module the
first time the family is asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping


@dataclasses.dataclass(frozen=True)
class Known:
  """A built-in family, as the checks that run before JAX see it."""
  module: str  # the module whose import registers the family
  conditional: bool  # generates from a source: reads paired data
  defaults: str  # 'module:function' giving its config.model ConfigDict of defaults


KNOWN: dict[str, Known] = {
    "transformer": Known("jaxgen.models.transformer", False, "jaxgen.config:transformer_model"),
    "lstm": Known("jaxgen.models.lstm", False, "jaxgen.config:lstm_model"),
    "encoder_decoder": Known("jaxgen.models.encoder_decoder", True,
                             "jaxgen.config:encoder_decoder_model"),
    "lstm_attention": Known("jaxgen.models.lstm_attention", True,
                            "jaxgen.config:lstm_attention_model"),
}


def _max_len(cfg: Any) -> int | None:
  return cfg.max_len


@dataclasses.dataclass(frozen=True)
class Family:
  """What a family's module registers.

  `build_config(m, *, vocab_size, seq_len, source_len, dtype, param_dtype)` makes
  `config_type` from `config.model` (`m`), given the vocabulary (already padded),
  the (target) length, the source length (data.source_len, else seq_len) and the
  dtypes `m` names, parsed; it raises ValueError (or UserError) on a bad value.
  `flops_per_token(cfg, params, seq_len, source_len)` is the training FLOPs per
  target token, the numerator of MFU (6N + attention, PaLM appendix B); `params`
  may be abstract (ShapeDtypeStructs).
  """
  name: str  # model.type
  config_type: type
  build_config: Callable[..., Any]
  model_type: type  # model_type(cfg, rngs=nnx.Rngs(...)) builds the model
  flops_per_token: Callable[[Any, Any, int, int], float]
  # The longest sequence the model reads at once; None when unbounded (LSTM).
  context_limit: Callable[[Any], int | None] = _max_len
  # Logical axis -> the config key that sets its size: `jaxgen plan` names it when
  # the axis does not divide over the mesh.
  axis_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)

  @property
  def conditional(self) -> bool:
    """Whether the model generates from a source (the model class says so)."""
    return bool(getattr(self.model_type, "conditional", False))


_REGISTERED: dict[str, Family] = {}


def register(family: Family) -> Family:
  """Adds `family` under `family.name` (again: replaces it); returns it."""
  known = KNOWN.get(family.name)
  if known is not None and known.conditional != family.conditional:
    raise ValueError(f"model family {family.name!r}: its model class says conditional="
                     f"{family.conditional}, registry.KNOWN says {known.conditional}")
  for other in _REGISTERED.values():
    if other.config_type is family.config_type and other.name != family.name:
      raise ValueError(f"model families {other.name!r} and {family.name!r} share the config "
                       f"type {family.config_type.__name__}; each needs its own")
  _REGISTERED[family.name] = family
  return family


def unregister(name: str) -> None:
  """Removes a family registered at run time (tests register fakes)."""
  if name in KNOWN:
    raise ValueError(f"{name!r} is a built-in model family")
  _REGISTERED.pop(name, None)


def names() -> tuple[str, ...]:
  """Every model.type: the built-in ones, then any registered at run time."""
  return tuple(KNOWN) + tuple(n for n in _REGISTERED if n not in KNOWN)


def is_conditional(name: str) -> bool:
  """Whether model.type=`name` generates from a source; without importing JAX for a
  built-in family. False for a name no family has."""
  if name in KNOWN:
    return KNOWN[name].conditional
  return name in _REGISTERED and _REGISTERED[name].conditional


def model_defaults(name: str):
  """The ConfigDict of config.model defaults of the built-in family `name` (None for
  another name)."""
  if name not in KNOWN:
    return None
  module, _, function = KNOWN[name].defaults.partition(":")
  return getattr(importlib.import_module(module), function)()


def get(name: str) -> Family:
  """The family registered as `name`, importing its module if it is a built-in one.

  Raises KeyError for a name no family has (callers turn it into their message)."""
  if name not in _REGISTERED and name in KNOWN:
    importlib.import_module(KNOWN[name].module)
    if name not in _REGISTERED:
      raise RuntimeError(f"{KNOWN[name].module} did not register model family {name!r}")
  return _REGISTERED[name]


def of_config(cfg: Any) -> Family:
  """The family whose config dataclass `cfg` is. Its module defines that class, so
  it is imported, and the family registered, whenever such a `cfg` exists."""
  for family in _REGISTERED.values():
    if type(cfg) is family.config_type:
      return family
  raise TypeError(f"{type(cfg).__name__} is the config of no registered model family; "
                  "register one with jaxgen.models.registry.register")
