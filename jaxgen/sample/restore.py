"""Text from a trained workdir: restore what sampling needs, then generate.

`generate` is the notebook API (`jaxgen.sample.generate`); `jaxgen sample`
calls it. Everything comes from the chosen checkpoint itself: parameters,
tokenizer and model config.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import SingleDeviceSharding

from jaxgen import logs
from jaxgen.data.tokenizer import prompt_start, tokenizer_from_spec
from jaxgen.errors import UserError
from jaxgen.models.factory import context_limit, model_config
from jaxgen.sample import batching
from jaxgen.train.checkpoint import Checkpointer
from jaxgen.train.optimizer import make_optimizer
from jaxgen.train.state import abstract_train_state
from jaxgen.workdir_paths import checkpoints_of


def generate(workdir: str, prompt: str | Sequence[str] = "", *, max_new_tokens: int = 200,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             num_samples: int = 1, seed: int = 0, beam_size: int = 0,
             length_penalty: float = 1.0, repetition_penalty: float = 1.0,
             window_stride: int = 1, stop: Sequence[str] = (), step: int | None = None,
             best: bool = False,
             source: str | Sequence[str] | None = None,
             truncate_source: bool = False) -> list[str] | list[list[str]]:
  """Continuations of `prompt` from a checkpoint of `workdir`.

  One prompt (a str) gives a list of `num_samples` texts; a sequence of
  prompts gives one such list per prompt. The checkpoint is the newest, or
  `step`, or with `best` the one with the lowest validation loss. With
  `beam_size` > 0, beam search replaces sampling and the `num_samples` best
  beams are returned, best first. `repetition_penalty` > 1 discourages tokens
  already in the text (Hugging Face's formula; sampling only). Past the
  model's context each token is predicted from the last `context` tokens; a
  `window_stride` k > 1 re-reads them only every k tokens (faster; each token
  then reads at least context - k + 1). Each text ends before the first of the
  `stop` strings its continuation contains.

  A conditional (encoder-decoder) model generates from `source` instead (a
  str, or a sequence of them: one output list per source), with no prompt;
  its outputs end at eos or after `max_new_tokens`, at most the decoder's
  context less one (bos). A source longer than the model reads is an error,
  or with `truncate_source` cut as training cuts it.
  """
  if source is not None:
    single = isinstance(source, str)
    sources = [source] if single else list(source)
    if prompt:
      raise UserError("give a source or a prompt, not both: an encoder-decoder generates "
                      "from its source, a language model continues a prompt")
    _check_options(temperature, top_k, top_p, max_new_tokens, num_samples, beam_size, sources,
                   repetition_penalty, stop)
  else:
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    _check_options(temperature, top_k, top_p, max_new_tokens, num_samples, beam_size, prompts,
                   repetition_penalty, stop)
  graphdef, params, cfg, tokenizer = restore(workdir, step=step, best=best)
  model_cfg = model_config(cfg.model, tokenizer.vocab_size, cfg.data.seq_len,
                           cfg.data.get("source_len", 0))
  conditional = nnx.merge(graphdef, params).conditional
  if conditional != (source is not None):
    raise UserError(f"the model in {workdir} " + (
        "generates from a source: give --source or --source_file (Python: source=...)"
        if conditional else "is a language model: give --prompt or --prompt_file, not a "
        "source"))
  if conditional:
    from jaxgen.sample import conditional as cond
    texts = cond.generate_from_sources(
        graphdef, params, tokenizer, sources, source_len=model_cfg.max_source_len,
        max_new_tokens=min(max_new_tokens, model_cfg.max_len - 1), temperature=temperature,
        top_k=top_k, top_p=top_p, num_samples=num_samples, seed=seed, beam_size=beam_size,
        length_penalty=length_penalty, repetition_penalty=repetition_penalty,
        truncate=truncate_source, report_cut=True)
    texts = [[cut_at_stop(t, stop) for t in outs] for outs in texts]
    return texts[0] if single else texts
  model_cfg_max_len = context_limit(model_cfg)
  if window_stride < 1 or (model_cfg_max_len and window_stride > model_cfg_max_len):
    raise UserError(f"--window_stride={window_stride} must be at least 1 and at most the "
                    f"model's context ({model_cfg_max_len}); 1 reads the whole context for "
                    "every token")
  ids = [_prompt_ids(p, i, tokenizer, cfg.data.mode, model_cfg_max_len, beam_size,
                     max_new_tokens) for i, p in enumerate(prompts)]
  if beam_size:
    tokens = batching.beam_rows(graphdef, params, tokenizer, ids, max_new_tokens,
                                beam_size=beam_size, length_penalty=length_penalty,
                                max_len=model_cfg_max_len)
  else:
    tokens = batching.sampled_rows(graphdef, params, tokenizer, ids, max_new_tokens,
                                   num_samples=num_samples, seed=seed, temperature=temperature,
                                   top_k=top_k, top_p=top_p,
                                   repetition_penalty=repetition_penalty,
                                   window_stride=window_stride, max_len=model_cfg_max_len)
  texts = [[prompts[i] + cut_at_stop(tokenizer.decode(batching.until_eos(t, tokenizer.eos_id)),
                                     stop)
            for t in tokens[i][:num_samples]] for i in range(len(prompts))]
  return texts[0] if single else texts


def restore(workdir: str, *, step: int | None = None, best: bool = False):
  """(graphdef, params, config, tokenizer) from one checkpoint, on one device; the
  optimizer state is not read."""
  wd = checkpoints_of(workdir)
  with logs.quiet_libraries():  # Orbax's routine warnings on every read-only open
    return _restore(wd, step, best)


def _restore(wd: pathlib.Path, step: int | None, best: bool):
  ckpt = Checkpointer(wd, read_only=True)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise UserError(f"{wd / 'checkpoints'} holds no complete checkpoint; train first "
                      "(checkpoints are written every checkpoint.every_steps and at the end)")
    if best:
      step = ckpt.best_step()
      if step is None:
        raise UserError(f"no checkpoint in {wd / 'checkpoints'} has a validation loss; "
                        "evaluate while training (eval.every_steps) or pass --step")
    if step is not None and step not in steps:
      raise UserError(f"{wd / 'checkpoints'} has no checkpoint at step {step}; it has "
                      f"{', '.join(map(str, steps))}")
    chosen = step if step is not None else steps[-1]
    meta = ckpt.meta(chosen)
    cfg = ml_collections.ConfigDict(meta["config"])
    tokenizer = tokenizer_from_spec(meta["tokenizer"], wd / "checkpoints" / str(chosen))
    model_cfg = model_config(cfg.model, tokenizer.vocab_size, cfg.data.seq_len,
                             cfg.data.get("source_len", 0))
    graphdef, abstract = abstract_train_state(model_cfg, make_optimizer(cfg.train)[0])
    params = ckpt.restore_params(abstract.params, SingleDeviceSharding(jax.devices()[0]), chosen)
  finally:
    ckpt.close()
  return graphdef, params, cfg, tokenizer


def read_prompt_file(path: str, flag: str = "--prompt_file") -> list[str]:
  """One prompt per line (a trailing newline ends the last one; '\\n' inside is kept out)."""
  p = pathlib.Path(path).expanduser()
  try:
    text = p.read_text(encoding="utf-8")
  except FileNotFoundError:
    raise UserError(f"{flag}={path} does not exist") from None
  except UnicodeDecodeError as e:
    raise UserError(f"{flag}={path} is not UTF-8 (bad byte at offset {e.start}); "
                    "convert it, e.g. with iconv") from None
  except OSError as e:
    raise UserError(f"{flag}={path} cannot be read: {e.strerror}") from None
  prompts = text.splitlines()
  if not prompts:
    raise UserError(f"{flag}={path} is empty; write one per line")
  return prompts


def _prompt_ids(prompt, index, tokenizer, data_mode, max_len, beam_size, max_new_tokens):
  where = "the prompt" if index == 0 else f"prompt {index + 1}"
  try:
    ids = tokenizer.encode(prompt) if prompt else np.asarray([], np.int32)
  except UserError as e:
    raise UserError(f"{where}: {e}") from None
  ids = np.concatenate([np.asarray(prompt_start(tokenizer, data_mode, bool(prompt)), np.int32),
                        ids])
  if max_len is not None and len(ids) > max_len:
    raise UserError(f"{where} is {len(ids)} tokens but the model's context holds {max_len}; "
                    "shorten it")
  if beam_size and max_len is not None and len(ids) + max_new_tokens > max_len:
    raise UserError(f"beam search keeps the whole text in context: {where} ({len(ids)} "
                    f"tokens) plus --max_new_tokens={max_new_tokens} exceeds the model's "
                    f"context of {max_len}; generate fewer tokens")
  return ids


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
  """`text` up to (not including) the earliest occurrence of any of the `stop` strings."""
  ends = [i for i in (text.find(s) for s in stop) if i >= 0]
  return text[:min(ends)] if ends else text


def _check_options(temperature, top_k, top_p, max_new_tokens, num_samples, beam_size, prompts,
                   repetition_penalty=1.0, stop=()):
  if repetition_penalty <= 0:
    raise UserError(f"--repetition_penalty={repetition_penalty} must be positive; 1 turns it "
                    "off, above 1 discourages repeats")
  if repetition_penalty != 1.0 and beam_size:
    raise UserError("--repetition_penalty applies to sampling, not to beam search; drop one")
  if isinstance(stop, str) or any(not isinstance(s, str) or not s for s in stop):
    raise UserError("stop strings must be a list of non-empty strings (--stop=TEXT, repeatable)")
  if temperature < 0:
    raise UserError(f"--temperature={temperature} is negative; use 0 (greedy) or more")
  if not 0 < top_p <= 1:
    raise UserError(f"--top_p={top_p} is outside (0, 1]; 1 turns nucleus sampling off")
  if top_k < 0:
    raise UserError(f"--top_k={top_k} is negative; use 0 (off) or a positive count")
  if max_new_tokens < 1 or num_samples < 1:
    raise UserError("--max_new_tokens and --num_samples must be at least 1")
  if beam_size < 0:
    raise UserError(f"--beam_size={beam_size} is negative; use 0 (sampling) or a beam count")
  if beam_size and num_samples > beam_size:
    raise UserError(f"--num_samples={num_samples} exceeds --beam_size={beam_size}: beam "
                    "search returns at most beam_size texts per prompt")
  if not prompts:
    raise UserError("no prompts given")
