"""`jaxgen export --format=hf`: transformers loads the files and computes jaxgen's logits.

Each model is random in every parameter (biases and norm scales included),
exported, loaded with `AutoModelForCausalLM.from_pretrained(local_files_only=True)`
and compared in float32 on random tokens (max abs logit difference <= 1e-4),
then greedy generation of 32 tokens must be identical.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is a test-only dependency (CI installs it)")
transformers = pytest.importorskip(
    "transformers", reason="transformers is a test-only dependency (CI installs it)")

from jaxgen.data.tokenizer import ByteTokenizer, CharTokenizer, SentencePieceTokenizer  # noqa: E402
from jaxgen.errors import UserError  # noqa: E402
from jaxgen.interop.hf_export import export  # noqa: E402
from tests.hf_helpers import (GPT2_LAYOUT, LLAMA_LAYOUT, TEXT, jaxgen_greedy,  # noqa: E402
                              jaxgen_logits, random_workdir, run_config, until_eos)
from tests.helpers import _VERSE, one_line  # noqa: E402

CASES = {
    "gpt2_nobias_tied": dict(GPT2_LAYOUT, use_bias=False),
    "gpt2_bias_untied": dict(GPT2_LAYOUT, use_bias=True, tie_embeddings=False),
    "llama_gqa1_tied": dict(LLAMA_LAYOUT, num_kv_heads=1),
    "llama_gqa2_untied": dict(LLAMA_LAYOUT, num_kv_heads=2, tie_embeddings=False),
    "llama_gqa4_bias_scanned": dict(LLAMA_LAYOUT, num_kv_heads=4, use_bias=True,
                                    scan_layers=True, head_dim=16),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.slow
def test_export_matches_transformers(tmp_path, case):
  cfg = run_config(**CASES[case])
  wd = random_workdir(tmp_path / "run", cfg)
  out = export(str(wd), str(tmp_path / "hf"))
  tokenizer = CharTokenizer.from_text(TEXT)
  config = json.loads((out / "config.json").read_text())
  assert config["vocab_size"] == tokenizer.vocab_size  # padded rows (to 128) cut back
  model = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
  assert model.config.vocab_size == tokenizer.vocab_size

  tokens = np.random.default_rng(1).integers(0, tokenizer.vocab_size, (3, 40))
  ours = jaxgen_logits(wd, tokens)
  with torch.no_grad():
    theirs = model(torch.tensor(tokens)).logits.numpy()
  diff = float(np.abs(ours - theirs).max())
  print(f"{case}: max abs logit difference {diff:.2e} (logits up to {np.abs(theirs).max():.1f})")
  assert diff <= 1e-4

  # Greedy to the end of the context (64), from a short prompt and a long one,
  # and with Hugging Face's repetition penalty: transformers picks what jaxgen picks.
  outputs = {}
  for text, penalty in (("the quick", 1.0), (TEXT[:48], 1.0), ("the quick", 1.3)):
    prompt = tokenizer.encode(text)
    n = 64 - len(prompt)
    mine = until_eos(jaxgen_greedy(wd, prompt, n, repetition_penalty=penalty),
                     tokenizer.eos_id)
    with torch.no_grad():
      generated = model.generate(torch.tensor(prompt[None]), max_new_tokens=n,
                                 repetition_penalty=penalty,
                                 attention_mask=torch.ones((1, len(prompt)), dtype=torch.long))
    theirs = until_eos(generated[0, len(prompt):].numpy(), tokenizer.eos_id)
    assert mine == theirs, (text, penalty)
    outputs[text, penalty] = mine
  assert max(map(len, outputs.values())) > 32  # past where half-context windows restarted
  assert outputs["the quick", 1.3] != outputs["the quick", 1.0]  # the penalty acts


@pytest.mark.slow
def test_export_shards_past_the_limit(tmp_path):
  cfg = run_config(**LLAMA_LAYOUT, num_kv_heads=2)
  wd = random_workdir(tmp_path / "run", cfg)
  out = export(str(wd), str(tmp_path / "hf"), max_shard_size="10KB")
  index = json.loads((out / "model.safetensors.index.json").read_text())
  shards = sorted(set(index["weight_map"].values()))
  assert len(shards) > 2 and not (out / "model.safetensors").exists()
  model = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
  tokens = np.arange(20)[None] % 40
  with torch.no_grad():
    theirs = model(torch.tensor(tokens)).logits.numpy()
  assert np.abs(jaxgen_logits(wd, tokens) - theirs).max() <= 1e-4


@pytest.mark.parametrize("model,needle", [
    (dict(position="learned", norm="layernorm", mlp="swiglu"), "match no Hugging Face layout"),
    (dict(GPT2_LAYOUT, num_kv_heads=2), "no GPT-2 equivalent"),
    (dict(position="rope", norm="layernorm", mlp="gelu"), "match no Hugging Face layout"),
])
def test_export_refuses_models_without_an_hf_layout(tmp_path, model, needle):
  wd = random_workdir(tmp_path / "run", run_config(**model))
  with pytest.raises(UserError) as err:
    export(str(wd), str(tmp_path / "hf"))
  assert needle in one_line(err)
  assert not (tmp_path / "hf").exists()
  assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary left behind


def test_export_refuses_a_nonempty_out(tmp_path):
  wd = random_workdir(tmp_path / "run", run_config(**GPT2_LAYOUT))
  (tmp_path / "hf").mkdir()
  (tmp_path / "hf" / "x").write_text("keep me")
  with pytest.raises(UserError) as err:
    export(str(wd), str(tmp_path / "hf"))
  assert "not an empty directory" in one_line(err)
  assert (tmp_path / "hf" / "x").read_text() == "keep me"


def _sentencepiece(tmp_path):
  return SentencePieceTokenizer.train([(TEXT + _VERSE) * 20], 330)


@pytest.mark.parametrize("make", [lambda _: CharTokenizer.from_text(TEXT),
                                  lambda _: ByteTokenizer(), _sentencepiece],
                         ids=["char", "byte", "sentencepiece"])
def test_exported_tokenizer_matches_jaxgen(tmp_path, make):
  tokenizer = make(tmp_path)
  wd = random_workdir(tmp_path / "run", run_config(**GPT2_LAYOUT), tokenizer=tokenizer)
  out = export(str(wd), str(tmp_path / "hf"))
  hf = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
  for text in (TEXT, "  two  spaces\n\nand lines ", "dog over fox"):
    ids = tokenizer.encode(text).tolist()
    assert hf(text, add_special_tokens=False)["input_ids"] == ids, text
    assert hf.decode(ids) == tokenizer.decode(ids) == text
  assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id) == (
      tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id)


def test_sentencepiece_bpe_tokenizer_is_reported_not_exported(tmp_path, capsys):
  tokenizer = SentencePieceTokenizer.train([TEXT * 20], 320, model_type="bpe")
  wd = random_workdir(tmp_path / "run", run_config(**GPT2_LAYOUT), tokenizer=tokenizer)
  out = export(str(wd), str(tmp_path / "hf"))
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("jaxgen: warning: the tokenizer is not exported")
  assert not (out / "tokenizer.json").exists() and (out / "model.safetensors").exists()


@pytest.mark.slow
def test_lstm_exports_as_a_torch_lstm_state_dict(tmp_path):
  import importlib.util

  from jaxgen import config as config_lib
  cfg = config_lib.base_config()
  cfg.model = config_lib.lstm_model()
  cfg.model.update(num_layers=2, embed_dim=16, hidden_size=24)
  wd = random_workdir(tmp_path / "run", cfg)
  out = export(str(wd), str(tmp_path / "hf"))
  spec = importlib.util.spec_from_file_location("lstm_module", out / "modeling_jaxgen_lstm.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  model = module.JaxgenLSTM.from_pretrained(str(out))
  assert isinstance(model.lstm, torch.nn.LSTM)
  tokens = np.random.default_rng(0).integers(0, 40, (2, 30))
  with torch.no_grad():
    theirs = model(torch.tensor(tokens))[0].numpy()
  diff = float(np.abs(jaxgen_logits(wd, tokens) - theirs).max())
  print(f"lstm: max abs logit difference {diff:.2e}")
  assert diff <= 1e-4
