"""Bad input to the `jaxgen` command: one error line, non-zero exit, no files.

Each case runs the real command line in a subprocess, as a user would, with a
tiny valid run (tiny corpus, 2 steps, no eval, no sample) changed in exactly
one place; `test_valid_run_trains` shows that this run itself succeeds, so a
case passes only because of its one bad input. A case checks that:
  * the exit status is non-zero;
  * stderr holds exactly one non-blank line, `jaxgen: error: ...`, naming the
    offending key, path or value (no log lines: the product prints none);
  * neither stream contains a traceback;
  * the workdir is untouched: a missing one still does not exist, and an
    existing one keeps its listing, its own mtime, and its sentinel's bytes
    and mtime.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPE = "configs/shakespeare_char_cpu.py"
PARAGRAPH = (
    "ROMEO: But soft! what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun; 0123456789 -- (quick) [brown] {fox},\n"
    "jumps over the lazy dog's back: \"Zounds!\" quoth he; & all's well @ 10% #7.\n\n")
OLD_MTIME_NS = 1_000_000_000 * 10**9  # 2001: a rewrite, even of equal bytes, shows up


@pytest.fixture
def corpus(tmp_path: pathlib.Path) -> pathlib.Path:
  """About 5 KB of text: long enough for seq_len 64 windows in both splits."""
  path = tmp_path / "corpus.txt"
  path.write_text(PARAGRAPH * 25, encoding="utf-8")
  return path


class Workdir:
  """A --workdir that is either missing or holds one sentinel file, and its checks."""

  def __init__(self, path: pathlib.Path, existing: bool):
    self.path = path
    self.before = None
    if existing:
      path.mkdir()
      sentinel = path / "notes.txt"
      sentinel.write_bytes(b"sentinel: do not touch\n")
      os.utime(sentinel, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
      os.utime(path, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
      self.before = _snapshot(path)

  def assert_untouched(self) -> None:
    if self.before is None:
      assert not self.path.exists(), sorted(p.name for p in self.path.iterdir())
    else:
      assert _snapshot(self.path) == self.before


@pytest.fixture
def workdir(request, tmp_path: pathlib.Path) -> Workdir:
  """A Workdir of the kind named by indirect parametrization, "missing" or "existing".

  Each failure stage (flag parsing, config checks, mesh, data, model) is
  tried with both kinds across its cases; every case with both would double
  the subprocesses for little.
  """
  return Workdir(tmp_path / "run", existing=request.param == "existing")


@pytest.mark.slow
def test_valid_run_trains(corpus, tmp_path):
  """The control: the tiny run that every case below breaks in one place works."""
  wd = tmp_path / "run"
  result = _jaxgen(*_tiny_run(corpus, wd))
  assert result.returncode == 0, result.stderr
  assert "Traceback" not in result.stdout + result.stderr
  records = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  assert any(r.get("step") == 2 for r in records), records


@pytest.mark.parametrize("override, needles, workdir", [
    ("--config.train.stepz=5", ["--config.train.stepz", "'stepz'"], "existing"),
    ("--config.train.steps=abc", ["--config.train.steps", "abc"], "missing"),
    ("--config.train.steps=0", ["train.steps=0"], "existing"),
    ("--config.train.steps=-3", ["train.steps=-3"], "missing"),
    ("--config.model.attention_backend=flash9", ["model.attention_backend", "flash9"],
     "existing"),
], indirect=["workdir"], ids=["unknown-key", "wrong-type", "steps-0", "steps-negative",
                              "unknown-attention-backend"])
def test_bad_config_value(override, needles, corpus, workdir):
  result = _jaxgen(*_tiny_run(corpus, workdir.path), override)
  _assert_one_error(result, *needles)
  workdir.assert_untouched()


@pytest.mark.parametrize("with_overrides, workdir", [(False, "missing"), (True, "existing")],
                         indirect=["workdir"], ids=["alone", "with-overrides"])
def test_config_file_missing(with_overrides, corpus, workdir):
  # config_flags defers this error; alone it used to surface as a traceback,
  # and with overrides as a misleading error under the first override.
  if with_overrides:
    args = [a for a in _tiny_run(corpus, workdir.path) if not a.startswith("--config=")]
    args.insert(1, "--config=configs/nope.py")
  else:
    args = ["train", "--config=configs/nope.py", f"--workdir={workdir.path}"]
  result = _jaxgen(*args)
  _assert_one_error(result, "configs/nope.py")
  workdir.assert_untouched()


@pytest.mark.parametrize("mesh_and_batch, needles, workdir", [
    # 3 x 1 x 1 != 8 devices.
    (["--config.mesh.data=3", "--config.mesh.fsdp=1", "--config.mesh.tensor=1"],
     ["mesh", "data=3", "8"], "existing"),
    # 12 rows cannot split over 8 data-parallel devices.
    (["--config.mesh.data=8", "--config.train.batch_size=12"],
     ["train.batch_size=12", "8"], "missing"),
], indirect=["workdir"], ids=["mesh-not-device-count", "batch-not-divisible"])
@pytest.mark.slow
def test_bad_mesh(mesh_and_batch, needles, corpus, workdir):
  result = _jaxgen(*_tiny_run(corpus, workdir.path), *mesh_and_batch, devices=8)
  _assert_one_error(result, *needles)
  workdir.assert_untouched()


@pytest.mark.parametrize("name, content, needle, workdir", [
    ("missing.txt", None, "does not exist", "existing"),
    ("empty.txt", b"", "empty", "missing"),
    ("latin1.txt", b"ab\xff\xfe", "UTF-8", "existing"),
    ("short.txt", b"To be, or not to be!", "seq_len", "missing"),  # 20 chars < 65
], indirect=["workdir"], ids=["missing", "empty", "not-utf8", "shorter-than-window"])
@pytest.mark.slow
def test_bad_data_source(name, content, needle, tmp_path, workdir):
  path = tmp_path / name
  if content is not None:
    path.write_bytes(content)
  result = _jaxgen(*_tiny_run(path, workdir.path))
  line = _assert_one_error(result, needle)
  if name != "short.txt":  # the short corpus's error names the fix, not the file
    assert str(path) in line
  workdir.assert_untouched()


@pytest.mark.slow
def test_workdir_is_a_file(corpus, tmp_path):
  path = tmp_path / "run"
  path.write_bytes(b"not a directory\n")
  os.utime(path, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
  result = _jaxgen(*_tiny_run(corpus, path))
  _assert_one_error(result, f"--workdir={path}")
  assert path.read_bytes() == b"not a directory\n"
  assert path.stat().st_mtime_ns == OLD_MTIME_NS
  assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "run"]


def test_workdir_flag_missing(corpus, tmp_path):
  args = [a for a in _tiny_run(corpus, tmp_path / "run") if not a.startswith("--workdir")]
  _assert_one_error(_jaxgen(*args), "--workdir")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]


@pytest.mark.parametrize("workdir", ["existing"], indirect=True)
def test_command_missing(corpus, workdir):
  args = [a for a in _tiny_run(corpus, workdir.path) if a != "train"]
  _assert_one_error(_jaxgen(*args), "expected a command", "train")
  workdir.assert_untouched()


def _snapshot(path: pathlib.Path) -> dict[str, tuple[bytes | None, int]]:
  """(bytes or None for a directory, mtime in ns) of `path` and everything below it."""
  return {str(p.relative_to(path)): (None if p.is_dir() else p.read_bytes(),
                                     p.stat().st_mtime_ns)
          for p in [path, *sorted(path.rglob("*"))]}


def _tiny_run(corpus: pathlib.Path, workdir: pathlib.Path) -> list[str]:
  """Arguments of a valid run that trains 2 steps of a 1-layer model in seconds."""
  return ["train", f"--config={RECIPE}", f"--config.data.source=text:{corpus}",
          "--config.train.steps=2", "--config.eval.every_steps=0",
          "--config.sample.num_tokens=0", "--config.train.compilation_cache_dir=",
          "--config.model.num_layers=1", "--config.model.num_heads=2",
          "--config.model.embed_dim=32", f"--workdir={workdir}"]


def _jaxgen(*args: str, devices: int = 1) -> subprocess.CompletedProcess:
  """Runs `python -m jaxgen ARGS` from the repo root on `devices` host CPU devices."""
  xla_flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
               if not f.startswith("--xla_force_host_platform_device_count")]
  xla_flags.append(f"--xla_force_host_platform_device_count={devices}")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(xla_flags))
  return subprocess.run([sys.executable, "-m", "jaxgen", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def _assert_one_error(result: subprocess.CompletedProcess, *needles: str) -> str:
  """Checks the one-line failure contract; returns the error line."""
  shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
  assert result.returncode != 0, shown
  assert "Traceback" not in result.stdout + result.stderr, shown
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("jaxgen: error: "), shown
  for needle in needles:
    assert needle in lines[0], shown
  return lines[0]


@pytest.mark.parametrize("args,needle", [
    (["sample", "--workdir={tmp}/none", "--prompt=a"], "holds no checkpoints"),
    (["export", "--workdir={tmp}/none", "--out={tmp}/hf"], "holds no checkpoints"),
    (["import", "--hf={tmp}/none", "--workdir={tmp}/run"], "is not a local directory"),
    (["import", "--hf={tmp}", "--workdir={tmp}/run"], "has no config.json"),
])
def test_wrong_directories_are_refused_before_jax_is_imported(tmp_path, args, needle):
  """Seconds of imports would come before these lines otherwise, at every typo."""
  code = ("import sys\nfrom jaxgen import main\nsys.argv = ['jaxgen', *sys.argv[1:]]\n"
          "try:\n  main.run()\nexcept SystemExit as e:\n"
          "  print('exit', e.code, 'jax' in sys.modules)\n")
  out = subprocess.run([sys.executable, "-c", code, *(a.format(tmp=tmp_path) for a in args)],
                       cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                       capture_output=True, text=True, timeout=60)
  assert out.stdout == "exit 1 False\n", out.stdout + out.stderr
  lines = out.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxgen: error: ") and needle in lines[0], lines
  assert sorted(p.name for p in tmp_path.iterdir()) == []
