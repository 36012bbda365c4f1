import pytest

from jaxgen import config as base
from jaxgen.errors import UserError
from tests.helpers import older_meta, one_line


def _lm(source):
  cfg = base.base_config()
  cfg.model = base.transformer_model()
  cfg.model.update(num_layers=1, num_heads=2, embed_dim=16)
  cfg.train.update(batch_size=8, compilation_cache_dir="")
  cfg.data.update(source=source, seq_len=16)
  return cfg


def test_resume_of_an_older_run_of_several_documents_knows_it_split_at_the_tail(tmp_path):
  """A checkpoint saved before data.doc_split held out its last documents: resuming it
  under the hashed default would change the training text; one document is cut the same."""
  from jaxgen.train import loop
  for i in range(10):
    (tmp_path / f"notes{i}.txt").write_text(f"note {i} " * (50 + 40 * i))
  cfg = _lm(f"text:{tmp_path}/notes*.txt")
  setup = loop.prepare(cfg, str(tmp_path / "run"))
  older = older_meta(setup, "doc_split")
  with pytest.raises(UserError, match=r"data\.doc_split='hashed' \(saved: 'tail'\)") as err:
    loop._check_compatible(setup, older)
  one_line(err)
  cfg.data.doc_split = "tail"
  loop._check_compatible(loop.prepare(cfg, str(tmp_path / "run")), older)
  # One file (tiny Shakespeare) is split the same whatever data.doc_split says.
  one = _lm(f"text:{tmp_path}/notes9.txt")
  setup = loop.prepare(one, str(tmp_path / "one"))
  loop._check_compatible(setup, older_meta(setup, "doc_split"))
  one.data.doc_split = "tail"
  loop._check_compatible(loop.prepare(one, str(tmp_path / "one")), setup.meta)
