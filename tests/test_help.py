"""`jaxgen --help`, `jaxgen COMMAND --help`, `--version` and `jaxgen config`: exit 0, the
commands one line each, a command's own flags with their docs, every config key's doc."""

from __future__ import annotations

import importlib.metadata
import pathlib
import sys

import pytest
from absl import flags

from jaxgen import cli, cli_help, config_docs, main
from tests.helpers import leaves, recipe_config, run_jaxgen

REPO = pathlib.Path(__file__).resolve().parents[1]


def answer(capsys, *args: str) -> tuple[int, str, str]:
  """(exit status, stdout, stderr) of cli_help for `jaxgen ARGS`, in this process."""
  with pytest.raises(SystemExit) as exit_:
    cli_help.answer(["jaxgen", *args], main.COMMANDS, sys.modules[main.__name__])
  out = capsys.readouterr()
  return exit_.value.code, out.out, out.err


def test_help_and_version_from_the_command_line():
  out = run_jaxgen("--help")
  assert out.returncode == 0 and out.stderr == "", out
  listed = [line[2:].split("  ")[0] for line in out.stdout.splitlines()
            if line.startswith("  ") and not line.startswith("   ")]
  assert listed == list(main.COMMANDS)



def test_version_and_train_help(capsys):
  assert answer(capsys, "--version") == (0, f"jaxgen {importlib.metadata.version('jaxgen')}\n",
                                         "")
  status, text, _ = answer(capsys, "train", "--config=configs/x.py", "--config.a=1", "-h")
  assert status == 0 and text.startswith("usage: jaxgen train --config=FILE --workdir=DIR")
  assert "--config.KEY=VALUE" in text


def test_command_help_lists_its_own_flags_with_docs(capsys):
  status, text, _ = answer(capsys, "sample", "--help")
  assert status == 0 and text.startswith("usage: jaxgen sample --workdir=DIR [flags]")
  for name in ("prompt", "source", "temperature", "beam_size", "output_file", "step", "best"):
    assert f"  --{name}=" in text or f"  --[no]{name}\n" in text, name
  assert "--max_new_tokens=N\n      Tokens to generate per sample. (default: 500)" in text
  assert "--devices" not in text and "--out=" not in text  # plan's and export's
  status, text, _ = answer(capsys, "plan", "-h")
  assert status == 0 and "--devices=N" in text and "--prompt" not in text
  # A flag two commands share shows each its own part of the help.
  assert "The tokenizer's vocabulary size" in text and "SentencePiece pieces" not in text
  status, text, _ = answer(capsys, "export", "--workdir", "runs/a", "--help")
  assert status == 0 and "--out=DIR" in text and "--[no]best" in text
  status, text, _ = answer(capsys, "help", "data")
  assert status == 0 and "jaxgen data prepare" in text and "jaxgen data inspect" in text


def test_every_flag_belongs_to_a_command(capsys):
  shown = ""
  for command in main.COMMANDS:
    shown += answer(capsys, command, "--help")[1]
  for flag in [f for m in cli.MODULES for f in flags.FLAGS.get_flags_for_module(m)]:
    assert f"--{flag.name}=" in shown or f"--[no]{flag.name}\n" in shown, (
        f"--{flag.name} is in no command's help: add it to a command's flags in jaxgen/cli/")


RECIPE = "--config=configs/shakespeare_char_cpu.py"


@pytest.mark.parametrize("command, args, flag", [
    ("data inspect", (RECIPE, "--json"), "--json"),
    ("sample", ("--workdir=runs/none", RECIPE), "--config"),
    ("train", (RECIPE, "--workdir=runs/none", "--temperature=0.5"), "--temperature"),
    ("export", ("--workdir=runs/none", "--out=runs/none/hf", "--prompt=x"), "--prompt"),
])
def test_a_flag_the_command_does_not_take_is_refused_in_one_line(command, args, flag):
  """Every command's flags are defined in one module, so one that another command takes
  would be accepted and ignored: it is refused instead, before anything runs."""
  out = run_jaxgen(*command.split(), *args)
  assert out.returncode == 2 and out.stdout == "", out
  assert out.stderr == (f"jaxgen: error: {flag} is not a flag of `jaxgen {command}`, which "
                        f"would ignore it; drop it (jaxgen {command} --help lists the flags "
                        "it takes)\n")
  assert not (REPO / "runs" / "none").exists()


@pytest.mark.parametrize("args, line", [
    (("sample", "--workdir=runs/none", "--config.train.steps=3"),
     "--config.train.steps overrides a config key, but `jaxgen sample` takes no --config; "
     "drop it"),
    (("train", "--workdir=runs/none", "--config.train.steps=3"),
     "--config.train.steps overrides a key of --config, which is not given; pass "
     "--config=FILE first, e.g. --config=configs/shakespeare_char_cpu.py"),
])
def test_a_config_key_without_its_config_is_one_line(args, line):
  out = run_jaxgen(*args)
  assert (out.returncode, out.stdout, out.stderr) == (2, "", f"jaxgen: error: {line}\n")
  assert not (REPO / "runs" / "none").exists()


def test_unknown_command_help_is_one_line(capsys):
  status, out, err = answer(capsys, "smaple", "--help")
  assert status == 2 and out == ""
  assert err.startswith("jaxgen: error: 'smaple' is not a command") and err.count("\n") == 1


def test_config_prints_every_key_with_its_value_and_doc():
  out = run_jaxgen("config", "--config=configs/seq2seq_reverse.py", "--config.train.steps=7")
  assert out.returncode == 0 and out.stderr == "", out
  lines = out.stdout.splitlines()
  assert lines[0].startswith("# configs/seq2seq_reverse.py with --config.train.steps=7")
  rows = {line.split(" = ")[0]: line for line in lines if " = " in line and line[0] != "#"}
  cfg = recipe_config("configs/seq2seq_reverse.py")
  assert sorted(rows) == sorted(leaves(cfg))
  assert rows["train.steps"].startswith("train.steps = 7 ")
  assert rows["data.seq_len"].split("  # ")[1] == (
      "training window (context) length; with pairs, the target length; recipe: bos/eos + 16 "
      "letters, with room")
  out = run_jaxgen("config", "--config=configs/seq2seq_reverse.py", "--config.train.steps=0")
  assert out.returncode == 1 and out.stderr.startswith("jaxgen: error: train.steps=0")


def test_every_key_of_every_recipe_has_a_doc():
  docs = config_docs.key_docs()
  missing = sorted({key for recipe in sorted((REPO / "configs").glob("*.py"))
                    for key in leaves(recipe_config(str(recipe.relative_to(REPO))))} - set(docs))
  assert not missing, ("comment these keys where jaxgen/config.py sets them "
                       f"(`c.x.key = value  # what it means`): {missing}")
