"""Every command on a workdir of every model family: it works or it says one line.

One tiny run per family (Transformer LM, LSTM LM, Transformer encoder-decoder,
LSTM encoder-decoder with attention) is trained through the real command
line, then every command meets it: sample (the right input and the wrong
one), train again (resume for one more step, from the workdir's config.json),
plan, data inspect, data prepare, tokenizer train and config from that
config.json, export, import into it.
All of it runs in one worker process (tests/config_cases_worker.py's
`run_case`: real flag parsing and `jaxgen.main.main`), so JAX starts once.
Each case either exits 0 or exits non-zero with exactly one `jaxgen: error:`
line naming what it should, and never with a traceback.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.helpers import write_corpus, xla_flags

pytestmark = pytest.mark.slow  # every test reads the runs of one module fixture: commands run in subprocesses

REPO = pathlib.Path(__file__).resolve().parents[1]
_RUN = ["--config.train.steps=2", "--config.train.batch_size=4", "--config.train.warmup_steps=1",
        "--config.eval.every_steps=0", "--config.eval.full_split_at_end=False",
        "--config.sample.num_tokens=0", "--config.train.compilation_cache_dir=",
        "--config.checkpoint.every_steps=0",
        # A schedule not tied to train.steps: the resumed run's programs are the first run's,
        # found in the session's compilation cache (conftest.py).
        "--config.train.decay_steps=10"]
_PAIRS = ["--config.data.seq_len=8", "--config.data.source_len=8",
          "--config.data.synthetic_max_len=6", "--config.data.synthetic_train_examples=200",
          "--config.data.synthetic_eval_examples=20", "--config.eval.decode_examples=0"]
_SMALL_LSTM = ["--config.model.num_layers=1", "--config.model.embed_dim=16",
               "--config.model.hidden_size=16", "--config.model.unroll=1"]
# family: (recipe, overrides, conditional?)
FAMILIES = {
    "lm": ("configs/shakespeare_char_cpu.py",
           ["--config.model.num_layers=1", "--config.model.num_heads=2",
            "--config.model.embed_dim=16", "--config.data.seq_len=16"], False),
    "lstm": ("configs/lstm_shakespeare_char.py", [*_SMALL_LSTM, "--config.data.seq_len=16"],
             False),
    "seq2seq": ("configs/seq2seq_reverse.py",
                ["--config.model.num_layers=1", "--config.model.num_encoder_layers=1",
                 "--config.model.num_heads=2", "--config.model.embed_dim=16", *_PAIRS], True),
    "lstm_attention": ("configs/lstm_attention_reverse.py", [*_SMALL_LSTM, *_PAIRS], True),
}
OK = None  # a case's expectation: exit 0, or an error line containing the given text


def _cases(tmp: pathlib.Path) -> list[list[tuple[str, list[str], str | None]]]:
  """Two groups of (family, argv, expectation), one per worker."""
  corpus = write_corpus(tmp / "corpus.txt", repeats=20)
  groups = []
  for family, (recipe, overrides, conditional) in FAMILIES.items():
    wd = tmp / family
    cfg = str(wd / "config.json")
    source = [] if conditional else [f"--config.data.source={corpus}"]
    right, wrong = ("--source=abc", "--prompt=abc") if conditional else ("--prompt=To",
                                                                          "--source=To")
    cases = [
        (family, ["train", f"--config={recipe}", *overrides, *_RUN, *source, f"--workdir={wd}"],
         OK),
        (family, ["sample", f"--workdir={wd}", right, "--max_new_tokens=2"], OK),
        (family, ["sample", f"--workdir={wd}", wrong, "--max_new_tokens=2"],
         "--source" if conditional else "--prompt"),
        (family, ["train", f"--config={cfg}", "--config.train.steps=3", f"--workdir={wd}"], OK),
        (family, ["plan", f"--config={cfg}"], OK),
        (family, ["data", "inspect", f"--config={cfg}", "--num_batches=1"], OK),
        (family, ["data", "prepare", f"--config={cfg}"], OK),
        (family, ["tokenizer", "train", f"--config={cfg}", "--vocab_size=40"],
         "data.tokenizer_path"),  # a char-level run names no SentencePiece file to write
        (family, ["config", f"--config={cfg}"], OK),
        (family, ["export", f"--workdir={wd}", f"--out={tmp / (family + '_hf')}"],
         "holds a" if conditional else OK),
    ]
    if family == "lm":
      cases.append((family, ["import", f"--hf={tmp / 'lm_hf'}", f"--workdir={wd}"],
                    "already exists"))
    if family == "lstm":  # its export is no transformers model
      cases.append((family, ["import", f"--hf={tmp / 'lstm_hf'}", f"--workdir={wd}"],
                    "jaxgen imports GPT-2 and Llama"))
    groups.append(cases)
  # Two workers of about equal work: the Transformers' first compiles are the slowest.
  groups = [groups[0] + groups[3], groups[1] + groups[2]]
  groups[0] += [
      ("lm", ["import", f"--hf={tmp / 'lm_hf'}", f"--workdir={tmp / 'imported'}"], OK),
      ("lm", ["import", f"--hf={tmp / 'lm'}", f"--workdir={tmp / 'again'}"], "jaxgen workdir"),
      ("lm", ["plan", f"--config={tmp / 'lm_hf' / 'config.json'}"], "not a jaxgen config"),
  ]
  return groups


UMASK = 0o027  # the workers' umask: exported and imported directories must follow it


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  """(tmp, cases, results): the two groups run side by side, one worker each."""
  tmp = tmp_path_factory.mktemp("every_command")
  groups = _cases(tmp)
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags())
  code = ("import json, sys\nfrom tests.config_cases_worker import run_case\n"
          "print(json.dumps([run_case(a) for a in json.load(sys.stdin)]))")
  workers = []
  for i, cases in enumerate(groups):
    argvs = tmp / f"argvs{i}.json"
    argvs.write_text(json.dumps([["jaxgen", *argv] for _, argv, _ in cases]))
    with argvs.open() as stdin:
      workers.append(subprocess.Popen(
          [sys.executable, "-c", code], cwd=REPO, env=env, text=True, stdin=stdin,
          stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=lambda: os.umask(UMASK)))
  got = []
  for worker in workers:
    stdout, stderr = worker.communicate(timeout=600)
    assert worker.returncode == 0, stderr[-3000:]
    got += json.loads(stdout.strip().splitlines()[-1])
  return tmp, [case for cases in groups for case in cases], got


def test_every_command_works_or_says_one_line(results):
  _, cases, got = results
  failures = []
  for (family, argv, expected), result in zip(cases, got):
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    shown = (f"{family}: jaxgen {' '.join(argv)}\n  exit {result['status']}\n  stderr: "
             f"{result['stderr'][-1500:]}")
    if result["traceback"] or "Traceback" in result["stdout"] + result["stderr"]:
      failures.append(f"{shown}\n  (a traceback)")
    elif expected is OK and result["status"] != 0:
      failures.append(f"{shown}\n  (expected it to work)")
    elif expected is not OK and (
        result["status"] in (0, None) or len(lines) != 1
        or not lines[0].startswith("jaxgen: error: ") or expected not in lines[0]):
      failures.append(f"{shown}\n  (expected one error line naming {expected!r})")
  assert not failures, "\n".join(failures)


def test_export_refuses_encoder_decoders_before_reading_or_writing(results):
  tmp, cases, got = results
  for family in ("seq2seq", "lstm_attention"):
    i = next(i for i, (f, argv, _) in enumerate(cases) if f == family and argv[0] == "export")
    line = got[i]["stderr"].strip()
    assert "Transformer language models (GPT-2 or Llama layout)" in line, line
    assert "LSTM language models" in line, line
    assert not (tmp / f"{family}_hf").exists()
    assert not [p for p in tmp.iterdir() if p.name.startswith(f".{family}_hf")]
  assert (tmp / "lm_hf" / "model.safetensors").is_file()
  assert (tmp / "lstm_hf" / "model.safetensors").is_file()


def test_export_and_import_respect_the_umask(results):
  tmp, _, _ = results
  for path in (tmp / "lm_hf", tmp / "lstm_hf", tmp / "imported", tmp / "imported" / "hf_tokenizer"):
    assert oct(path.stat().st_mode & 0o777) == oct(0o777 & ~UMASK), path
  for path in (tmp / "lm_hf").iterdir():  # safetensors wrote model.safetensors 0600
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~UMASK), path


def test_resumed_runs_and_config_json(results):
  tmp, cases, got = results
  for family in FAMILIES:
    assert sorted(p.name for p in (tmp / family / "checkpoints").iterdir()) == ["2", "3"]
    i = next(i for i, (f, argv, _) in enumerate(cases) if f == family and argv[0] == "config")
    assert "train.steps = 3 " in got[i]["stdout"]  # the resumed run's, from its config.json
