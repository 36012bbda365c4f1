"""`jaxgen export` and `jaxgen import` from the command line, end to end.

Train a tiny Llama-layout model (CLI), export it, load it in transformers,
generate greedily and compare with `jaxgen sample --temperature=0`; import a
transformers model, sample from it and fine-tune it; the one-line errors.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is a test-only dependency (CI installs it)")
transformers = pytest.importorskip(
    "transformers", reason="transformers is a test-only dependency (CI installs it)")

from jaxgen.data.tokenizer import ByteTokenizer  # noqa: E402
from tests.hf_helpers import GPT2_LAYOUT, random_workdir, run_config  # noqa: E402
from tests.hf_models import save_random_hf  # noqa: E402
from tests.helpers import xla_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
_LLAMA = ["--config.model.position=rope", "--config.model.norm=rmsnorm",
          "--config.model.mlp=swiglu", "--config.model.num_kv_heads=2",
          "--config.model.num_layers=2", "--config.model.embed_dim=64",
          "--config.model.tie_embeddings=False"]
_SHORT = ["--config.train.steps=30", "--config.train.batch_size=8",
          "--config.train.warmup_steps=5", "--config.eval.every_steps=0",
          "--config.eval.full_split_at_end=False", "--config.sample.num_tokens=0",
          "--config.checkpoint.every_steps=0"]


def jaxgen(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags())
  return subprocess.run([sys.executable, "-m", "jaxgen", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def ok(out: subprocess.CompletedProcess) -> str:
  assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
  return out.stdout


def one_error(out: subprocess.CompletedProcess, needle: str) -> None:
  shown = f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
  assert out.returncode != 0 and "Traceback" not in out.stdout + out.stderr, shown
  lines = [line for line in out.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("jaxgen: error: "), shown
  assert needle in lines[0], shown


@pytest.mark.slow
def test_train_export_generate_in_transformers_as_jaxgen_sample(tmp_path):
  wd, out = tmp_path / "run", tmp_path / "hf"
  ok(jaxgen("train", "--config=configs/shakespeare_char_cpu.py", f"--workdir={wd}",
            *_LLAMA, *_SHORT))
  ok(jaxgen("export", f"--workdir={wd}", "--format=hf", f"--out={out}"))
  prompt = "ROMEO:"
  text = ok(jaxgen("sample", f"--workdir={wd}", f"--prompt={prompt}", "--temperature=0",
                   "--max_new_tokens=32"))
  ours = text.split("---\n", 1)[1][:-1]  # "--- sample 1/1 ---\n" + text + "\n"

  tokenizer = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
  model = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
  ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
  with torch.no_grad():
    generated = model.generate(ids, max_new_tokens=32, attention_mask=torch.ones_like(ids))
  theirs = tokenizer.decode(generated[0], skip_special_tokens=True)
  assert ours == theirs
  assert len(ours) > len(prompt)


@pytest.mark.slow
def test_import_sample_and_fine_tune(tmp_path):
  src, wd = tmp_path / "src", tmp_path / "run"
  save_random_hf(src, "llama_gqa2_untied")
  ok(jaxgen("import", f"--hf={src}", f"--workdir={wd}"))
  assert (wd / "config.py").exists() and (wd / "hf_tokenizer" / "tokenizer.json").exists()
  text = ok(jaxgen("sample", f"--workdir={wd}", "--prompt=Hi", "--temperature=0",
                   "--max_new_tokens=8"))
  assert "Hi" in text

  # A config whose model is not the imported one is refused in one line, nothing changed.
  before = sorted(p.name for p in (wd / "checkpoints").iterdir())
  one_error(jaxgen("train", f"--config={wd / 'config.py'}", f"--workdir={wd}",
                   "--config.model.mlp_dim=64", *_SHORT), "model.mlp_dim")
  one_error(jaxgen("train", "--config=configs/shakespeare_char_cpu.py", f"--workdir={wd}",
                   *_SHORT), "tokenizer")
  assert sorted(p.name for p in (wd / "checkpoints").iterdir()) == before

  out = ok(jaxgen("train", f"--config={wd / 'config.py'}", f"--workdir={wd}", *_SHORT,
                  "--config.train.steps=3"))
  assert "resuming from" in out and "step 0" in out
  assert sorted(int(p.name) for p in (wd / "checkpoints").iterdir()) == [0, 3]
  ok(jaxgen("sample", f"--workdir={wd}", "--prompt=Hi", "--max_new_tokens=4"))


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path):
  one_error(jaxgen("import", "--hf=gpt2", f"--workdir={tmp_path / 'run'}"),
            "not a local directory")
  one_error(jaxgen("export", f"--workdir={tmp_path / 'none'}", f"--out={tmp_path / 'hf'}"),
            "holds no checkpoints")
  one_error(jaxgen("export", f"--workdir={tmp_path}"), "--out is required")
  one_error(jaxgen("export", f"--workdir={tmp_path}", f"--out={tmp_path / 'o'}",
                   "--max_shard_size=lots"), "--max_shard_size=lots")
  assert not (tmp_path / "run").exists() and not (tmp_path / "hf").exists()
  wd = random_workdir(tmp_path / "run", run_config(**GPT2_LAYOUT))
  one_error(jaxgen("export", f"--workdir={wd}", f"--out={tmp_path / 'hf'}", "--step=7"),
            "has no checkpoint at step 7")
  one_error(jaxgen("export", f"--workdir={wd}", f"--out={tmp_path / 'hf'}", "--best"),
            "validation loss")
  one_error(jaxgen("import", f"--hf={tmp_path / 'src'}", f"--workdir={wd}"),
            "not a local directory")
  assert not (tmp_path / "hf").exists()


def test_byte_tokenizer_round_trip_through_hf_files(tmp_path):
  from jaxgen.data.hf_tokenizer import HfTokenizer
  from jaxgen.interop.hf_tokenizer_export import tokenizer_files
  for file, text in tokenizer_files(ByteTokenizer()).items():
    (tmp_path / file).write_text(text)
  hf = HfTokenizer.from_dir(tmp_path)
  sample = "héllo, wörld\n"
  assert np.array_equal(hf.encode(sample), ByteTokenizer().encode(sample))
  assert hf.decode(hf.encode(sample)) == sample
  assert (hf.pad_id, hf.eos_id, hf.bos_id) == (0, 1, 2)
