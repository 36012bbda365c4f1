"""`jaxgen sample` / `jaxgen.sample.generate`: restore a trained workdir and generate."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import jaxgen.sample
from jaxgen.errors import UserError
from jaxgen.sample.restore import restore
from jaxgen.train.checkpoint import Checkpointer
from tests.helpers import tiny_transformer_config, write_corpus
from tests.test_train import run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("sample")
  cfg = tiny_transformer_config(write_corpus(tmp / "verse.txt"), steps=30, learning_rate=3e-3)
  cfg.data.text_lines = True  # documents are lines: the model learns what follows eos
  cfg.checkpoint.update(every_steps=10, keep=5)
  cfg.eval.update(every_steps=10, steps=2)
  run(cfg, tmp / "run")
  return tmp / "run"


def generate(workdir, prompt="", **kwargs):
  return jaxgen.sample.generate(str(workdir), prompt, **kwargs)


def test_samples_continue_the_prompt(workdir):
  texts = generate(workdir, "To be", max_new_tokens=40, num_samples=3, seed=1, top_k=10,
                   top_p=0.9)
  assert len(texts) == 3 and all(t.startswith("To be") and len(t) == 45 for t in texts)
  assert texts == generate(workdir, "To be", max_new_tokens=40, num_samples=3, seed=1,
                           top_k=10, top_p=0.9)
  assert texts != generate(workdir, "To be", max_new_tokens=40, num_samples=3, seed=2,
                           top_k=10, top_p=0.9)


def test_greedy_is_deterministic_and_unconditional_works(workdir):
  # Unconditional text starts after an eos, as every document after the first did.
  a = generate(workdir, "", max_new_tokens=20, temperature=0, num_samples=2)
  assert a[0] == a[1] and 0 < len(a[0]) <= 20


def test_prompts_of_several_lengths_are_batched_without_changing_results(workdir):
  # One batch holds every prompt, whatever its length; each prompt's texts
  # are those it gets alone, greedy or sampled (sample s of every prompt
  # draws from random stream s).
  prompts = ["To be", "Whether", "To be", "T", "And by opposing end"]
  for kwargs in (dict(temperature=0), dict(temperature=0.8, num_samples=2, seed=4)):
    batched = generate(workdir, prompts, max_new_tokens=15, **kwargs)
    assert [len(t) for t in batched] == [kwargs.get("num_samples", 1)] * len(prompts)
    assert batched == [generate(workdir, p, max_new_tokens=15, **kwargs) for p in prompts]


def test_step_and_best_choose_the_checkpoint(workdir):
  ckpt = Checkpointer(workdir, read_only=True)
  steps, best = ckpt.all_steps(), ckpt.best_step()
  ckpt.close()
  assert steps == [10, 20, 30] and best in steps
  params = {s: restore(str(workdir), step=s)[1] for s in steps}
  leaf = lambda p: np.asarray(p["embed"]["table"][...])
  assert not np.array_equal(leaf(params[10]), leaf(params[30]))
  np.testing.assert_array_equal(leaf(restore(str(workdir), best=True)[1]), leaf(params[best]))
  np.testing.assert_array_equal(leaf(restore(str(workdir))[1]), leaf(params[30]))
  early = generate(workdir, "To be", max_new_tokens=30, temperature=1.0, step=10)
  assert early != generate(workdir, "To be", max_new_tokens=30, temperature=1.0)


def test_beam_of_one_is_greedy(workdir):
  greedy = generate(workdir, "To be", max_new_tokens=12, temperature=0)
  assert generate(workdir, "To be", max_new_tokens=12, beam_size=1) == greedy
  beams = generate(workdir, "To be", max_new_tokens=12, beam_size=4, num_samples=4)
  assert len(beams) == 4 and len(set(beams)) == 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1), "negative"),
    (dict(top_p=0.0), "outside"),
    (dict(top_p=1.5), "outside"),
    (dict(prompt="To be€"), "not in the tokenizer"),
    (dict(prompt="o" * 40), "context"),
    (dict(step=7), "no checkpoint at step 7; it has 10, 20, 30"),
    (dict(beam_size=2, num_samples=3), "exceeds --beam_size"),
    (dict(beam_size=2, max_new_tokens=40), "beam search keeps the whole text"),
])
def test_bad_options_are_one_line_errors(workdir, kwargs, message):
  with pytest.raises(UserError, match=message):
    generate(workdir, **kwargs)


def test_workdir_without_checkpoint(tmp_path):
  with pytest.raises(UserError, match="holds no checkpoints"):
    generate(tmp_path)
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(UserError, match="holds no complete checkpoint"):
    generate(tmp_path)


def test_command_with_prompt_file(workdir, tmp_path):
  prompts = ["To be", "Whether 'tis", "T", "And by opposing end them"]
  path = tmp_path / "prompts.txt"
  path.write_text("".join(p + "\n" for p in prompts), encoding="utf-8")
  repo = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
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
  bad = subprocess.run(
      [sys.executable, "-m", "jaxgen", "sample", f"--workdir={workdir}",
       f"--prompt_file={tmp_path / 'missing.txt'}"],
      cwd=repo, env=env, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 1 and "Traceback" not in bad.stderr
  assert bad.stderr.strip().splitlines() == [
      f"jaxgen: error: --prompt_file={tmp_path / 'missing.txt'} does not exist"]
