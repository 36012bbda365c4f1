"""data.task: the task a config names or implies, and its batch schema against real batches."""

from __future__ import annotations

import pytest

from jaxgen import config as config_lib
from jaxgen import tasks
from jaxgen.errors import UserError
from tests.helpers import tiny_transformer_config


def _cfg(source: str, mode: str, **data):
  c = tiny_transformer_config(source, batch_size=4)
  c.data.update(mode=mode, tokenizer="byte", **data)
  return c


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("tasks")
  (root / "t.txt").write_text("\n".join(f"line {i} of some text here" for i in range(200)))
  (root / "p.tsv").write_text("\n".join(f"source {i}\ttarget {i}" for i in range(200)))
  return root


def test_task_is_named_or_implied(files):
  d = config_lib.base_config().data
  assert tasks.task_of(d).name == "lm" and d.task == ""
  d.source = f"tsv:{files}/p.tsv"
  assert tasks.task_of(d).name == "seq2seq"
  d.task = "seq2seq"
  assert tasks.task_of(d).conditional
  d.task = "lm"
  with pytest.raises(UserError, match="gives \\(source, target\\) pairs"):
    tasks.task_of(d)
  d.update(task="seq2seq", source="bundled:tiny_shakespeare")
  with pytest.raises(UserError, match="gives documents"):
    tasks.task_of(d)
  d.update(task="seq2seq", mixture="bundled:tiny_shakespeare:1")
  with pytest.raises(UserError, match="language model"):
    tasks.task_of(d)


@pytest.mark.parametrize("source,mode", [("text", "windows"), ("text", "concat"),
                                         ("text", "pack"), ("tsv", "windows"), ("tsv", "pack")])
def test_batches_follow_the_task_batch_spec(files, source, mode):
  """The one written schema is what the pipeline yields (keys, dtypes, shapes)."""
  path = f"{source}:{files}/{'t.txt' if source == 'text' else 'p.tsv'}"
  c = _cfg(path, mode, text_lines=True)
  if source == "tsv":
    c.data.source_len = 16
  task = tasks.task_of(c.data)
  built = task.build(c, 0, 1, evaluate=True, full_split=False)
  spec = task.batch_spec(c, c.train.batch_size)
  it = iter(built.train_data)
  batch = next(it)
  it.close()
  assert spec.problems(batch) == []
  assert set(spec.abstract()) == set(batch)
  shown = spec.problems({**batch, "inputs": batch["inputs"][:, :-1]})
  assert shown and "inputs" in shown[0]
