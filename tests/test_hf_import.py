"""`jaxgen import`: tiny random transformers models, saved with save_pretrained, become
jaxgen workdirs whose logits match (<= 1e-4 in float32), and export returns them bitwise."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is a test-only dependency (CI installs it)")
transformers = pytest.importorskip(
    "transformers", reason="transformers is a test-only dependency (CI installs it)")

from jaxgen.data.tokenizer import ByteTokenizer  # noqa: E402
from jaxgen.errors import UserError  # noqa: E402
from jaxgen.interop import safetensors_io  # noqa: E402
from jaxgen.interop.hf_export import export  # noqa: E402
from jaxgen.interop.hf_import import import_hf  # noqa: E402
from tests.hf_helpers import jaxgen_greedy, jaxgen_logits, until_eos  # noqa: E402
from tests.hf_models import VOCAB, hf_configs, save_random_hf  # noqa: E402
from tests.helpers import one_line  # noqa: E402


@pytest.mark.parametrize("name", list(hf_configs()))
def test_import_matches_transformers_and_exports_bitwise(tmp_path, name):
  src = tmp_path / "src"
  model = save_random_hf(src, name)
  wd = import_hf(str(src), str(tmp_path / "run"))
  tokens = np.random.default_rng(0).integers(0, VOCAB, (3, 40))
  with torch.no_grad():
    theirs = model(torch.tensor(tokens)).logits.numpy()
  ours = jaxgen_logits(wd, tokens, cut=False)
  assert ours.shape == theirs.shape  # the vocabulary is not padded
  diff = float(np.abs(ours - theirs).max())
  print(f"import {name}: max abs logit difference {diff:.2e} (logits up to "
        f"{np.abs(theirs).max():.1f})")
  assert diff <= 1e-4

  out = export(str(wd), str(tmp_path / "out"))
  before, after = safetensors_io.read(src), safetensors_io.read(out)
  assert sorted(before) == sorted(after)
  for key, x in before.items():
    assert after[key].dtype == x.dtype and np.array_equal(after[key], x), key
  config = json.loads((out / "config.json").read_text())
  assert config["vocab_size"] == VOCAB


def test_sharded_checkpoint_round_trips(tmp_path):
  src = tmp_path / "src"
  model = save_random_hf(src, "llama_gqa2_untied", max_shard_size="20KB")
  assert (src / "model.safetensors.index.json").exists()
  wd = import_hf(str(src), str(tmp_path / "run"))
  out = export(str(wd), str(tmp_path / "out"), max_shard_size="20KB")
  assert (out / "model.safetensors.index.json").exists()
  before, after = safetensors_io.read(src), safetensors_io.read(out)
  assert sorted(before) == sorted(after)
  assert all(np.array_equal(before[k], after[k]) for k in before)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
  tokens = torch.arange(30)[None]
  with torch.no_grad():
    assert torch.equal(reloaded(tokens).logits, model(tokens).logits)


@pytest.mark.slow
def test_imported_model_generates_as_transformers_does(tmp_path):
  src = tmp_path / "src"
  model = save_random_hf(src, "llama_gqa2_untied")
  wd = import_hf(str(src), str(tmp_path / "run"))
  prompt = ByteTokenizer().encode("Hello")
  mine = until_eos(jaxgen_greedy(wd, prompt, 32), 1)
  with torch.no_grad():
    generated = model.generate(torch.tensor(prompt[None]), max_new_tokens=32, do_sample=False,
                               suppress_tokens=[0, 2],
                               attention_mask=torch.ones((1, len(prompt)), dtype=torch.long))
  assert mine == until_eos(generated[0, len(prompt):].numpy(), 1)


def test_import_refuses_in_one_line(tmp_path):
  with pytest.raises(UserError) as err:
    import_hf("meta-llama/Llama-3.2-1B", str(tmp_path / "run"))
  assert "not a local directory" in one_line(err) and "downloads nothing" in one_line(err)
  src = tmp_path / "src"
  save_random_hf(src, "gpt2")
  (src / "model.safetensors").rename(src / "pytorch_model.bin")
  with pytest.raises(UserError) as err:
    import_hf(str(src), str(tmp_path / "run"))
  assert "pytorch_model.bin" in one_line(err)
  config = json.loads((src / "config.json").read_text())
  config.update(model_type="gpt_neox")
  (src / "config.json").write_text(json.dumps(config))
  with pytest.raises(UserError) as err:
    import_hf(str(src), str(tmp_path / "run"))
  assert "gpt_neox" in one_line(err)
  assert not (tmp_path / "run").exists()
