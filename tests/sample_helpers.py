"""Reference models for the sampling tests: ones whose logits the test chooses (a
language model and a conditional one), and a restored run decoded by plain full
forward passes (what the cached decoder must match)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxgen.models.interface import DecoderOnly
from jaxgen.sample.restore import restore


class RiggedLM(DecoderOnly, nnx.Module):
  """A "model" whose logits are `logits_V` at every position, whatever it reads:
  its favourite tokens are chosen by the test. It has the decoding interface
  (`init_decoding` from `init_cache`, `prefill`, `decode`) that `generate` uses."""

  def __init__(self, logits_V):
    self.logits_V = nnx.Param(jnp.asarray(logits_V, jnp.float32))

  def init_cache(self, batch_size, max_len=None):
    del batch_size, max_len
    return {"index": jnp.zeros((), jnp.int32)}

  def decode(self, tokens_BT, cache):
    b, t = tokens_BT.shape
    logits_V = self.logits_V[...]
    return (jnp.broadcast_to(logits_V, (b, t, logits_V.shape[0])),
            {"index": cache["index"] + t})

  @property
  def context_len(self):
    return None  # reads any length, like an LSTM

  def prefill(self, tokens_BT, lengths_B, cache):
    del lengths_B
    logits_BTV, cache = self.decode(tokens_BT, cache)
    return logits_BTV[:, -1], cache


class RiggedSeq2Seq(RiggedLM):
  """RiggedLM as a conditional model: it takes a source (and ignores it), as an
  encoder-decoder's decoding does, and its decoder reads `context` tokens."""

  conditional = True

  def __init__(self, logits_V, context):
    super().__init__(logits_V)
    self.context = context

  def init_decoding(self, batch_size, max_len=None, source=None):
    del source
    return self.init_cache(batch_size, max_len)

  @property
  def context_len(self):
    return self.context


class Forward:
  """The restored model of a workdir run by plain full forward passes."""

  def __init__(self, workdir, **which):
    graphdef, self.params, cfg, self.tokenizer = restore(str(workdir), **which)
    self.pack = cfg.data.mode == "pack"
    self.width = cfg.data.seq_len  # every call is right-padded to it: one compilation
    self._forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))

  def prompt_ids(self, prompt: str) -> list[int]:
    """As training saw documents: packed ones start with bos, others after an eos."""
    tok = self.tokenizer
    start = [tok.bos_id] if self.pack else ([] if prompt else [tok.eos_id])
    return start + ([int(i) for i in tok.encode(prompt)] if prompt else [])

  def logits(self, ids: list[int]) -> np.ndarray:
    """[len(ids), V] float64 logits, with the ids generation may never pick at -inf:
    pad and bos (no training target is either) and the vocabulary's padding."""
    assert len(ids) <= self.width
    row = np.zeros((1, self.width), np.int32)
    row[0, :len(ids)] = ids  # causal: the right padding is invisible to these positions
    logits = np.array(self._forward(self.params, row)[0, :len(ids)], np.float64)
    logits[:, self.tokenizer.vocab_size:] = -np.inf
    logits[:, [self.tokenizer.pad_id, self.tokenizer.bos_id]] = -np.inf
    return logits

  def greedy(self, prompt: str, num_tokens: int) -> tuple[str, list[int]]:
    """(text as `generate` returns it, the new ids) by argmax, one full forward a token."""
    ids = self.prompt_ids(prompt)
    new = []
    for _ in range(num_tokens):
      new.append(int(np.argmax(self.logits(ids + new)[-1])))
    ends = [i for i, t in enumerate(new) if t == self.tokenizer.eos_id]
    return prompt + self.tokenizer.decode(new[:ends[0]] if ends else new), new
