"""Every config key is checked before anything runs: a systematic walk of bad values.

The keys come from walking the recipes in configs/ (every leaf of every
section), not from the product's rule table, and the bad values from this
file's own table: a key added to the config without an entry here fails
`test_every_key_has_bad_values`. Each generic kind adds its own cases: NaN
and infinities for every float key, a fraction for every int key, a
non-boolean for every bool key. All cases run through the real flag parsing
and `jaxgen.main.main` in one worker process (tests/config_cases_worker.py),
which checks per case: non-zero exit, exactly one `jaxgen: error:` line that
names the key, no traceback, JAX never set up, and the workdir untouched.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from jaxgen import config_check
from jaxgen.errors import UserError
from tests.helpers import leaves, recipe_config

REPO = pathlib.Path(__file__).resolve().parents[1]
TRANSFORMER_RECIPE = "configs/shakespeare_char_cpu.py"
LSTM_RECIPE = "configs/lstm_shakespeare_char.py"
SEQ2SEQ_RECIPE = "configs/seq2seq_reverse.py"
LSTM_ATTENTION_RECIPE = "configs/lstm_attention_reverse.py"

# Out-of-range values per key, as typed after --config.KEY= (the recipes'
# values: seq_len 64, 4 heads of width 128). Keys that accept any string
# (paths, prompts) have none of their own.
BAD = {
    "data.source": ["", "nope", "text:", "ftp:x"],
    "data.train_split": [""],
    "data.eval_split": [""],
    "data.text_key": [""],
    "data.text_lines": [],
    "data.val_fraction": ["-0.1", "1.0", "1.5"],
    "data.tfds_data_dir": [],
    "data.tfds_manual_dir": [],
    "data.tokenizer": ["chars", ""],
    "data.tokenizer_path": [],
    "data.mode": ["random", ""],
    "data.shuffle": [],
    "data.prefetch": ["-1"],
    "data.max_in_memory_mb": ["0"],
    "data.task": ["chat", "seq2seq"],  # seq2seq: the recipe's source gives documents
    "data.mixture": [",", "text:a.txt", "text:a.txt:0", "text:a.txt:-1", "nope:x:1",
                     "synthetic:copy:1"],
    "data.seq_len": ["0", "-5"],
    "data.source_len": ["-1"],
    "data.pair_split": ["random", ""],
    "data.doc_split": ["random", ""],
    "data.source_key": [],
    "data.target_key": [""],
    "data.synthetic_seed": ["-1"],
    "data.synthetic_min_len": ["0", "-2"],
    "data.synthetic_max_len": ["0", "5000"],
    "data.synthetic_symbols": ["0", "27"],
    "data.synthetic_train_examples": ["0"],
    "data.synthetic_eval_examples": ["0", "-1"],
    "train.steps": ["0", "-3"],
    "train.batch_size": ["0", "-1"],
    "train.grad_accum_steps": ["0", "-2"],
    "train.seed": ["-1"],
    "train.learning_rate": ["-0.001", "0"],
    "train.min_learning_rate": ["-1e-4"],
    "train.warmup_steps": ["-1"],
    "train.decay_steps": ["-5"],
    "train.b1": ["1.0", "-0.1"],
    "train.b2": ["1.5", "1.0"],
    "train.eps": ["-1e-8"],
    "train.weight_decay": ["-0.1"],
    "train.grad_clip": ["-1"],
    "train.z_loss": ["-1e-4"],
    "train.label_smoothing": ["-0.1", "1.0"],
    "train.log_every": ["0", "-1"],
    "train.compilation_cache_dir": [],
    "eval.every_steps": ["-1"],
    "eval.steps": ["-1"],
    "eval.batch_size": ["-2"],
    "eval.full_split_at_end": [],
    "eval.full_split_max_tokens": ["-1"],
    "eval.decode_examples": ["-1"],
    "checkpoint.every_steps": ["-1"],
    "checkpoint.keep": ["0", "-1"],
    "checkpoint.keep_best": [],
    "mesh.axes": ["()", "('data', 'data', 'tensor')", "('data', 'fsdp', 'dcn_data')"],
    "mesh.data": ["0", "-2"],
    "mesh.fsdp": ["0", "-5"],
    "mesh.tensor": ["0", "-3"],
    "mesh.logical_axis_rules": [],  # a tuple of pairs: see test_bad_logical_axis_rules
    "mesh.dcn_data": ["0", "-1"],
    "mesh.dcn_fsdp": ["0"],
    "distributed.coordinator_address": ["localhost", "10.0.0.1:port", ":1234", "h:70000"],
    "distributed.num_processes": ["-1"],
    "distributed.process_id": ["-2"],
    "distributed.local_device_ids": ["0;1", "a,b"],
    "distributed.initialization_timeout_s": ["0"],
    "distributed.heartbeat_timeout_s": ["0", "-5"],
    "sample.num_tokens": ["-1"],
    "sample.prompt": [],
    "sample.temperature": ["-0.5"],
    "sample.top_k": ["-1"],
    "model.type": ["gru", ""],
    "model.num_layers": ["0", "-1"],
    "model.num_heads": ["0"],
    "model.num_kv_heads": ["-1", "3", "8"],  # 3 and 8 do not divide 4 heads
    "model.embed_dim": ["0", "-1"],
    "model.head_dim": ["-1"],
    "model.mlp_dim": ["-1"],
    "model.max_len": ["-1", "32"],  # 32 < data.seq_len
    "model.position": ["alibi"],
    "model.rope_base": ["0", "-1", "nan"],
    "model.norm_eps": ["0", "-1e-5", "inf"],
    "model.norm": ["batchnorm"],
    "model.mlp": ["relu"],
    "model.use_bias": [],
    "model.dropout": ["1.0", "-0.1"],
    "model.tie_embeddings": [],
    "model.scan_layers": [],
    "model.remat": ["some"],
    "model.attention_backend": ["flash9"],
    "model.dtype": ["float64", "int8"],
    "model.param_dtype": ["int8"],
    "model.vocab_size": ["-1", "2"],
    "model.vocab_multiple": ["0"],
    "model.hidden_size": ["0", "-1"],
    "model.unroll": ["0"],
    "model.num_encoder_layers": ["-1"],
    "model.max_source_len": ["-1", "8"],  # 8 < data.source_len
    "model.share_embeddings": [],
    "model.bidirectional": [],
    "model.attention": ["dot", ""],
}

# Bad combinations of values that are each fine alone.
RELATIONS = [
    (TRANSFORMER_RECIPE, ["--config.train.batch_size=12", "--config.train.grad_accum_steps=5"],
     "train.grad_accum_steps"),
    (TRANSFORMER_RECIPE, ["--config.train.min_learning_rate=0.01"], "train.min_learning_rate"),
    (TRANSFORMER_RECIPE, ["--config.mesh.data=-1", "--config.mesh.fsdp=-1"], "mesh.fsdp"),
    (TRANSFORMER_RECIPE, ["--config.data.tokenizer=sentencepiece"], "data.tokenizer_path"),
    (TRANSFORMER_RECIPE, ["--config.model.embed_dim=130"], "model.embed_dim"),
    (TRANSFORMER_RECIPE, ["--config.model.max_len=64", "--config.data.seq_len=65"],
     "data.seq_len"),
    (TRANSFORMER_RECIPE, ["--config.model.num_heads=3"], "model.num_heads"),
    (TRANSFORMER_RECIPE, ["--config.model.num_heads=8", "--config.model.num_kv_heads=3"],
     "model.num_kv_heads"),
    (TRANSFORMER_RECIPE, ["--config.model.position=rope", "--config.model.head_dim=7"],
     "model.position"),
    (LSTM_RECIPE, ["--config.data.mode=pack"], "data.mode"),
    (LSTM_ATTENTION_RECIPE, ["--config.data.mode=pack"], "data.mode"),
    (SEQ2SEQ_RECIPE, ["--config.data.mode=concat"], "data.mode='concat'"),
    (SEQ2SEQ_RECIPE, ["--config.data.synthetic_min_len=9", "--config.data.synthetic_max_len=3"],
     "data.synthetic_min_len"),
    (SEQ2SEQ_RECIPE, ["--config.data.source=synthetic:rotate"], "synthetic:rotate"),
    (SEQ2SEQ_RECIPE, ["--config.data.source=text:x.txt"], "model.type='encoder_decoder'"),
    (TRANSFORMER_RECIPE, ["--config.data.source=synthetic:copy"], "model.type='transformer'"),
    (LSTM_ATTENTION_RECIPE, ["--config.data.source=text:x.txt"], "model.type='lstm_attention'"),
    (TRANSFORMER_RECIPE, ["--config.distributed.num_processes=2",
                          "--config.distributed.process_id=2"], "distributed.process_id"),
]


def bad_values(key: str, value: object) -> list[str]:
  """This file's bad values for `key`, plus the generic ones for its type."""
  values = list(BAD[key])
  if isinstance(value, bool):
    values.append("maybe")
  elif isinstance(value, int):
    values.append("1.5")
  elif isinstance(value, float):
    values += ["nan", "inf", "-inf"]
  return values


def cases() -> list[tuple[str, str, str]]:
  """(recipe, key, bad value): every key of the Transformer recipe, the LSTM
  recipe's model keys, and the encoder-decoder's own model keys (it shares the
  Transformer's rules for the rest), and the LSTM with attention's own model keys."""
  out = []
  shared = {SEQ2SEQ_RECIPE: set(leaves(recipe_config(TRANSFORMER_RECIPE))),
            LSTM_ATTENTION_RECIPE: set(leaves(recipe_config(LSTM_RECIPE)))}
  for recipe in (TRANSFORMER_RECIPE, LSTM_RECIPE, SEQ2SEQ_RECIPE, LSTM_ATTENTION_RECIPE):
    for key, value in leaves(recipe_config(recipe)).items():
      if recipe != TRANSFORMER_RECIPE and not key.startswith("model."):
        continue
      if key in shared.get(recipe, ()):
        continue
      out += [(recipe, key, bad) for bad in bad_values(key, value)]
  return out


def test_every_key_has_bad_values():
  recipes = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").glob("*.py"))
  keys = set()
  for recipe in recipes:
    keys |= set(leaves(recipe_config(recipe)))
  assert keys - set(BAD) == set(), "add bad values for these keys to BAD"
  assert set(BAD) - keys == set(), "BAD names keys no recipe has"


@pytest.mark.slow
def test_every_bad_value_is_one_line_before_anything_runs(tmp_path):
  all_cases = cases()
  assert len(all_cases) > 150
  existing = tmp_path / "existing"
  existing.mkdir()
  (existing / "notes.txt").write_text("sentinel\n")
  before = _snapshot(existing)
  missing = tmp_path / "missing"
  argvs = [["jaxgen", "train", f"--config={recipe}", f"--config.{key}={value}",
            f"--workdir={existing if i % 2 else missing}"]
           for i, (recipe, key, value) in enumerate(all_cases)]
  argvs += [["jaxgen", "train", f"--config={recipe}", *overrides, f"--workdir={missing}"]
            for recipe, overrides, _ in RELATIONS]
  results = _run_worker(argvs)

  needles = [key for _, key, _ in all_cases] + [key for _, _, key in RELATIONS]
  failures = []
  for result, key in zip(results, needles):
    lines = [l for l in result["stderr"].splitlines() if l.strip()]
    problems = []
    if result["reached"]:
      problems.append("not rejected: the run went on to set up JAX")
    if result["traceback"] or "Traceback" in result["stderr"] + result["stdout"]:
      problems.append("traceback")
    if result["status"] in (0, None):
      problems.append(f"exit status {result['status']}")
    if len(lines) != 1 or not lines[0].startswith("jaxgen: error: "):
      problems.append(f"not one error line: {lines}")
    elif key not in lines[0]:
      problems.append(f"the line does not name {key}: {lines[0]}")
    if problems:
      failures.append(f"{' '.join(result['argv'][2:-1])}: {'; '.join(problems)}")
  assert not failures, f"{len(failures)} of {len(results)} cases:\n" + "\n".join(failures)
  assert _snapshot(existing) == before
  assert not missing.exists()


def test_the_error_line_names_value_and_allowed_range():
  cfg = recipe_config(TRANSFORMER_RECIPE)
  cfg.train.learning_rate = -0.001
  with pytest.raises(UserError) as err:
    config_check.check(cfg)
  assert str(err.value) == ("train.learning_rate=-0.001 is not allowed: use a finite number "
                            "> 0")
  cfg = recipe_config(TRANSFORMER_RECIPE)
  cfg.model.num_kv_heads = 3
  with pytest.raises(UserError, match=r"model.num_kv_heads=3 must divide model.num_heads=4.*"
                                      r"use one of 1, 2, 4"):
    config_check.check(cfg)


@pytest.mark.parametrize("rules", [
    (("embed", "fsdp"), ("mlp", "model")),  # no mesh axis 'model'
    (("embed",),),
    (("embed", "fsdp", "tensor"),),
    (("", "fsdp"),),
    (("embed", ("fsdp", 3)),),
], ids=["unknown-axis", "one-item", "three-items", "empty-name", "axis-not-a-name"])
def test_bad_logical_axis_rules(rules):
  cfg = recipe_config(TRANSFORMER_RECIPE)
  cfg.mesh.logical_axis_rules = rules
  with pytest.raises(UserError, match="mesh.logical_axis_rules") as err:
    config_check.check(cfg)
  assert "\n" not in str(err.value)


def test_unknown_keys_in_a_recipe_are_refused():
  cfg = recipe_config(TRANSFORMER_RECIPE)
  cfg.train.unlock()
  cfg.train.learning_rat = 0.1
  with pytest.raises(UserError, match="train.learning_rat is not a key"):
    config_check.check(cfg)


def test_every_shipped_recipe_passes():
  for path in sorted((REPO / "configs").glob("*.py")):
    config_check.check(recipe_config(str(path.relative_to(REPO))))


def _run_worker(argvs: list[list[str]]) -> list[dict]:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "tests.config_cases_worker"], cwd=REPO, env=env,
                       input=json.dumps(argvs), capture_output=True, text=True, timeout=300,
                       check=True)
  results = json.loads(out.stdout)
  assert len(results) == len(argvs)
  return results


def _snapshot(path: pathlib.Path) -> dict:
  return {str(p.relative_to(path)): (None if p.is_dir() else p.read_bytes(), p.stat().st_mtime_ns)
          for p in [path, *sorted(path.rglob("*"))]}
