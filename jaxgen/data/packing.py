"""First-fit packing of any task's examples into rows: the one packer of data.mode='pack'.

An example is a dict of unpadded 1-D id arrays: the LM's document pieces have
"inputs" and "targets", a pair adds "source". Grain's first-fit packing puts all
of an example's arrays into the same row of every bin at once (an example fits
only where all of them fit), as the Flax examples' `pack_dataset` packs any set
of keys. The n-th example of a row gets segment id n and positions from 0 on
every side. A batch holds each array padded with pad_id, and per side its
segment ids and positions (0 at padding): "segment_ids" and "positions" for the
"inputs" side, "source_segment_ids" and "source_positions" for the source:

  "inputs", "targets", "segment_ids", "positions"      [B, width of "inputs"]
  "source", "source_segment_ids", "source_positions"   [B, width of "source"] (pairs)
  "weights"                                            1 on target tokens

The models mask attention by these ids, so a packed example computes what it
would alone in a padded row.
"""

from __future__ import annotations

from collections.abc import Sequence

import grain
import numpy as np

# First-fit emits all its bins as soon as one example fits in none of them, so
# more bins leave less padding; 64 keeps padding low for paragraph-sized docs
# at a few hundred KB of buffers (see benchmarks/input_throughput.py).
MIN_BINS = 64


def packed_batches(examples: grain.IterDataset, widths: dict[str, int], *, pad_id: int,
                   batch_size: int, seed: int, shuffle: bool,
                   drop_remainder: bool) -> grain.IterDataset:
  """Batches of rows packed from `examples` (each key at most its width); checkpointable,
  the packer's open bins are part of the iterator's state. Without `drop_remainder` the
  short last batch of a single pass gets empty rows (segment 0, weight 0)."""
  ds = grain.experimental.FirstFitPackIterDataset(
      examples, length_struct=dict(widths), num_packing_bins=max(batch_size, MIN_BINS),
      seed=seed % 2**32, shuffle_bins=shuffle, padding_struct={k: pad_id for k in widths})
  return ds.batch(batch_size, drop_remainder=drop_remainder,
                  batch_fn=_PackedBatch(batch_size, widths, pad_id))


class _PackedBatch:
  """Stacks packed rows into the batch layout, padding a short last batch."""

  def __init__(self, batch_size: int, widths: dict[str, int], pad_id: int):
    self.batch_size, self.widths, self.pad_id = batch_size, dict(widths), pad_id

  def __call__(self, rows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    missing = self.batch_size - len(rows)

    def stack(key: str, width: int, fill: int) -> np.ndarray:
      x = np.stack([r[key] for r in rows]).astype(np.int32)
      if missing:  # only the last batch of a single pass
        x = np.concatenate([x, np.full((missing, width), fill, np.int32)])
      return x

    batch = {}
    for key, width in self.widths.items():
      batch[key] = stack(key, width, self.pad_id)
      if key == "targets":  # its segments and positions are those of "inputs"
        continue
      name = "" if key == "inputs" else f"{key}_"
      batch[f"{name}segment_ids"] = stack(f"{key}_segment_ids", width, 0)
      batch[f"{name}positions"] = stack(f"{key}_positions", width, 0)
    batch["weights"] = (batch["segment_ids"] != 0).astype(np.float32)
    return batch
