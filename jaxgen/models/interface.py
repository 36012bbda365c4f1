"""The one model interface the trainer, checkpoints and sampler use.

Two kinds of family sit behind it (as T5X's `DecoderOnlyModel` and
`EncoderDecoderModel` share one trainer); each family registers itself in
`jaxgen.models.registry`:

- decoder-only language models (`TransformerLM`, `LSTMLM`), which read a
  batch's `inputs` (and packed `segment_ids`/`positions`);
- encoder-decoders (`EncoderDecoder`), which also read the batch's `source`
  tokens (and `source_segment_ids`, 0 at padding).

Every model provides:

- `batch_outputs(batch, *, dropout_rng=None) -> (logits [B, T, V], aux_losses)`:
  the float32 logits that predict `batch["targets"]`, and a dict of auxiliary
  losses (float32 scalars, each already weighted by the model; empty for
  today's families), e.g. a router's load-balancing loss. The step's
  cross-entropy (weighted by `batch["weights"]`, so the loss counts target
  tokens only) is shared; the step adds the auxiliary losses to it and
  reports each as `train_NAME` (evaluation: `val_NAME`). `batch_logits` is
  the logits alone, for scoring and tests.
- `init_decoding(batch_size, max_len, source=None) -> cache`: the state a
  sampler starts from. A conditional model encodes `source` = (tokens [B, S],
  segment ids [B, S], 0 at padding) here, once: its cross-attention keys and
  values live in the cache and every decoding step and beam reuses them.
- `prefill(tokens, lengths, cache)`, `decode(tokens, cache)` and
  `context_len`, which the sampler and beam search drive.
- `conditional`: whether `init_decoding` needs a source.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


class Model:
  """Base of every family's model class, which defines `batch_outputs` (and the
  decoding methods); `batch_logits` follows from it."""

  conditional = False

  def batch_outputs(self, batch: dict, *, dropout_rng: jax.Array | None = None
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
    raise NotImplementedError(f"{type(self).__name__} does not define batch_outputs")

  def batch_logits(self, batch: dict, *, dropout_rng: jax.Array | None = None) -> jax.Array:
    return self.batch_outputs(batch, dropout_rng=dropout_rng)[0]


class DecoderOnly(Model):
  """Mixin giving a decoder-only LM the interface, from its `__call__` and `init_cache`."""

  def batch_outputs(self, batch: dict, *, dropout_rng: jax.Array | None = None
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
    packing = {f"{k}_BT": batch[k] for k in ("segment_ids", "positions") if k in batch}
    return self(batch["inputs"], dropout_rng=dropout_rng, **packing), {}

  def init_decoding(self, batch_size: int, max_len: int | None = None,
                    source: Any = None) -> Any:
    if source is not None:
      raise ValueError("a decoder-only language model takes no source; give a prompt")
    return self.init_cache(batch_size, max_len)


class HiddenStateDecoding:
  """Mixin: `decode` and `prefill` for attention models that provide
  `_decode_hidden(tokens, cache, lengths)` (final hidden states [B, T, D] for
  tokens after the cache's contents, and the new cache) and `_logits`."""

  def decode(self, tokens_BT: jax.Array, cache: dict) -> tuple[jax.Array, dict]:
    """Logits [B, T, V] for `tokens_BT` placed right after the cache's contents, and the
    new cache. A prompt can go in as one call; each generated token after it as a
    call with T=1.
    """
    x_BTD, cache = self._decode_hidden(tokens_BT, cache, None)
    return self._logits(x_BTD), cache

  def prefill(self, tokens_BT: jax.Array, lengths_B: jax.Array,
              cache: dict) -> tuple[jax.Array, dict]:
    """Appends each row's first `lengths_B` tokens (the rest is padding) to the cache.

    Returns the logits [B, V] after each row's last new token (meaningless
    for a row with length 0) and the cache, whose index is now one per row.
    Only those logits go through the output head, not the padding's.
    """
    x_BTD, cache = self._decode_hidden(tokens_BT, cache, lengths_B)
    last_B = jnp.maximum(lengths_B - 1, 0)
    x_B1D = jnp.take_along_axis(x_BTD, last_B[:, None, None], axis=1)
    return self._logits(x_B1D)[:, 0], cache
