"""`jaxgen sample` / `jaxgen.sample.generate`: restore a trained workdir and generate.

The module's workdir holds a small Transformer trained until it knows its
verse by heart (train loss about 0.2, far below the verse's unigram entropy of
2.9), so what it generates depends on its parameters: greedy text is checked
against an independent greedy decode by full forward passes of the restored
model (no cache, no scan), and sampled tokens against the sets the filters
allow at each position.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

import jaxgen.sample
from jaxgen.errors import UserError
from jaxgen.sample.restore import restore
from tests.helpers import (xla_flags, assert_one_error, one_line, run_jaxgen, tiny_transformer_config,
                           write_corpus)
from tests.sample_helpers import Forward, RiggedLM
from tests.train_helpers import run

pytestmark = pytest.mark.slow  # the tests sample from a workdir that a module fixture trains


def _config(source, **train):
  cfg = tiny_transformer_config(source, **{**dict(steps=300, learning_rate=1e-2), **train})
  cfg.data.text_lines = True  # documents are lines: the model learns what follows eos
  # The verse's 60 copies hold each line 60 times: a hashed split would send all copies
  # of a line to validation; these tests want validation lines the model has learnt.
  cfg.data.doc_split = "tail"
  cfg.checkpoint.update(every_steps=100, keep=5)
  cfg.eval.update(every_steps=100, steps=2)
  return cfg


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("sample")
  run(_config(write_corpus(tmp / "verse.txt")), tmp / "run")
  return tmp / "run"


@pytest.fixture(scope="module")
def overtrained(workdir, tmp_path_factory):
  """A copy of `workdir` trained 100 steps more at a learning rate that wrecks the
  model: its newest checkpoint (400) is far from its best (300)."""
  path = tmp_path_factory.mktemp("overtrained") / "run"
  shutil.copytree(workdir, path)
  run(_config(f"text:{workdir.parent / 'verse.txt'}", steps=400, learning_rate=3.0), path)
  return path


def generate(workdir, prompt="", **kwargs):
  return jaxgen.sample.generate(str(workdir), prompt, **kwargs)


def verse(workdir) -> str:
  return (workdir.parent / "verse.txt").read_text(encoding="utf-8")


def test_samples_continue_the_prompt(workdir):
  forward = Forward(workdir)
  # Greedy: the cached, scanned decoder picks what full forward passes pick
  # (16 new tokens after a 5-token prompt: one window of the 32-token context).
  want, new = forward.greedy("To be", 16)
  assert forward.tokenizer.eos_id not in new
  assert generate(workdir, "To be", max_new_tokens=16, temperature=0) == [want]
  assert want in verse(workdir)  # the model learned the verse

  # Sampled: every new token is one the filters allow at its position: among
  # the 3 most likely, and inside the smallest set holding 0.8 of their mass.
  temperature, top_k, top_p = 2.0, 3, 0.8
  texts = generate(workdir, "To be", max_new_tokens=16, num_samples=4, seed=1,
                   temperature=temperature, top_k=top_k, top_p=top_p)
  assert len(texts) == 4 and any(t != want for t in texts)
  tok = forward.tokenizer
  for text in texts:
    assert text.startswith("To be")
    new = [int(i) for i in tok.encode(text[len("To be"):])]
    assert len(new) <= 16
    if len(new) < 16:
      new.append(tok.eos_id)  # the text ended at a sampled eos
    ids = forward.prompt_ids("To be") + new
    logits = forward.logits(ids) / temperature
    for pos in range(len(ids) - len(new), len(ids)):
      row, token = logits[pos - 1], ids[pos]
      best = np.argsort(-row, kind="stable")[:top_k]
      assert token in best, (text, pos)
      probs = np.exp(row[best] - row[best].max())
      probs /= probs.sum()
      mass_before = probs[:list(best).index(token)].sum()
      assert mass_before < top_p + 1e-6, (text, pos, probs)


def test_greedy_is_deterministic_and_unconditional_works(workdir):
  # Unconditional text starts after an eos, as every document after the first did.
  first = generate(workdir, "", max_new_tokens=16, temperature=0)
  want, _ = Forward(workdir).greedy("", 16)
  assert first == [want] and len(want) > 0
  # Another call, another seed: greedy depends on neither.
  assert generate(workdir, "", max_new_tokens=16, temperature=0, seed=5) == first


def test_seeds_choose_the_samples(workdir):
  options = dict(max_new_tokens=16, num_samples=4, temperature=1.5)
  texts = generate(workdir, "", seed=1, **options)
  assert len(set(texts)) > 1  # the rows of one batch draw independently
  assert generate(workdir, "", seed=1, **options) == texts  # a separate call
  assert generate(workdir, "", seed=2, **options) != texts


def test_prompts_of_several_lengths_are_batched_without_changing_results(workdir):
  # One batch holds every prompt, whatever its length; each prompt's texts
  # are those it gets alone, greedy or sampled (sample s of every prompt
  # draws from random stream s).
  prompts = ["To be", "Whether", "To be", "T", "And by opposing end"]
  for kwargs in (dict(temperature=0), dict(temperature=0.8, num_samples=2, seed=4)):
    batched = generate(workdir, prompts, max_new_tokens=15, **kwargs)
    assert [len(t) for t in batched] == [kwargs.get("num_samples", 1)] * len(prompts)
    assert batched == [generate(workdir, p, max_new_tokens=15, **kwargs) for p in prompts]


def test_step_and_best_choose_the_checkpoint(overtrained, workdir):
  kept = sorted(int(p.name) for p in (overtrained / "checkpoints").iterdir()
                if p.name.isdigit())
  records = [json.loads(line) for line in (overtrained / "metrics.jsonl").read_text().splitlines()]
  val_loss = {r["step"]: r["val_loss"] for r in records if "val_loss" in r}
  assert kept == [100, 200, 300, 400] and set(kept) <= set(val_loss), (kept, val_loss)
  best = min(kept, key=val_loss.get)
  assert best != kept[-1], f"the newest checkpoint is also the best: {val_loss}"

  leaf = lambda params: np.asarray(params["embed"]["table"][...])
  params = {s: leaf(restore(str(overtrained), step=s)[1]) for s in kept}
  assert not any(np.array_equal(params[a], params[b]) for a in kept for b in kept if a < b)
  np.testing.assert_array_equal(leaf(restore(str(overtrained), best=True)[1]), params[best])
  np.testing.assert_array_equal(leaf(restore(str(overtrained))[1]), params[kept[-1]])
  # Text follows: best is the model `workdir` ended with, the newest a wrecked one.
  greedy = dict(max_new_tokens=16, temperature=0)
  assert (generate(overtrained, "To be", best=True, **greedy)
          == generate(workdir, "To be", **greedy)
          != generate(overtrained, "To be", **greedy))
  assert generate(overtrained, "To be", step=best, **greedy) == generate(
      overtrained, "To be", best=True, **greedy)


def test_beam_of_one_is_greedy(workdir):
  greedy = generate(workdir, "To be", max_new_tokens=12, temperature=0)
  assert generate(workdir, "To be", max_new_tokens=12, beam_size=1) == greedy
  beams = generate(workdir, "To be", max_new_tokens=12, beam_size=4, num_samples=4)
  assert len(beams) == 4 and len(set(beams)) == 4


def test_pad_and_bos_are_never_sampled(workdir, monkeypatch):
  # The restored model swapped for one whose favourites are pad, bos and the
  # vocabulary's padding (eos is made impossible, so no text is cut short).
  _, params, cfg, tok = restore(str(workdir))
  logits = np.zeros(params["embed"]["table"].shape[0], np.float32)
  logits[[tok.pad_id, tok.bos_id]] = 10.0
  logits[tok.vocab_size:] = 20.0
  logits[tok.eos_id] = -np.inf
  graphdef, rigged = nnx.split(RiggedLM(logits))
  monkeypatch.setattr(jaxgen.sample.restore, "restore",
                      lambda *args, **kwargs: (graphdef, rigged, cfg, tok))
  # One character per new token: pad and bos (which decoding would skip) and
  # padded ids (which no character has) were never drawn.
  for temperature in (0.0, 1.0):
    texts = generate(workdir, "To be", max_new_tokens=40, num_samples=4, seed=3,
                     temperature=temperature)
    assert [len(t) for t in texts] == [45] * 4, texts


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1), "negative"),
    (dict(top_p=0.0), "outside"),
    (dict(top_p=1.5), "outside"),
    (dict(prompt="To be€"), "not in the tokenizer"),
    (dict(prompt="o" * 40), "context"),
    (dict(step=7), "no checkpoint at step 7; it has 100, 200, 300"),
    (dict(beam_size=2, num_samples=3), "exceeds --beam_size"),
    (dict(beam_size=2, max_new_tokens=40), "beam search keeps the whole text"),
])
def test_bad_options_are_one_line_errors(workdir, kwargs, message):
  with pytest.raises(UserError, match=message) as err:
    generate(workdir, **kwargs)
  one_line(err)


@pytest.mark.parametrize("flags, needle", [
    (["--temperature=-1"], "--temperature=-1.0 is negative"),
    (["--step=7"], "has no checkpoint at step 7; it has 100, 200, 300"),
    (["--step=100", "--best"], "--step and --best both given"),
    (["--prompt=To be", "--prompt_file={prompts}"], "--prompt and --prompt_file both given"),
], ids=["negative-temperature", "step-not-kept", "step-and-best", "prompt-and-prompt-file"])
def test_command_errors_are_one_line(workdir, tmp_path, flags, needle):
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("To be\n", encoding="utf-8")
  before = _snapshot(workdir)
  out = run_jaxgen("sample", f"--workdir={workdir}", *[f.format(prompts=prompts) for f in flags])
  assert_one_error(out, needle)
  assert _snapshot(workdir) == before


def test_damaged_checkpoint_is_one_line_error_and_nothing_moves(workdir, tmp_path):
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  garbled = [p for p in (copy / "checkpoints" / "200" / "state").rglob("*")
             if p.is_file() and p.parent.name == "d"]  # the array data files
  assert garbled
  for p in garbled:
    p.write_bytes(bytes((i * 37 + 11) % 256 for i in range(p.stat().st_size)))
  before = _snapshot(copy)
  out = run_jaxgen("sample", f"--workdir={copy}", "--step=200", "--prompt=To be",
                       "--max_new_tokens=5")
  assert_one_error(out, f"checkpoint {copy / 'checkpoints' / '200'} cannot be read")
  assert _snapshot(copy) == before  # sampling never moves, renames or writes anything
  with pytest.raises(UserError, match="cannot be read") as err:
    generate(copy, "To be", max_new_tokens=5, step=200)
  one_line(err)
  assert _snapshot(copy) == before
  # The damage is all that failed: the other checkpoints still sample.
  greedy = dict(max_new_tokens=5, temperature=0)
  assert generate(copy, "To be", **greedy) == generate(workdir, "To be", **greedy)


def test_installed_console_script_samples(workdir, tmp_path):
  # The script installed with this interpreter (`pip install -e .`), else one on PATH.
  script = pathlib.Path(sys.executable).parent / "jaxgen"
  if not script.exists():
    script = shutil.which("jaxgen")
  if not script:
    pytest.fail(f"no `jaxgen` console script next to {sys.executable} or on PATH: "
                "pyproject's [project.scripts] entry is not installed (pip install -e .)")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags())
  out = subprocess.run([str(script), "sample", f"--workdir={workdir}", "--prompt=To be",
                        "--max_new_tokens=5", "--temperature=0"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  text = generate(workdir, "To be", max_new_tokens=5, temperature=0)[0]
  assert out.stdout == f"--- sample 1/1 ---\n{text}\n", out.stdout
  assert "Traceback" not in out.stderr, out.stderr


def test_python_api_prints_nothing_but_what_it_returns(workdir):
  # Orbax logs warnings on every read-only open; the Python API holds them back
  # as the command line does.
  code = (f"import jaxgen.sample; print(jaxgen.sample.generate({str(workdir)!r}, 'To be', "
          "max_new_tokens=5, temperature=0))")
  out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, JAX_PLATFORMS="cpu"),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert out.stderr == "", out.stderr
  assert out.stdout == f"{generate(workdir, 'To be', max_new_tokens=5, temperature=0)}\n"


def test_workdir_without_checkpoint(tmp_path):
  with pytest.raises(UserError, match="holds no checkpoints") as err:
    generate(tmp_path)
  one_line(err)
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(UserError, match="holds no complete checkpoint") as err:
    generate(tmp_path)
  one_line(err)


def test_command_with_prompt_file(workdir, tmp_path):
  prompts = ["To be", "Whether 'tis", "T", "And by opposing end them"]
  path = tmp_path / "prompts.txt"
  path.write_text("".join(p + "\n" for p in prompts), encoding="utf-8")
  repo = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags())
  out = subprocess.run(
      [sys.executable, "-m", "jaxgen", "sample", f"--workdir={workdir}",
       f"--prompt_file={path}", "--max_new_tokens=10", "--temperature=0.8", "--num_samples=2",
       "--best"],
      cwd=repo, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert "--- prompt 1/4, sample 1/2 ---\nTo be" in out.stdout
  assert "--- prompt 2/4, sample 2/2 ---\nWhether 'tis" in out.stdout
  # The file's prompts of different lengths share batches, and each gets
  # exactly what it gets alone.
  texts = re.split(r"^--- prompt \d+/4, sample \d/2 ---\n", out.stdout, flags=re.M)[1:]
  alone = [t for p in prompts for t in generate(workdir, p, max_new_tokens=10, temperature=0.8,
                                                 num_samples=2, best=True)]
  assert [t[:-1] for t in texts] == alone  # print ends each text with a newline
  # --output_file: one output per prompt per line, nothing else; --stop ends each
  # text before its continuation's first stop string.
  result = tmp_path / "out.txt"
  out = subprocess.run(
      [sys.executable, "-m", "jaxgen", "sample", f"--workdir={workdir}",
       f"--prompt_file={path}", "--max_new_tokens=30", "--temperature=0", "--stop=e",
       "--stop=,", f"--output_file={result}"],
      cwd=repo, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout == "" and out.stderr == "", out.stderr
  whole = [t[0] for t in generate(workdir, prompts, max_new_tokens=30, temperature=0)]
  cut = [p + re.split("e|,", t[len(p):])[0] for p, t in zip(prompts, whole)]
  assert result.read_text(encoding="utf-8") == "".join(c.replace("\n", " ") + "\n" for c in cut)
  assert cut != whole  # the stop strings cut something
  bad = subprocess.run(
      [sys.executable, "-m", "jaxgen", "sample", f"--workdir={workdir}",
       f"--prompt_file={tmp_path / 'missing.txt'}"],
      cwd=repo, env=env, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 1 and "Traceback" not in bad.stderr
  assert bad.stderr.strip().splitlines() == [
      f"jaxgen: error: --prompt_file={tmp_path / 'missing.txt'} does not exist"]


def _snapshot(path: pathlib.Path) -> dict[str, tuple[bytes | None, int]]:
  """(bytes or None for a directory, mtime in ns) of `path` and everything below it."""
  return {str(p.relative_to(path)): (None if p.is_dir() else p.read_bytes(),
                                     p.stat().st_mtime_ns)
          for p in [path, *sorted(path.rglob("*"))]}
