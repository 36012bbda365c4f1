"""Conditional generation end to end: paired data, training through the loop (and CLI),
decoded validation metrics, meshes agreeing, `jaxgen sample --source/--source_file`,
and one-line errors for bad paired sources."""

import json
import pathlib

import numpy as np
import pytest

import jaxgen.sample
from jaxgen import config as base
from jaxgen import config_check
from jaxgen.data import pairs
from jaxgen.data.tokenizer import CharTokenizer
from jaxgen.errors import UserError
from tests.helpers import assert_one_error, older_meta, one_line, reverse_config, run_jaxgen
from tests.train_helpers import Cli, last_by_step, run, train_losses

REPO = pathlib.Path(__file__).resolve().parents[1]


def records(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A model trained until it reverses (greedy exact match reported at the end)."""
  workdir = tmp_path_factory.mktemp("reverse") / "run"
  cfg = reverse_config(steps=400, learning_rate=3e-3, log_every=50)
  cfg.eval.update(every_steps=200)
  last = run(cfg, workdir)
  return workdir, last


@pytest.mark.slow
def test_training_reports_decoded_metrics_and_learns_to_reverse(trained):
  workdir, last = trained
  evals = [r for r in records(workdir) if "val_exact_match" in r]
  assert [r["step"] for r in evals] == [200, 400]
  for key in ("val_loss", "val_bleu", "val_chrf"):
    assert key in evals[-1]
  assert last["val_exact_match"] >= 0.9, last
  assert last["val_chrf"] > 80, last


def test_paired_batches_mask_padding_and_weigh_targets_only():
  cfg = reverse_config()
  items = pairs.pairs(cfg.data, "train")
  tok = CharTokenizer.from_texts(pairs.vocabulary_texts(items, []))
  batch = next(iter(pairs.make_pair_dataset(items, tok, source_len=8, target_len=8,
                                            batch_size=4, seed=0, prefetch=0)))
  for b in range(4):
    n = int(batch["source_segment_ids"][b].sum())
    assert batch["source"][b, n - 1] == tok.eos_id and (batch["source"][b, n:] == tok.pad_id).all()
    m = int(batch["weights"][b].sum())
    assert batch["inputs"][b, 0] == tok.bos_id and batch["targets"][b, m - 1] == tok.eos_id
    np.testing.assert_array_equal(batch["inputs"][b, 1:m], batch["targets"][b, :m - 1])
    assert (batch["weights"][b, m:] == 0).all()
    # Reverse: the target letters are the source letters backwards.
    np.testing.assert_array_equal(batch["targets"][b, :m - 1], batch["source"][b, :n - 1][::-1])


@pytest.mark.parametrize("task,check", [
    ("copy", lambda s, t: s == t), ("reverse", lambda s, t: s[::-1] == t),
    ("sort", lambda s, t: "".join(sorted(s)) == t),
    ("addition", lambda s, t: sum(map(int, s.split("+"))) == int(t))])
def test_synthetic_tasks_are_seeded_and_correct(task, check):
  cfg = reverse_config()
  cfg.data.source = f"synthetic:{task}"
  a, b = pairs.pairs(cfg.data, "train"), pairs.pairs(cfg.data, "train")
  assert [a[i] for i in range(50)] == [b[i] for i in range(50)]
  assert all(check(*a[i]) for i in range(50))
  assert pairs.pairs(cfg.data, "eval")[0] != a[0]


@pytest.mark.slow
def test_meshes_agree_on_encoder_decoder_losses(tmp_path):
  losses = {}
  for mesh in [(1, 1, 1), (2, 2, 2), (1, 4, 2)]:
    workdir = tmp_path / "x".join(map(str, mesh))
    run(reverse_config(steps=8), workdir, mesh)
    losses[mesh] = train_losses(workdir)
  reference = losses[(1, 1, 1)]
  assert len(reference) == 8
  for mesh, got in losses.items():
    np.testing.assert_allclose(got, reference, atol=1e-4, rtol=0, err_msg=f"mesh {mesh}")


@pytest.mark.slow
def test_generate_from_sources_batched_equals_one_at_a_time(trained):
  workdir, _ = trained
  sources = ["abc", "fedcba", "a", "bbaf", "cde"]
  together = jaxgen.sample.generate(str(workdir), source=sources, temperature=0)
  alone = [jaxgen.sample.generate(str(workdir), source=s, temperature=0) for s in sources]
  assert together == alone
  assert sum(out[0] == s[::-1] for out, s in zip(together, sources)) >= 4
  beam = jaxgen.sample.generate(str(workdir), source=sources, beam_size=1)
  assert beam == together
  beams = jaxgen.sample.generate(str(workdir), source="abc", beam_size=3, num_samples=3)
  assert len(beams) == 3
  sampled = jaxgen.sample.generate(str(workdir), source=sources, temperature=1.0, top_k=3,
                                   top_p=0.9, num_samples=2, seed=1)
  assert [len(s) for s in sampled] == [2] * 5


@pytest.mark.slow
def test_sample_command_prints_and_writes_outputs(trained, tmp_path):
  workdir, _ = trained
  out = run_jaxgen("sample", f"--workdir={workdir}", "--source=abcd", "--temperature=0")
  assert out.returncode == 0, out.stderr
  assert out.stdout.splitlines() == jaxgen.sample.generate(str(workdir), source="abcd",
                                                           temperature=0)
  sources = tmp_path / "in.txt"
  sources.write_text("abc\nfe\n\nbbbad\n")
  result = tmp_path / "out.txt"
  out = run_jaxgen("sample", f"--workdir={workdir}", f"--source_file={sources}",
                f"--output_file={result}", "--temperature=0")
  assert out.returncode == 0 and out.stdout == "", out.stderr
  expected = [o[0] for o in jaxgen.sample.generate(str(workdir), source=["abc", "fe", "",
                                                                         "bbbad"],
                                                   temperature=0)]
  assert result.read_text().splitlines() == expected
  bad = run_jaxgen("sample", f"--workdir={workdir}", "--source=xyz!", "--temperature=0")
  assert_one_error(bad, "the source")
  # A source longer than the model reads (7 tokens + eos) is refused, or cut
  # with --truncate_source, as training cuts it, and counted in one line.
  long_sources = ["abc", "abcdefabcdef"]
  with pytest.raises(UserError, match="source 2 is 12 tokens.*--truncate_source") as err:
    jaxgen.sample.generate(str(workdir), source=long_sources, temperature=0)
  one_line(err)
  sources.write_text("".join(s + "\n" for s in long_sources))
  out = run_jaxgen("sample", f"--workdir={workdir}", f"--source_file={sources}",
                   "--truncate_source")
  assert out.returncode == 0, out.stderr
  assert out.stderr.splitlines() == ["jaxgen: cut 1 of 2 sources to the 7 tokens the model reads"]
  assert out.stdout.splitlines() == [o[0] for o in jaxgen.sample.generate(
      str(workdir), source=long_sources, temperature=0, truncate_source=True)]
  bad = run_jaxgen("sample", f"--workdir={workdir}", "--prompt=abc")
  assert_one_error(bad, "--source")


@pytest.mark.slow
def test_train_cli_with_bad_paired_sources_is_one_line(tmp_path):
  tsv = tmp_path / "pairs.tsv"
  tsv.write_text("hallo\thello\nkein tab hier\n")
  cases = [
      ([f"--config.data.source=tsv:{tsv}"], "pairs.tsv:2"),
      (["--config.data.source=synthetic:rotate"], "synthetic:rotate"),
      (["--config.data.source=text:/nonexistent.txt"], "model.type='encoder_decoder'"),
      (["--config.data.synthetic_min_len=9", "--config.data.synthetic_max_len=3"],
       "data.synthetic_min_len"),
      ([f"--config.data.source=tsv:{tmp_path / 'missing.tsv'}"], "does not exist"),
  ]
  for flags, needle in cases:
    out = run_jaxgen("train", "--config=configs/seq2seq_reverse.py", *flags,
                  f"--workdir={tmp_path / 'w'}")
    assert_one_error(out, needle)
    assert not (tmp_path / "w").exists()


def test_language_model_with_pairs_is_refused():
  cfg = base.base_config()
  cfg.model = base.transformer_model()
  cfg.data.source = "synthetic:copy"
  with pytest.raises(UserError, match="cannot read") as err:
    config_check.check(cfg)
  one_line(err)


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
  """A run stopped after step 6 (its checkpoint) and started again gives the losses
  of an uninterrupted run: the pair stream resumes where it was."""
  whole = tmp_path / "whole"
  run(reverse_config(steps=12, decay_steps=12), whole)
  part = tmp_path / "part"
  run(reverse_config(steps=6, decay_steps=12), part)  # the same schedule, stopped early
  run(reverse_config(steps=12, decay_steps=12), part)
  np.testing.assert_allclose(train_losses(part)[-6:], train_losses(whole)[-6:], atol=1e-6,
                             rtol=0)


@pytest.mark.slow
def test_resume_refuses_another_pair_stream(tmp_path):
  run(reverse_config(steps=2), tmp_path)
  cfg = reverse_config(steps=4)
  cfg.data.synthetic_seed += 1
  with pytest.raises(UserError, match=r"data\.synthetic_seed=1 \(saved: 0\)"):
    run(cfg, tmp_path)


def test_tsv_and_jsonl_pairs(tmp_path):
  tsv = tmp_path / "p.tsv"
  tsv.write_text("".join(f"quelle {i}\tziel {i}\n" for i in range(10)) + "\n")
  cfg = reverse_config()
  cfg.data.update(source=f"tsv:{tsv}", val_fraction=0.2, pair_split="tail")
  assert pairs.is_paired(cfg.data)
  assert list(pairs.pairs(cfg.data, "eval")) == [("quelle 8", "ziel 8"), ("quelle 9", "ziel 9")]
  assert len(pairs.pairs(cfg.data, "train")) == 8
  cfg.data.pair_split = "hashed"
  train, evaluate = list(pairs.pairs(cfg.data, "train")), list(pairs.pairs(cfg.data, "eval"))
  assert len(evaluate) == 2 and sorted(train + evaluate) == sorted(
      (f"quelle {i}", f"ziel {i}") for i in range(10))
  assert tuple(map(list, pairs.train_and_eval(cfg.data))) == (train, evaluate)
  jsonl = tmp_path / "p.jsonl"
  jsonl.write_text("".join(json.dumps({"de": f"a{i}", "en": f"b{i}"}) + "\n" for i in range(5)))
  cfg.data.update(source=f"jsonl:{jsonl}", source_key="de", target_key="en", val_fraction=0.2)
  assert pairs.pairs(cfg.data, "train")[0] == ("a0", "b0")
  cfg.data.target_key = "fr"
  with pytest.raises(UserError, match="'fr'") as err:
    pairs.pairs(cfg.data, "train")
  one_line(err)
  cfg.data.source_key = ""
  assert not pairs.is_paired(cfg.data)  # jsonl documents for language models


def shared_texts(train, evaluate):
  seen = {text for pair in train for text in pair}
  return [pair for pair in evaluate if pair[0] in seen or pair[1] in seen]


def test_hashed_split_keeps_shared_texts_together_and_ignores_the_file_order(tmp_path):
  rng = np.random.default_rng(0)
  # 300 pairs in chains that share sources or targets (a source translated twice, two
  # sources with one translation), as dictionaries and multi-reference data have.
  lines = []
  for g in range(100):
    lines += [(f"q{g}", f"z{g}"), (f"q{g}", f"z{g}b"), (f"q{g}b", f"z{g}b")]
  for name, order in (("sorted.tsv", range(300)), ("shuffled.tsv", rng.permutation(300))):
    (tmp_path / name).write_text("".join(f"{lines[i][0]}\t{lines[i][1]}\n" for i in order))
  splits = {}
  for name in ("sorted.tsv", "shuffled.tsv"):
    cfg = reverse_config()
    cfg.data.update(source=f"tsv:{tmp_path / name}", val_fraction=0.1, pair_split="hashed")
    train, evaluate = list(pairs.pairs(cfg.data, "train")), list(pairs.pairs(cfg.data, "eval"))
    assert len(train) + len(evaluate) == 300 and 30 <= len(evaluate) <= 32
    assert not shared_texts(train, evaluate)
    # Whole chains: 10 or 11 of them, not the file's last 30 lines.
    assert len(evaluate) % 3 == 0 and evaluate != [lines[i] for i in range(270, 300)]
    splits[name] = sorted(evaluate)
  assert splits["sorted.tsv"] == splits["shuffled.tsv"]


def test_hashed_split_warns_when_shared_texts_make_validation_too_large(tmp_path, capsys):
  # Five groups of four pairs sharing a source: holding out 5% (one pair) takes a
  # whole group, 20% of the data.
  tsv = tmp_path / "groups.tsv"
  tsv.write_text("".join(f"source {g}\ttarget {g}.{i}\n" for g in range(5) for i in range(4)))
  cfg = reverse_config()
  cfg.data.update(source=f"tsv:{tsv}", val_fraction=0.05, pair_split="hashed")
  assert len(pairs.pairs(cfg.data, "eval")) == 4
  err = capsys.readouterr().err.splitlines()
  assert err == [f"jaxgen: warning: data.source 'tsv:{tsv}' holds out 4 pairs of 20 for "
                 "validation, more than twice data.val_fraction=0.05: pairs sharing a source "
                 "or target text stay together; data.pair_split='tail' holds out exactly the "
                 "last ones"], err


def test_hashed_split_refuses_pairs_it_cannot_hold_out_without_leaking(tmp_path):
  tsv = tmp_path / "p.tsv"
  tsv.write_text("".join(f"same source\ttarget {i}\n" for i in range(10)))
  cfg = reverse_config()
  cfg.data.update(source=f"tsv:{tsv}", val_fraction=0.2)
  with pytest.raises(UserError, match="pair_split='tail'") as err:
    pairs.pairs(cfg.data, "train")
  one_line(err)
  cfg.data.pair_split = "tail"
  assert len(pairs.pairs(cfg.data, "eval")) == 2


DING = REPO.parent / "shared/data/ding_de_en/pairs.tsv"


@pytest.mark.skipif(not DING.exists(), reason=f"the Ding pairs are not at {DING}")
def test_ding_pairs_split():
  """The file's tail is its proverbs: 'tail' holds out mostly proverbs, which copying
  the source scores far lower on than on the hashed sample of all pairs."""
  import sacrebleu
  cfg = reverse_config()
  cfg.data.update(source=f"tsv:{DING}", val_fraction=0.1)
  copy_chrf = {}
  for split in ("tail", "hashed"):
    cfg.data.pair_split = split
    train, evaluate = list(pairs.pairs(cfg.data, "train")), list(pairs.pairs(cfg.data, "eval"))
    assert len(train) + len(evaluate) == 16_503
    assert len(evaluate) == 1_651 if split == "tail" else 1_651 <= len(evaluate) < 1_700
    copy_chrf[split] = sacrebleu.corpus_chrf([s for s, _ in evaluate],
                                             [[t for _, t in evaluate]]).score
    if split == "hashed":
      assert not shared_texts(train, evaluate)
  assert copy_chrf["tail"] < 13 and copy_chrf["hashed"] > 14, copy_chrf


def test_resume_of_an_older_pair_run_knows_it_split_at_the_tail(tmp_path):
  """A checkpoint saved before data.pair_split existed split its pair file at the tail:
  resuming it under the hashed default would change the training pairs."""
  from jaxgen.train import loop
  tsv = tmp_path / "p.tsv"
  tsv.write_text("".join(f"quelle {i}\tziel {i}\n" for i in range(40)))
  cfg = reverse_config()
  cfg.data.update(source=f"tsv:{tsv}", val_fraction=0.1, tokenizer="byte")
  setup = loop.prepare(cfg, str(tmp_path / "run"))
  older = older_meta(setup, "pair_split")
  with pytest.raises(UserError, match=r"data\.pair_split='hashed' \(saved: 'tail'\)") as err:
    loop._check_compatible(setup, older)
  one_line(err)
  cfg.data.pair_split = "tail"
  loop._check_compatible(loop.prepare(cfg, str(tmp_path / "run")), older)
  # A language model's older checkpoint has no pair file to have split.
  lm = base.base_config()
  lm.model = base.transformer_model()
  lm.model.update(num_layers=1, num_heads=2, embed_dim=16)
  lm.train.update(batch_size=8, compilation_cache_dir="")
  setup = loop.prepare(lm, str(tmp_path / "lm"))
  loop._check_compatible(setup, older_meta(setup, "pair_split"))


@pytest.mark.slow
def test_long_sources_refused_by_sample_and_cut_by_evaluation(trained):
  from jaxgen.sample import conditional
  from jaxgen.sample.restore import restore
  workdir, _ = trained
  with pytest.raises(UserError, match="at most 7") as err:
    jaxgen.sample.generate(str(workdir), source="abcdefabcdef")
  one_line(err)
  graphdef, params, _, tokenizer = restore(str(workdir))
  cut = conditional.generate_from_sources(graphdef, params, tokenizer, ["abcdefabcdef"],
                                          source_len=8, max_new_tokens=7, truncate=True)
  same = conditional.generate_from_sources(graphdef, params, tokenizer, ["abcdefa"],
                                           source_len=8, max_new_tokens=7)
  assert cut == same


@pytest.mark.slow
def test_killed_mid_training_then_rerun_gives_the_uninterrupted_losses(tmp_path):
  """SIGKILL of `jaxgen train` after a save, as for the language model: the rerun
  resumes the model, optimizer and pair stream bit for bit."""
  args = ["--config=configs/seq2seq_reverse.py", "--config.model.embed_dim=32",
          "--config.model.num_layers=1", "--config.model.num_encoder_layers=1",
          "--config.data.synthetic_max_len=6", "--config.data.seq_len=8",
          "--config.data.source_len=8", "--config.train.batch_size=8",
          "--config.train.steps=30", "--config.train.warmup_steps=5",
          "--config.train.log_every=1", "--config.checkpoint.every_steps=5",
          "--config.eval.every_steps=0", "--config.sample.num_tokens=0",
          "--config.train.compilation_cache_dir="]
  workdir = tmp_path / "killed"
  with Cli([*args, f"--workdir={workdir}"]) as cli:  # killed on leaving
    while not (workdir / "checkpoints" / "10").is_dir():
      cli.wait_for("step ")
  with Cli([*args, f"--workdir={workdir}"]) as cli:
    rc, out, err = cli.finish()
  assert rc == 0, err
  resumed_at = int(out.split("jaxgen: resuming from")[1].split("(step ")[1].split(")")[0])
  assert 10 <= resumed_at < 30  # the kill came mid-training
  whole = tmp_path / "whole"
  with Cli([*args, f"--workdir={whole}"]) as cli:
    assert cli.finish()[0] == 0
  resumed, reference = last_by_step(workdir), last_by_step(whole)
  assert sorted(resumed) == list(range(1, 31))
  assert resumed == reference  # bit for bit, every step
