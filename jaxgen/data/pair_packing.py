"""Packed pairs (data.mode='pack' with a paired source): several pairs per row.

Each pair is encoded as for padded batches (jaxgen/data/pairs.py), without
padding, and Grain's first-fit packing puts the three sequences of a pair
("source", "inputs", "targets") into the same row of every bin at once, a
pair fitting only where all three fit. The n-th pair of a row gets segment
id n on both sides, and positions restart at 0 with every pair, so a batch
holds, besides the padded keys (0 / pad_id at padding):

  "source", "source_segment_ids", "source_positions"   [B, data.source_len]
  "inputs", "targets", "segment_ids", "positions"      [B, data.seq_len]
  "weights"                                            1 on target tokens

The models mask attention by these ids (an encoder-decoder's target token
sees its own pair's source only), so a packed pair computes what it would
alone in a padded row. Evaluation stays padded, one pair per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from jaxgen.data import pairs
from jaxgen.data.pipeline import _MIN_PACKING_BINS, _read_options

_SIDES = ("source", "inputs", "targets")


class _EncodePair:
  """(source, target) texts -> the unpadded sequences to pack (in the read threads)."""

  def __init__(self, tokenizer: Any, source_len: int, target_len: int):
    self.tokenizer, self.source_len, self.target_len = tokenizer, source_len, target_len

  def __call__(self, pair: tuple[str, str]) -> dict[str, np.ndarray]:
    return pairs.encode_pair(self.tokenizer, pair, self.source_len, self.target_len)


class _PackedPairBatch:
  """Stacks packed rows into the batch layout; a short last batch of a single
  pass gets empty rows (segment 0, weight 0)."""

  def __init__(self, batch_size: int, widths: dict[str, int], pad_id: int):
    self.batch_size, self.widths, self.pad_id = batch_size, widths, pad_id

  def __call__(self, rows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    missing = self.batch_size - len(rows)

    def stack(key: str, width: int, fill: int) -> np.ndarray:
      x = np.stack([r[key] for r in rows]).astype(np.int32)
      if missing:
        x = np.concatenate([x, np.full((missing, width), fill, np.int32)])
      return x

    s, t = self.widths["source"], self.widths["inputs"]
    segment_ids = stack("inputs_segment_ids", t, 0)
    return {"source": stack("source", s, self.pad_id),
            "source_segment_ids": stack("source_segment_ids", s, 0),
            "source_positions": stack("source_positions", s, 0),
            "inputs": stack("inputs", t, self.pad_id),
            "targets": stack("targets", t, self.pad_id),
            "segment_ids": segment_ids,
            "positions": stack("inputs_positions", t, 0),
            "weights": (segment_ids != 0).astype(np.float32)}


def packed_pairs(items: Sequence[tuple[str, str]], tokenizer: Any, *, source_len: int,
                 target_len: int, batch_size: int, seed: int, shuffle: bool, repeat: bool,
                 shard_index: int, shard_count: int, prefetch: int) -> grain.IterDataset:
  """Packed batches of this host's share of `items`; a checkpointable IterDataset
  (the packer's open bins are part of its state, as in the LM's pack mode)."""
  ds = grain.MapDataset.source(items)[shard_index::shard_count]
  if shuffle:
    ds = ds.shuffle(seed % 2**32)  # reshuffled per epoch by repeat
  if repeat:
    ds = ds.repeat()
  ds = ds.map(_EncodePair(tokenizer, source_len, target_len)).to_iter_dataset(
      _read_options(prefetch))
  widths = {"source": source_len, "inputs": target_len, "targets": target_len}
  ds = grain.experimental.FirstFitPackIterDataset(
      ds, length_struct=widths, num_packing_bins=max(batch_size, _MIN_PACKING_BINS),
      seed=seed % 2**32, shuffle_bins=shuffle,
      padding_struct={k: tokenizer.pad_id for k in _SIDES})
  ds = ds.batch(batch_size, drop_remainder=repeat,
                batch_fn=_PackedPairBatch(batch_size, widths, tokenizer.pad_id))
  if prefetch:  # packing and batching one step ahead in a thread, as pipeline.py does
    ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
  return ds
