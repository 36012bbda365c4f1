"""Packed pairs (data.mode='pack' with a paired source): well-formed rows that hold
every pair once per pass, no gradient across the pairs of a row in the real
encoder-decoder, a packed pair's loss equal to its padded loss, exact resume, and
`jaxgen train` and `jaxgen data inspect` end to end (the LSTM with attention refuses
packing in one line)."""

import collections
import itertools
import json

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxgen.config import lstm_attention_model
from jaxgen.data import pairs
from jaxgen.data.tokenizer import CharTokenizer
from jaxgen.models.factory import create_model, model_config
from jaxgen.train.plan import abstract_batch
from tests.helpers import assert_one_error, reverse_config, run_jaxgen
from tests.train_helpers import run, train_losses

WIDTH = 8  # source_len and seq_len: up to 6 letters + eos (bos) fit, so nothing is cut


def setup(examples=60, **data):
  cfg = reverse_config()
  cfg.data.update(synthetic_max_len=6, synthetic_train_examples=examples, mode="pack", **data)
  items = pairs.pairs(cfg.data, "train")
  tok = CharTokenizer.from_texts(pairs.vocabulary_texts(items, []))
  return cfg, items, tok


def packed(items, tok, **kwargs):
  args = dict(source_len=WIDTH, target_len=WIDTH, batch_size=4, seed=0, prefetch=0,
              pack=True)
  return pairs.make_pair_dataset(items, tok, **{**args, **kwargs})


def segments(batch, b):
  """The pairs of row b: {segment id: (source ids, inputs, targets)}."""
  src_seg, tgt_seg = batch["source_segment_ids"][b], batch["segment_ids"][b]
  return {n: (batch["source"][b][src_seg == n], batch["inputs"][b][tgt_seg == n],
              batch["targets"][b][tgt_seg == n])
          for n in sorted(set(tgt_seg[tgt_seg != 0].tolist()))}


def check_row(batch, b, tok):
  """Row b is well formed; returns its pairs as texts."""
  texts = []
  for side, ids in (("source", batch["source_segment_ids"][b]),
                    ("target", batch["segment_ids"][b])):
    n = int(ids.max())
    # Segments 1..n in order, each one contiguous run; padding (0) only at the end.
    runs = [int(k) for k, _ in itertools.groupby(ids.tolist())]
    assert runs in ([*range(1, n + 1)], [*range(1, n + 1), 0]), (side, ids)
    positions = batch["source_positions" if side == "source" else "positions"][b]
    for k in range(n + 1):
      expected = np.arange((ids == k).sum()) if k else np.zeros((ids == 0).sum())
      np.testing.assert_array_equal(positions[ids == k], expected, err_msg=side)
  assert set(batch["source_segment_ids"][b][batch["source_segment_ids"][b] != 0]) == set(
      batch["segment_ids"][b][batch["segment_ids"][b] != 0])  # the same pairs on both sides
  for ids, key in ((batch["source_segment_ids"][b], "source"),
                   (batch["segment_ids"][b], "inputs"), (batch["segment_ids"][b], "targets")):
    assert (batch[key][b][ids == 0] == tok.pad_id).all()
  np.testing.assert_array_equal(batch["weights"][b], batch["segment_ids"][b] != 0)
  for src, inputs, targets in segments(batch, b).values():
    assert src[-1] == tok.eos_id and inputs[0] == tok.bos_id and targets[-1] == tok.eos_id
    np.testing.assert_array_equal(inputs[1:], targets[:-1])
    texts.append((tok.decode(src[:-1]), tok.decode(targets[:-1])))
  return texts


def one_pass(items, tok, **kwargs):
  it = iter(packed(items, tok, repeat=False, **kwargs))
  batches = list(it)
  it.close()
  return batches


def test_packed_batches_are_well_formed_and_hold_every_pair_once_per_pass():
  cfg, items, tok = setup()
  batches = one_pass(items, tok)
  assert set(batches[0]) == set(abstract_batch(cfg))  # what `jaxgen plan` compiles for
  seen = [pair for batch in batches for b in range(4) for pair in check_row(batch, b, tok)]
  assert collections.Counter(seen) == collections.Counter(items[i] for i in range(len(items)))
  rows = sum(int((batch["segment_ids"].max(1) > 0).sum()) for batch in batches)
  assert rows < 0.7 * len(items)  # it does pack (up to 6 letters in rows of 8)
  # Two hosts: each packs its own share, together every pair once.
  shards = [pair for i in range(2)
            for batch in one_pass(items, tok, shard_index=i, shard_count=2)
            for b in range(4) for pair in check_row(batch, b, tok)]
  assert collections.Counter(shards) == collections.Counter(seen)


def test_packed_stream_resumes_from_its_state_with_prefetch():
  _, items, tok = setup()
  it = iter(packed(items, tok, prefetch=2))
  for _ in range(23):  # past the end of the first pass (the packer's bins hold some)
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(6)]
  again = iter(packed(items, tok, prefetch=2))
  again.set_state(state)
  for want, got in zip(expected, [next(again) for _ in range(6)]):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  it.close()
  again.close()


def packed_row(tok, items):
  """The first packed row of a real batch holding at least three pairs."""
  for batch in one_pass(items, tok):
    for b in range(len(batch["source"])):
      if batch["segment_ids"][b].max() >= 3:
        return {k: v[b:b + 1] for k, v in batch.items()}
  raise AssertionError("no row holds three pairs")


def model(cfg, tok, position):
  cfg.model.update(num_layers=2, num_encoder_layers=2, num_heads=2, embed_dim=32,
                   position=position)
  return create_model(model_config(cfg.model, tok.vocab_size, WIDTH, WIDTH), nnx.Rngs(0))


def token_losses(m, batch, deltas=None):
  """Per-target cross-entropy [1, T] of the model on `batch`; `deltas` = (source,
  target) perturbations added to the embedded tokens."""
  if deltas is not None:
    embed = m._embed

    def perturbed(table, tokens, positions, name):  # the embeddings as inputs
      return embed(table, tokens, positions, name) + deltas[name != "source_pos_embed"]

    object.__setattr__(m, "_embed", perturbed)
  logits = m.batch_logits({k: jax.numpy.asarray(v) for k, v in batch.items()})
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.slow
def test_no_gradient_crosses_packed_pairs_and_each_loss_is_its_padded_loss(position):
  cfg, items, tok = setup(examples=40)
  batch = packed_row(tok, items)
  m = model(cfg, tok, position)
  graphdef, params = nnx.split(m)
  src_seg, tgt_seg = batch["source_segment_ids"][0], batch["segment_ids"][0]
  zeros = (np.zeros((1, WIDTH, 32), np.float32),) * 2
  for a in range(1, int(tgt_seg.max()) + 1):
    def loss_a(deltas):
      ce = token_losses(nnx.merge(graphdef, params), batch, deltas)
      return (ce * (batch["segment_ids"] == a)).sum()

    g_src, g_tgt = (np.abs(g[0]).sum(-1) for g in jax.grad(loss_a)(zeros))
    # Exactly zero at every other pair's tokens and at padding, on both sides.
    assert (g_src[src_seg != a] == 0).all() and (g_tgt[tgt_seg != a] == 0).all(), a
    assert (g_src[src_seg == a] > 0).all() and g_tgt[tgt_seg == a].max() > 0, a
  # Each pair's losses packed are its losses alone in its own padded row.
  packed_ce = np.asarray(token_losses(m, batch))[0]
  for n, (src, _, targets) in segments(batch, 0).items():
    pair = (tok.decode(src[:-1]), tok.decode(targets[:-1]))
    it = iter(pairs.make_pair_dataset([pair], tok, source_len=WIDTH, target_len=WIDTH,
                                      batch_size=1, seed=0, shuffle=False, repeat=False,
                                      prefetch=0))
    alone = next(it)
    it.close()
    alone_ce = np.asarray(token_losses(m, alone))[0][alone["weights"][0] > 0]
    np.testing.assert_allclose(packed_ce[tgt_seg == n], alone_ce, atol=1e-5, rtol=0)
    np.testing.assert_allclose(packed_ce[tgt_seg == n].mean(), alone_ce.mean(), atol=1e-5)


@pytest.mark.slow
def test_packed_training_resumes_exactly(tmp_path):
  """Stopped after step 6 and started again, a packed run gives the losses of an
  uninterrupted one: the packer's state is in the checkpoint."""
  def config(steps):
    cfg = reverse_config(steps=steps, decay_steps=12, batch_size=8)
    cfg.data.mode = "pack"
    return cfg

  run(config(12), tmp_path / "whole")
  run(config(6), tmp_path / "part")
  run(config(12), tmp_path / "part")
  np.testing.assert_allclose(train_losses(tmp_path / "part")[-6:],
                             train_losses(tmp_path / "whole")[-6:], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_train_and_inspect_commands_pack_pairs_and_lstm_attention_refuses(tmp_path):
  small = ["--config.model.embed_dim=32", "--config.model.num_layers=1",
           "--config.model.num_encoder_layers=1", "--config.data.synthetic_max_len=6",
           "--config.data.seq_len=16", "--config.data.source_len=16",
           "--config.train.batch_size=8", "--config.train.steps=5",
           "--config.train.log_every=1", "--config.eval.every_steps=5",
           "--config.eval.steps=1", "--config.eval.decode_examples=4",
           "--config.sample.num_tokens=0", "--config.train.compilation_cache_dir="]
  workdir = tmp_path / "packed"
  out = run_jaxgen("train", "--config=configs/seq2seq_reverse.py", "--config.data.mode=pack",
                   *small, f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  losses = [r["train_loss"] for r in records if "train_loss" in r]
  assert len(losses) == 5 and np.isfinite(losses).all()
  assert any("val_exact_match" in r for r in records)  # evaluation, padded, ran
  shown = run_jaxgen("data", "inspect", "--config=configs/seq2seq_reverse.py",
                     "--config.data.mode=pack", "--config.train.batch_size=2", "--num_batches=1")
  assert shown.returncode == 0, shown.stderr
  pairs_shown = [l for l in shown.stdout.splitlines() if l.startswith("row ")]
  assert "row 0.1: " in pairs_shown[0] and len(pairs_shown) > 2  # one line per packed pair
  for line in pairs_shown:
    source, target = line.split(": ", 1)[1].split(" (")[0].split(" -> ")
    assert source[::-1] == target  # reverse: each pair's own target
  bad = run_jaxgen("train", "--config=configs/lstm_attention_reverse.py",
                   "--config.data.mode=pack", f"--workdir={tmp_path / 'lstm'}")
  assert_one_error(bad, "model.type='lstm_attention'")
  assert not (tmp_path / "lstm").exists()


def test_lstm_attention_refuses_packed_batches():
  """Bypassing the config check, the model itself refuses rows with several pairs."""
  cfg, items, tok = setup()
  batch = one_pass(items, tok)[0]
  cfg.model = lstm_attention_model()
  cfg.model.update(embed_dim=16, hidden_size=16, num_layers=1)
  m = create_model(model_config(cfg.model, tok.vocab_size, WIDTH, WIDTH), nnx.Rngs(0))
  with pytest.raises(ValueError, match="one pair per row, not packed rows"):
    m.batch_logits(batch)
