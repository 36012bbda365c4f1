"""`jaxgen sample` / `generate_text`: restore a trained workdir and generate."""

import pytest

from jaxgen.errors import UserError
from jaxgen.sample.restore import generate_text
from tests.helpers import tiny_transformer_config, write_corpus
from tests.test_train import run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("sample")
  run(tiny_transformer_config(write_corpus(tmp / "verse.txt"), steps=30, learning_rate=3e-3),
      tmp / "run")
  return tmp / "run"


def test_samples_continue_the_prompt(workdir):
  texts = generate_text(str(workdir), "To be", max_new_tokens=40, num_samples=3, seed=1,
                        top_k=10, top_p=0.9)
  assert len(texts) == 3 and all(t.startswith("To be") and len(t) == 45 for t in texts)
  assert texts == generate_text(str(workdir), "To be", max_new_tokens=40, num_samples=3, seed=1,
                                top_k=10, top_p=0.9)


def test_greedy_is_deterministic_and_unconditional_works(workdir):
  a = generate_text(str(workdir), "", max_new_tokens=20, temperature=0, num_samples=2)
  assert a[0] == a[1] and len(a[0]) == 20


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1), "negative"),
    (dict(top_p=0.0), "outside"),
    (dict(top_p=1.5), "outside"),
    (dict(prompt="To be€"), "not in the tokenizer"),
    (dict(prompt="o" * 40), "context"),
])
def test_bad_options_are_one_line_errors(workdir, kwargs, message):
  with pytest.raises(UserError, match=message):
    generate_text(str(workdir), **kwargs)


def test_workdir_without_checkpoint(tmp_path):
  with pytest.raises(UserError, match="holds no trained run"):
    generate_text(str(tmp_path))
