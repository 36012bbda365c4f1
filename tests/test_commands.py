"""`jaxgen data prepare|inspect`, `jaxgen tokenizer train`, and training from each source."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import jaxgen.sample
from jaxgen.data import bundled
from tests.helpers import tiny_transformer_config, unigram_entropy, xla_flags
from tests.sample_helpers import Forward
from tests.train_helpers import run, train_losses

pytestmark = pytest.mark.slow  # whole runs of the command

REPO = pathlib.Path(__file__).resolve().parents[1]
MANUAL_DIR = bundled.manual_dir("tiny_shakespeare")


def jaxgen_cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags())
  return subprocess.run([sys.executable, "-m", "jaxgen", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def tfds_dirs(tmp_path_factory):
  """tfds:tiny_shakespeare prepared offline from the file jaxgen bundles (the one TFDS
  downloads), as the recipe's source instead of its default bundled:tiny_shakespeare."""
  data_dir = tmp_path_factory.mktemp("tensorflow_datasets")
  flags = ["--config.data.source=tfds:tiny_shakespeare",
           f"--config.data.tfds_data_dir={data_dir}",
           f"--config.data.tfds_manual_dir={MANUAL_DIR}"]
  out = jaxgen_cli("data", "prepare", "--config=configs/shakespeare_char_cpu.py", *flags)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert lines[-2:] == [  # after TFDS's own progress lines
      "tfds:tiny_shakespeare train (train): 1 document, 1,003,854 characters",
      "tfds:tiny_shakespeare eval (validation): 1 document, 55,770 characters"]
  return data_dir, flags


def test_trains_from_tfds_tiny_shakespeare(tfds_dirs, tmp_path):
  data_dir, _ = tfds_dirs
  cfg = tiny_transformer_config("tfds:tiny_shakespeare", steps=300, learning_rate=1e-2)
  cfg.data.tfds_data_dir, cfg.data.tfds_manual_dir = str(data_dir), MANUAL_DIR
  cfg.eval.update(every_steps=300, steps=2)
  result = run(cfg, tmp_path / "run")
  losses = train_losses(tmp_path / "run")
  # Below the entropy of the training text's character frequencies (3.31 nats):
  # the model learned more than which characters are common, so it read the
  # corpus in order (a model that only learned to avoid the vocabulary's
  # padding sits near ln(65) = 4.17, and one stuck on frequencies at 3.31).
  entropy = unigram_entropy(bundled.split_texts("tiny_shakespeare")["train"])
  assert len(losses) == 300
  assert losses[-10:].mean() < entropy - 0.3, (losses[-10:], entropy)
  assert result["val_loss"] < entropy - 0.3, (result, entropy)
  tokenizer = json.loads((tmp_path / "run" / "tokenizer.json").read_text())
  assert len(tokenizer["chars"]) == 65  # every character of tiny Shakespeare


def test_inspect_shows_decoded_batches(tfds_dirs):
  _, flags = tfds_dirs
  out = jaxgen_cli("data", "inspect", "--config=configs/shakespeare_char_cpu.py", *flags,
                   "--num_batches=2")
  assert out.returncode == 0, out.stderr
  assert "=== batch 0 ===" in out.stdout and "=== batch 1 ===" in out.stdout
  text = bundled.read("tiny_shakespeare")
  # Every shown row is a window of the corpus (newlines are shown escaped).
  rows = [l.split(": ", 1)[1] for l in out.stdout.splitlines() if l.startswith("row ")]
  assert len(rows) == 24 and all(r.replace("\\n", "\n") in text for r in rows)


WORDS = ["alpha", "beta", "gamma", "delta", "kings", "queens", "river", "stone", "light",
         "night", "sword", "crown", "tower", "field", "ÿes", "naïve"]


def _corpus(path, lines=400, seed=0):
  rng = np.random.default_rng(seed)
  docs = [" ".join(rng.choice(WORDS, rng.integers(4, 14))) for _ in range(lines)]
  path.write_text("\n".join(docs) + "\n", encoding="utf-8")
  return f"text:{path}"


def _docs(source):
  """The documents (lines) of a `_corpus` source: what the model is trained on."""
  return pathlib.Path(source.removeprefix("text:")).read_text(encoding="utf-8").splitlines()


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

  cfg = tiny_transformer_config(source, steps=200, learning_rate=1e-2)
  cfg.data.update(tokenizer="sentencepiece", tokenizer_path=str(model), text_lines=True,
                  mode="pack")
  cfg.model.position = "rope"
  run(cfg, tmp_path / "run")
  losses = train_losses(tmp_path / "run")
  forward = Forward(tmp_path / "run")
  tok = forward.tokenizer
  targets = [int(i) for doc in _docs(source) for i in [*tok.encode(doc), tok.eos_id]]
  assert len(losses) == 200 and losses[-10:].mean() < unigram_entropy(targets) - 0.3

  # Greedy text is what full forward passes of the restored model pick after
  # bos + "alpha" (packed documents start with bos), and it is made of the
  # corpus's words (the last may be cut off).
  texts = jaxgen.sample.generate(str(tmp_path / "run"), "alpha", max_new_tokens=8,
                                 temperature=0)
  want, new = forward.greedy("alpha", 8)
  assert forward.prompt_ids("alpha")[0] == tok.bos_id and new[0] != tok.eos_id
  assert texts == [want] and len(want) > len("alpha ")
  assert set(want.split()[:-1]) <= set(WORDS), want


def test_byte_tokenizer_with_concat_mode_trains(tmp_path):
  source = _corpus(tmp_path / "docs.txt")
  cfg = tiny_transformer_config(source, steps=200, learning_rate=1e-2)
  cfg.data.update(tokenizer="byte", text_lines=True, mode="concat")
  run(cfg, tmp_path / "run")
  losses = train_losses(tmp_path / "run")
  targets = [b for doc in _docs(source) for b in [*doc.encode("utf-8"), "eos"]]
  assert len(losses) == 200 and losses[-10:].mean() < unigram_entropy(targets) - 0.3
  assert json.loads((tmp_path / "run" / "tokenizer.json").read_text()) == {"kind": "byte"}
