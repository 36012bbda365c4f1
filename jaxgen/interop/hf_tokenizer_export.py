"""jaxgen tokenizers as Hugging Face `tokenizers` files (tokenizer.json + tokenizer_config.json).

- char: a BPE model with no merges (each character is one token, ids as
  jaxgen's), a Fuse decoder, pad/bos/eos as special tokens.
- byte: GPT-2's byte-to-character map, a BPE with no merges over the 256
  byte characters (ids b + 3, ByT5's layout), ByteLevel decoding.
- sentencepiece (unigram, as `jaxgen tokenizer train` writes by default): a
  Unigram model with the same pieces, scores and byte fallback, spaces as '▁'.
  SentencePiece BPE models are not converted (their merges would have to be
  reconstructed): `tokenizer_files` says so in one line.
- hf (an imported tokenizer): its own tokenizer.json.
Encoding and decoding match jaxgen's on the tests' text; a character outside a
char vocabulary, which jaxgen refuses, is dropped by HF's BPE.
"""

from __future__ import annotations

import json
from typing import Any

_SPECIAL_NAMES = {"char": ("<pad>", "<bos>", "<eos>"), "byte": ("<pad>", "<s>", "</s>")}


class CannotExport(Exception):
  """The reason a tokenizer has no HF form (one line)."""


def tokenizer_files(tokenizer: Any) -> dict[str, str]:
  """{file name: text} for the HF tokenizer files; raises CannotExport."""
  kind = getattr(tokenizer, "kind", None)
  if kind == "hf":
    tok_json = tokenizer.tokenizer_json
  elif kind == "char":
    tok_json = _char(tokenizer)
  elif kind == "byte":
    tok_json = _byte(tokenizer)
  elif kind == "sentencepiece":
    tok_json = _sentencepiece(tokenizer)
  else:
    raise CannotExport(f"a {type(tokenizer).__name__} has no Hugging Face form")
  from tokenizers import Tokenizer
  tok = Tokenizer.from_str(tok_json)
  name = tok.id_to_token
  config = {"tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": name(tokenizer.bos_id), "eos_token": name(tokenizer.eos_id),
            "pad_token": name(tokenizer.pad_id),
            # jaxgen's encode adds no special tokens; prompts start as in training.
            "add_bos_token": False, "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1 << 30}
  return {"tokenizer.json": tok_json, "tokenizer_config.json": json.dumps(config, indent=2)}


def _with_specials(tok, specials: list[tuple[int, str]]):
  from tokenizers import AddedToken
  tok.add_special_tokens([AddedToken(content, special=True, normalized=False)
                          for _, content in sorted(specials)])
  for i, content in specials:
    if tok.token_to_id(content) != i:
      raise CannotExport(f"special token {content} did not land on id {i}")
  return tok.to_str()


def _char(tokenizer) -> str:
  from tokenizers import Tokenizer, decoders, models
  pad, bos, eos = _SPECIAL_NAMES["char"]
  specials = [(tokenizer.pad_id, pad), (tokenizer.bos_id, bos), (tokenizer.eos_id, eos)]
  vocab = {c: i for i, c in enumerate(tokenizer.chars)} | {t: i for i, t in specials}
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tok.decoder = decoders.Fuse()
  return _with_specials(tok, specials)


def _byte(tokenizer) -> str:
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  byte_chars = _bytes_to_unicode()
  pad, bos, eos = _SPECIAL_NAMES["byte"]
  specials = [(tokenizer.pad_id, pad), (tokenizer.bos_id, bos), (tokenizer.eos_id, eos)]
  vocab = {byte_chars[b]: b + 3 for b in range(256)} | {t: i for i, t in specials}
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tok.decoder = decoders.ByteLevel()
  return _with_specials(tok, specials)


def _sentencepiece(tokenizer) -> str:
  from sentencepiece import sentencepiece_model_pb2 as pb
  from tokenizers import Regex, Tokenizer, decoders, models, normalizers
  proto = pb.ModelProto()
  proto.ParseFromString(tokenizer.model_proto)
  if proto.trainer_spec.model_type != pb.TrainerSpec.UNIGRAM:
    raise CannotExport("SentencePiece BPE models are not converted to tokenizer.json "
                       "(train with model_type='unigram' to export the tokenizer)")
  ns = proto.normalizer_spec
  if ns.name not in ("identity", "") or ns.add_dummy_prefix or ns.remove_extra_whitespaces:
    raise CannotExport(f"SentencePiece normalization {ns.name!r} (dummy prefix "
                       f"{ns.add_dummy_prefix}) is not converted; jaxgen-trained models use "
                       "identity")
  vocab = [(p.piece, p.score) for p in proto.pieces]
  tok = Tokenizer(models.Unigram(vocab, unk_id=tokenizer.unk_id,
                                 byte_fallback=proto.trainer_spec.byte_fallback))
  tok.normalizer = normalizers.Replace(Regex(" "), "\u2581")
  tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                   decoders.Fuse()])
  control = [(i, p.piece) for i, p in enumerate(proto.pieces)
             if p.type in (pb.ModelProto.SentencePiece.CONTROL,)]
  return _with_specials(tok, control)


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible byte -> printable character map (what ByteLevel uses)."""
  bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1)))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))
