"""Random-window batches over a token array, as in nanoGPT's `get_batch`.

Batch `index` depends only on (seed, index), so resuming at step s regenerates
exactly the batches an uninterrupted run would have seen: the data-iterator
position to checkpoint is just the step.
"""

from __future__ import annotations

import numpy as np

from jaxgen.errors import UserError
from jaxgen.messages import count


class WindowSampler:
  """Batches of `batch_size` windows of `seq_len + 1` tokens at random offsets."""

  def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int,
               seed: int, split_name: str = "train"):
    if batch_size < 1:
      raise UserError(f"data.batch_size is {batch_size}; it must be at least 1")
    if seq_len < 1:
      raise UserError(f"data.seq_len is {seq_len}; it must be at least 1")
    if not hasattr(tokens, "windows"):  # else a token store's stream (data/store.py)
      tokens = np.asarray(tokens)
    if getattr(tokens, "ndim", 1) != 1:
      raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if len(tokens) < seq_len + 1:
      raise UserError(
          f"the {split_name} split has {count(len(tokens), 'token')} but one window "
          f"needs seq_len+1 = {seq_len + 1}; use a longer corpus or lower "
          "data.seq_len")
    self.tokens = tokens
    self.batch_size = batch_size
    self.seq_len = seq_len
    self.seed = seed
    self._offsets = np.arange(seq_len + 1)

  def batch(self, index: int) -> dict[str, np.ndarray]:
    """Batch number `index`: {"inputs", "targets"}, int32 [batch_size, seq_len]."""
    if index < 0:
      raise ValueError(f"batch index must be >= 0, got {index}")
    # default_rng rejects negative entropy; the modulus keeps any int seed
    # usable and leaves non-negative seeds unchanged.
    rng = np.random.default_rng([self.seed % 2**64, index])
    # Exclusive high: the last start leaves room for the shifted target.
    starts = rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)
    windows = self.windows(starts)
    return {"inputs": np.ascontiguousarray(windows[:, :-1]),
            "targets": np.ascontiguousarray(windows[:, 1:])}

  def windows(self, starts: np.ndarray) -> np.ndarray:
    """int32 [len(starts), seq_len + 1]: the windows of the tokens beginning at `starts`."""
    if isinstance(self.tokens, np.ndarray):
      return self.tokens[starts[:, None] + self._offsets].astype(np.int32)
    return self.tokens.windows(starts, self.seq_len + 1)
