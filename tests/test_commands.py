"""`jaxgen data prepare|inspect`, `jaxgen tokenizer train`, and training from each source."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import jaxgen.sample
from tests.helpers import SHARED_CORPUS, tiny_transformer_config
from tests.test_train import run, train_losses

REPO = pathlib.Path(__file__).resolve().parents[1]


def jaxgen_cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", "jaxgen", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tfds_dirs(tmp_path_factory):
  if not SHARED_CORPUS.exists():
    pytest.skip("needs ../shared/data/tiny_shakespeare/input.txt (the file TFDS downloads) "
                "to prepare tfds:tiny_shakespeare offline")
  data_dir = tmp_path_factory.mktemp("tensorflow_datasets")
  flags = [f"--config.data.tfds_data_dir={data_dir}",
           f"--config.data.tfds_manual_dir={SHARED_CORPUS.parent}"]
  out = jaxgen_cli("data", "prepare", "--config=configs/shakespeare_char_cpu.py", *flags)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert lines[-2:] == [  # after TFDS's own progress lines
      "tfds:tiny_shakespeare train (train): 1 documents, 1,003,854 characters",
      "tfds:tiny_shakespeare eval (validation): 1 documents, 55,770 characters"]
  return data_dir, flags


def test_trains_from_tfds_tiny_shakespeare(tfds_dirs, tmp_path):
  data_dir, _ = tfds_dirs
  cfg = tiny_transformer_config("tfds:tiny_shakespeare", steps=30, learning_rate=3e-3)
  cfg.data.tfds_data_dir, cfg.data.tfds_manual_dir = str(data_dir), str(SHARED_CORPUS.parent)
  cfg.eval.update(every_steps=30, steps=2)
  result = run(cfg, tmp_path / "run")
  losses = train_losses(tmp_path / "run")
  assert len(losses) == 30 and losses[-1] < losses[0] - 0.5
  assert np.isfinite(result["val_loss"])
  tokenizer = json.loads((tmp_path / "run" / "tokenizer.json").read_text())
  assert len(tokenizer["chars"]) == 65  # every character of tiny Shakespeare


def test_inspect_shows_decoded_batches(tfds_dirs):
  _, flags = tfds_dirs
  out = jaxgen_cli("data", "inspect", "--config=configs/shakespeare_char_cpu.py", *flags,
                   "--num_batches=2")
  assert out.returncode == 0, out.stderr
  assert "=== batch 0 ===" in out.stdout and "=== batch 1 ===" in out.stdout
  text = SHARED_CORPUS.read_text()
  # Every shown row is a window of the corpus (newlines are shown escaped).
  rows = [l.split(": ", 1)[1] for l in out.stdout.splitlines() if l.startswith("row ")]
  assert len(rows) == 24 and all(r.replace("\\n", "\n") in text for r in rows)


def _corpus(path, lines=400, seed=0):
  rng = np.random.default_rng(seed)
  words = ["alpha", "beta", "gamma", "delta", "kings", "queens", "river", "stone", "light",
           "night", "sword", "crown", "tower", "field", "ÿes", "naïve"]
  docs = [" ".join(rng.choice(words, rng.integers(4, 14))) for _ in range(lines)]
  path.write_text("\n".join(docs) + "\n", encoding="utf-8")
  return f"text:{path}"


def test_sentencepiece_tokenizer_train_then_packed_training_and_sampling(tmp_path):
  source = _corpus(tmp_path / "docs.txt")
  model = tmp_path / "tok" / "sp.model"
  flags = ["--config=configs/shakespeare_char_cpu.py", f"--config.data.source={source}",
           "--config.data.tokenizer=sentencepiece", "--config.data.text_lines=True",
           f"--config.data.tokenizer_path={model}"]
  out = jaxgen_cli("tokenizer", "train", *flags, "--vocab_size=300")
  assert out.returncode == 0, out.stderr
  assert json.loads(out.stdout) == {"tokenizer": str(model), "vocab_size": 300}
  size = model.stat().st_size
  again = jaxgen_cli("tokenizer", "train", *flags, "--vocab_size=320")
  assert again.returncode == 1 and again.stderr.count("\n") == 1
  assert "already exists" in again.stderr and model.stat().st_size == size

  cfg = tiny_transformer_config(source, steps=20, learning_rate=3e-3)
  cfg.data.update(tokenizer="sentencepiece", tokenizer_path=str(model), text_lines=True,
                  mode="pack")
  cfg.model.position = "rope"
  run(cfg, tmp_path / "run")
  losses = train_losses(tmp_path / "run")
  assert len(losses) == 20 and losses[-1] < losses[0]
  texts = jaxgen.sample.generate(str(tmp_path / "run"), "alpha", max_new_tokens=8,
                                 temperature=0)
  assert texts[0].startswith("alpha")


def test_byte_tokenizer_with_concat_mode_trains(tmp_path):
  cfg = tiny_transformer_config(_corpus(tmp_path / "docs.txt"), steps=20, learning_rate=3e-3)
  cfg.data.update(tokenizer="byte", text_lines=True, mode="concat")
  run(cfg, tmp_path / "run")
  losses = train_losses(tmp_path / "run")
  assert len(losses) == 20 and losses[-1] < losses[0]
  assert json.loads((tmp_path / "run" / "tokenizer.json").read_text()) == {"kind": "byte"}
