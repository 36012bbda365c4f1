"""jaxgen Transformer parameters <-> Hugging Face GPT-2 and Llama layouts.

Two families, chosen from the model config, never guessed from names:
- GPT-2 (`GPT2LMHeadModel`): learned positions, LayerNorm, tanh-GELU MLP. HF
  stores its projections as `Conv1D` weights [in, out] (jaxgen's own order) and
  q, k, v fused in `c_attn` [D, 3D]. jaxgen without biases maps exactly with
  zero biases; an untied head maps to `tie_word_embeddings=False`.
- Llama (`LlamaForCausalLM`): RoPE, RMSNorm, SwiGLU, grouped-query attention.
  HF stores `nn.Linear` weights [out, in]. jaxgen's RoPE is already the
  rotate-half form HF uses (the first half of each head's dims pairs with the
  second half, frequencies base^(-2i/H)), so q and k need no permutation; the
  permutation in HF's own converter is for Meta's interleaved-pair checkpoints.
  A test compares logits, which would catch a layout error.

Parameters travel as flat dicts of numpy arrays: jaxgen names like
`blocks.3.attn.wq` (one entry per layer, also for scanned models) and HF
state-dict names.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxgen.errors import UserError
from jaxgen.models.transformer import TransformerConfig

GPT2, LLAMA = "gpt2", "llama"
ARCHITECTURES = {GPT2: "GPT2LMHeadModel", LLAMA: "LlamaForCausalLM"}


def family(cfg: TransformerConfig) -> str:
  """GPT2 or LLAMA for `cfg`; a config that matches neither is refused in one line."""
  if cfg.position == "learned" and cfg.norm == "layernorm" and cfg.mlp == "gelu":
    problems = []
    if cfg.kv_heads != cfg.num_heads:
      problems.append(f"model.num_kv_heads={cfg.kv_heads} (GPT-2 has no grouped-query "
                      "attention)")
    if cfg.head_size * cfg.num_heads != cfg.embed_dim:
      problems.append(f"model.head_dim={cfg.head_size} with {cfg.num_heads} heads is not "
                      f"model.embed_dim={cfg.embed_dim} (GPT-2 derives its head size)")
    if problems:
      raise UserError("this model has no GPT-2 equivalent: " + "; ".join(problems))
    return GPT2
  if cfg.position == "rope" and cfg.norm == "rmsnorm" and cfg.mlp == "swiglu":
    return LLAMA
  raise UserError(
      f"model.position={cfg.position!r}, model.norm={cfg.norm!r}, model.mlp={cfg.mlp!r} "
      "match no Hugging Face layout jaxgen writes: GPT-2 is learned/layernorm/gelu, Llama "
      "is rope/rmsnorm/swiglu")


def hf_config(cfg: TransformerConfig, vocab_size: int, special: dict[str, int | None]) -> dict:
  """config.json for `cfg` with the vocabulary cut to `vocab_size`."""
  kind = family(cfg)
  common = {"architectures": [ARCHITECTURES[kind]], "vocab_size": vocab_size,
            "tie_word_embeddings": cfg.tie_embeddings,
            # transformers 4.x reads torch_dtype, 5.x dtype: the weights' own.
            "torch_dtype": dtype_name(cfg), "dtype": dtype_name(cfg), "use_cache": True,
            **special}
  if kind == GPT2:
    return {"model_type": "gpt2", "n_embd": cfg.embed_dim, "n_layer": cfg.num_layers,
            "n_head": cfg.num_heads, "n_inner": cfg.mlp_width, "n_positions": cfg.max_len,
            "n_ctx": cfg.max_len, "activation_function": "gelu_new",  # tanh GELU
            "layer_norm_epsilon": cfg.norm_eps,
            # jaxgen drops out the embeddings and each block's two outputs, as GPT-2's
            # embd_pdrop and resid_pdrop do; it has no attention-probability dropout.
            "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": 0.0,
            "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
            **common}
  return {"model_type": "llama", "hidden_size": cfg.embed_dim,
          "intermediate_size": cfg.mlp_width, "num_hidden_layers": cfg.num_layers,
          "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.kv_heads,
          "head_dim": cfg.head_size, "max_position_embeddings": cfg.max_len,
          "hidden_act": "silu", "rms_norm_eps": cfg.norm_eps, "attention_bias": cfg.use_bias,
          "mlp_bias": cfg.use_bias, "attention_dropout": 0.0, "pretraining_tp": 1,
          # transformers < 5 reads rope_theta (with rope_scaling None); 5.x reads
          # rope_parameters, and also moves a top-level rope_theta into it.
          "rope_theta": cfg.rope_base, "rope_scaling": None,
          "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_base},
          **common}


def to_hf(cfg: TransformerConfig, params: dict[str, np.ndarray],
          vocab_size: int) -> dict[str, np.ndarray]:
  """HF tensors from jaxgen's flat `params`, vocabulary rows cut to `vocab_size`.

  Every jaxgen parameter is used exactly once; a leftover is a bug, not a drop.
  """
  used: set[str] = set()

  def take(name):
    used.add(name)
    return np.asarray(params[name])

  def maybe(name, shape):  # a bias jaxgen does not have: exact zeros
    return take(name) if name in params else np.zeros(shape, np.float32)

  kind = family(cfg)
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.kv_heads, cfg.head_size, cfg.mlp_width
  out: dict[str, np.ndarray] = {}
  table = take("embed.table")[:vocab_size]
  if kind == GPT2:
    out["transformer.wte.weight"] = table
    out["transformer.wpe.weight"] = take("pos_embed")
    for i in range(cfg.num_layers):
      p, b = f"blocks.{i}.", f"transformer.h.{i}."
      for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
        out[b + theirs + ".weight"] = take(p + ours + ".scale")
        out[b + theirs + ".bias"] = maybe(p + ours + ".bias", (d,))
      out[b + "attn.c_attn.weight"] = np.concatenate(
          [take(p + f"attn.{w}").reshape(d, n * h) for w in ("wq", "wk", "wv")], axis=1)
      out[b + "attn.c_attn.bias"] = np.concatenate(
          [maybe(p + f"attn.{w}", (n, h)).reshape(-1) for w in ("bq", "bk", "bv")])
      out[b + "attn.c_proj.weight"] = take(p + "attn.wo").reshape(n * h, d)
      out[b + "attn.c_proj.bias"] = maybe(p + "attn.bo", (d,))
      out[b + "mlp.c_fc.weight"] = take(p + "mlp.wi")
      out[b + "mlp.c_fc.bias"] = maybe(p + "mlp.bi", (f,))
      out[b + "mlp.c_proj.weight"] = take(p + "mlp.wo")
      out[b + "mlp.c_proj.bias"] = maybe(p + "mlp.bo", (d,))
    out["transformer.ln_f.weight"] = take("final_norm.scale")
    out["transformer.ln_f.bias"] = maybe("final_norm.bias", (d,))
  else:
    out["model.embed_tokens.weight"] = table
    for i in range(cfg.num_layers):
      p, b = f"blocks.{i}.", f"model.layers.{i}."
      out[b + "input_layernorm.weight"] = take(p + "attn_norm.scale")
      out[b + "post_attention_layernorm.weight"] = take(p + "mlp_norm.scale")
      for w, proj, heads in (("q", "q_proj", n), ("k", "k_proj", k), ("v", "v_proj", k)):
        out[b + f"self_attn.{proj}.weight"] = take(p + f"attn.w{w}").reshape(d, heads * h).T
        if cfg.use_bias:
          out[b + f"self_attn.{proj}.bias"] = take(p + f"attn.b{w}").reshape(-1)
      out[b + "self_attn.o_proj.weight"] = take(p + "attn.wo").reshape(n * h, d).T
      # jaxgen: silu(x @ wg) * (x @ wi) @ wo; HF: down(silu(gate(x)) * up(x)).
      for ours, theirs in (("wg", "gate_proj"), ("wi", "up_proj"), ("wo", "down_proj")):
        out[b + f"mlp.{theirs}.weight"] = take(p + f"mlp.{ours}").T
      if cfg.use_bias:
        out[b + "self_attn.o_proj.bias"] = take(p + "attn.bo")
        out[b + "mlp.up_proj.bias"] = take(p + "mlp.bi")
        out[b + "mlp.down_proj.bias"] = take(p + "mlp.bo")
        out[b + "mlp.gate_proj.bias"] = np.zeros((f,), np.float32)  # jaxgen has none
    out["model.norm.weight"] = take("final_norm.scale")
  if not cfg.tie_embeddings:
    out["lm_head.weight"] = take("head")[:, :vocab_size].T
  left = sorted(set(params) - used)
  if left:
    raise UserError(f"the {ARCHITECTURES[kind]} layout has no place for {', '.join(left)}; "
                    "refusing to drop them")
  dtype = np.dtype(jnp.dtype(cfg.param_dtype))  # the zero biases too
  return {name: np.ascontiguousarray(x, dtype=dtype) for name, x in out.items()}


def dtype_name(cfg) -> str:
  """The parameters' dtype as transformers names it: float32, bfloat16 or float16."""
  return jnp.dtype(cfg.param_dtype).name


def model_overrides(hf: dict) -> tuple[str, dict]:
  """(family, jaxgen `model.*` values) for an HF config.json; unsupported ones refused."""
  model_type = hf.get("model_type")
  tied = bool(hf.get("tie_word_embeddings", True if model_type == "gpt2" else False))
  if model_type == "gpt2":
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
      raise UserError(f"config.json: activation_function={act!r} is not the tanh GELU "
                      "jaxgen's GPT-2 layout computes (gelu_new)")
    for key in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
      if hf.get(key):
        raise UserError(f"config.json: {key}=true has no jaxgen equivalent")
    if hf.get("scale_attn_weights", True) is False:
      raise UserError("config.json: scale_attn_weights=false has no jaxgen equivalent")
    d = hf["n_embd"]
    return GPT2, dict(num_layers=hf["n_layer"], num_heads=hf["n_head"], embed_dim=d,
                      num_kv_heads=0, head_dim=0, mlp_dim=hf.get("n_inner") or 4 * d,
                      max_len=hf["n_positions"], position="learned", norm="layernorm",
                      mlp="gelu", use_bias=True, tie_embeddings=tied,
                      norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)))
  if model_type == "llama":
    act = hf.get("hidden_act", "silu")
    if act != "silu":
      raise UserError(f"config.json: hidden_act={act!r}; jaxgen's SwiGLU uses silu")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
      raise UserError(f"config.json: RoPE scaling {rope_type!r} has no jaxgen equivalent; "
                      "only plain RoPE is supported")
    if hf.get("attention_bias", False) != hf.get("mlp_bias", False):
      raise UserError("config.json: attention_bias and mlp_bias differ; jaxgen's "
                      "model.use_bias sets both")
    heads = hf["num_attention_heads"]
    d = hf["hidden_size"]
    head_dim = hf.get("head_dim") or d // heads
    return LLAMA, dict(num_layers=hf["num_hidden_layers"], num_heads=heads, embed_dim=d,
                       num_kv_heads=hf.get("num_key_value_heads") or heads,
                       head_dim=head_dim, mlp_dim=hf["intermediate_size"],
                       max_len=hf.get("max_position_embeddings", 2048), position="rope",
                       rope_base=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
                       norm="rmsnorm", mlp="swiglu", use_bias=bool(hf.get("attention_bias")),
                       tie_embeddings=tied, norm_eps=float(hf.get("rms_norm_eps", 1e-6)))
  raise UserError(f"config.json: model_type={model_type!r}; jaxgen imports GPT-2 and Llama "
                  "checkpoints")


# Buffers some checkpoints carry that are not parameters (recomputed by both sides).
_BUFFERS = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")


def from_hf(kind: str, cfg: TransformerConfig, tensors: dict[str, np.ndarray]
            ) -> dict[str, np.ndarray]:
  """jaxgen's flat params from HF tensors (vocabulary not yet padded).

  Every HF tensor is used once or is a known buffer; anything else is refused.
  """
  used: set[str] = set()
  prefix = "transformer." if kind == GPT2 and any(
      n.startswith("transformer.") for n in tensors) else ""

  def take(name):
    name = prefix + name if kind == GPT2 and not name.startswith("lm_head") else name
    if name not in tensors:
      raise UserError(f"the checkpoint has no tensor {name}, which a {ARCHITECTURES[kind]} "
                      "with this config.json needs")
    used.add(name)
    return np.asarray(tensors[name])

  d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.kv_heads, cfg.head_size
  p: dict[str, np.ndarray] = {}
  if kind == GPT2:
    p["embed.table"] = take("wte.weight")
    p["pos_embed"] = take("wpe.weight")
    for i in range(cfg.num_layers):
      q, b = f"blocks.{i}.", f"h.{i}."
      for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
        p[q + ours + ".scale"] = take(b + theirs + ".weight")
        p[q + ours + ".bias"] = take(b + theirs + ".bias")
      w = take(b + "attn.c_attn.weight")
      bias = take(b + "attn.c_attn.bias")
      for j, name in enumerate("qkv"):
        p[q + f"attn.w{name}"] = w[:, j * d:(j + 1) * d].reshape(d, n, h)
        p[q + f"attn.b{name}"] = bias[j * d:(j + 1) * d].reshape(n, h)
      p[q + "attn.wo"] = take(b + "attn.c_proj.weight").reshape(n, h, d)
      p[q + "attn.bo"] = take(b + "attn.c_proj.bias")
      p[q + "mlp.wi"] = take(b + "mlp.c_fc.weight")
      p[q + "mlp.bi"] = take(b + "mlp.c_fc.bias")
      p[q + "mlp.wo"] = take(b + "mlp.c_proj.weight")
      p[q + "mlp.bo"] = take(b + "mlp.c_proj.bias")
    p["final_norm.scale"] = take("ln_f.weight")
    p["final_norm.bias"] = take("ln_f.bias")
  else:
    p["embed.table"] = take("model.embed_tokens.weight")
    for i in range(cfg.num_layers):
      q, b = f"blocks.{i}.", f"model.layers.{i}."
      p[q + "attn_norm.scale"] = take(b + "input_layernorm.weight")
      p[q + "mlp_norm.scale"] = take(b + "post_attention_layernorm.weight")
      for w, proj, heads in (("q", "q_proj", n), ("k", "k_proj", k), ("v", "v_proj", k)):
        p[q + f"attn.w{w}"] = take(b + f"self_attn.{proj}.weight").T.reshape(d, heads, h)
        if cfg.use_bias:
          p[q + f"attn.b{w}"] = take(b + f"self_attn.{proj}.bias").reshape(heads, h)
      p[q + "attn.wo"] = take(b + "self_attn.o_proj.weight").T.reshape(n, h, d)
      for ours, theirs in (("wg", "gate_proj"), ("wi", "up_proj"), ("wo", "down_proj")):
        p[q + f"mlp.{ours}"] = take(b + f"mlp.{theirs}.weight").T
      if cfg.use_bias:
        p[q + "attn.bo"] = take(b + "self_attn.o_proj.bias")
        p[q + "mlp.bi"] = take(b + "mlp.up_proj.bias")
        p[q + "mlp.bo"] = take(b + "mlp.down_proj.bias")
        if np.any(take(b + "mlp.gate_proj.bias")):
          raise UserError(f"{b}mlp.gate_proj.bias is not zero; jaxgen's SwiGLU has no gate "
                          "bias, so this checkpoint cannot be imported exactly")
    p["final_norm.scale"] = take("model.norm.weight")
  if not cfg.tie_embeddings:
    p["head"] = take("lm_head.weight").T
  elif "lm_head.weight" in tensors:  # some checkpoints store the tied copy too
    if not np.array_equal(tensors["lm_head.weight"], p["embed.table"]):
      raise UserError("config.json says tie_word_embeddings but lm_head.weight differs from "
                      "the embedding; the checkpoint is inconsistent")
    used.add("lm_head.weight")
  left = sorted(n for n in set(tensors) - used if not n.endswith(_BUFFERS))
  if left:
    shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
    raise UserError(f"the checkpoint has tensors a {ARCHITECTURES[kind]} of this config does "
                    f"not use ({shown}); refusing to drop them")
  return {name: np.ascontiguousarray(x) for name, x in p.items()}
