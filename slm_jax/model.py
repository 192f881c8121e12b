"""LLaMA-style decoder in Flax NNX, and the paper's model presets.

Parameters are stored in `param_dtype` (fp32 master weights) and cast to `dtype` (bf16) where
they are used; RMSNorm statistics, RoPE and the logits are computed in fp32. Module and
parameter names follow HuggingFace's `LlamaForCausalLM` so weights convert one to one.
Every parameter carries logical axis names (see `slm_jax.sharding`), so a sharding scheme is a
table of rules rather than a change to this file.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from slm_jax import fp8 as fp8_lib
from slm_jax.attention import attend


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  num_layers: int
  num_heads: int
  head_dim: int
  ffn_dim: int
  num_kv_heads: int | None = None  # None: full multi-head attention
  vocab_size: int = 32_000
  rope_theta: float = 10_000.0
  norm_eps: float = 1e-5

  @property
  def d_model(self) -> int:
    return self.num_heads * self.head_dim

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads


def _paper_preset(num_layers: int, table_hidden: int) -> ModelConfig:
  # S. Ashkboos et al., "Computational Bottlenecks of Training Small-scale Large Language
  # Models" (arXiv:2410.19456) give layers, hidden size and parameter count per model, not heads
  # or FFN width. This reconstruction reproduces all four parameter counts exactly
  # (tests/test_model.py): heads = table hidden // 64 with head_dim 64 (so the 100M model is 832
  # wide, not 864), FFN width int(2.7 x table hidden), vocabulary 32,000, untied embeddings, no
  # biases. The paper's plotted points are in third_party/ashkboos24/.
  return ModelConfig(num_layers=num_layers, num_heads=table_hidden // 64, head_dim=64,
                     ffn_dim=int(2.7 * table_hidden))


PRESETS: dict[str, ModelConfig] = {
    "100m": _paper_preset(9, 864),
    "500m": _paper_preset(15, 1536),
    "1b": _paper_preset(19, 1920),
    "2b": _paper_preset(24, 2496),
    # For CPU runs and tests: small enough to compile and step in seconds on two cores.
    "tiny": ModelConfig(num_layers=2, num_heads=4, head_dim=16, ffn_dim=172, vocab_size=512),
}


_INIT = nnx.initializers.normal(0.02)


def _axes(*names: str) -> dict:
  # Logical axis names as plain Variable metadata, read by slm_jax.sharding. (Flax's own
  # `sharding_names` would make variable creation need a mesh in scope.)
  return {LOGICAL_AXES: names}


LOGICAL_AXES = "logical_axes"


def _linear(din, dout, names, *, dtype, param_dtype, rngs, **kw):
  return nnx.Linear(din, dout, use_bias=False, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=_INIT, kernel_metadata=_axes(*names), rngs=rngs, **kw)


def _rmsnorm(dim, cfg, *, dtype, param_dtype, rngs):
  return nnx.RMSNorm(dim, epsilon=cfg.norm_eps, dtype=dtype, param_dtype=param_dtype,
                     scale_metadata=_axes("norm"), rngs=rngs)


def _normalized(norm: nnx.RMSNorm, x: jax.Array) -> jax.Array:
  """`norm(x)` without its scale, which the caller folds into the next matmul's kernels."""
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + norm.epsilon)
  return y.astype(norm.dtype)


def _scaled(kernel: jax.Array, in_scale: jax.Array | None) -> jax.Array:
  """diag(in_scale) @ kernel: a kernel with the RMSNorm scale before it folded in.

  (x * s) @ W = x @ (s[:, None] * W), so the function and the parameters are unchanged, but the
  scale's gradient becomes a sum over the kernel's d x N entries instead of over every token:
  the latter is a column reduction of [tokens, d], which XLA's GPU emitter runs well below the
  memory bandwidth (benchmarks/PERF_NOTES.md section 8)."""
  return kernel if in_scale is None else in_scale[:, None] * kernel


def _fused_matmul(x: jax.Array, kernels: list[jax.Array], dtype,
                  matmul=jnp.matmul) -> list[jax.Array]:
  """x times each kernel, as one matmul against the kernels side by side.

  For the projections that share an input (q/k/v, gate/up): one GEMM with a wider output in
  the forward, and in the backward one input-gradient GEMM over the joined output gradients
  in place of one per kernel and the adds between them. The parameters stay separate, so
  the model, its checkpoints and HuggingFace conversion are unchanged; XLA's own merging of
  dots that share an operand stops at inputs of 16 MB, below a training batch."""
  joined = matmul(x.astype(dtype), jnp.concatenate([k.astype(dtype) for k in kernels], axis=1))
  splits = list(itertools.accumulate(k.shape[1] for k in kernels[:-1]))
  return jnp.split(joined, splits, axis=-1)


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary embedding in HuggingFace's rotate-half convention; x is [batch, seq, heads, dim]."""
  half = x.shape[-1] // 2
  inv_freq = 1.0 / theta ** (jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]  # [seq, half]
  cos = jnp.cos(angles)[None, :, None, :]
  sin = jnp.sin(angles)[None, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class Attention(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, attention: str, dtype, param_dtype, rngs,
               batch_sharding=None, fuse_projections: bool = False, fp8: str = "",
               fp8_amax_history: int = 1024):
    self.cfg = cfg
    self.attention = attention
    self.batch_sharding = batch_sharding
    self.dtype, self.fuse = dtype, fuse_projections
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    d, hd = cfg.d_model, cfg.head_dim
    self.q_proj = _linear(d, cfg.num_heads * hd, ("embed", "heads"), **kw)
    self.k_proj = _linear(d, cfg.kv_heads * hd, ("embed", "kv_heads"), **kw)
    self.v_proj = _linear(d, cfg.kv_heads * hd, ("embed", "kv_heads"), **kw)
    self.o_proj = _linear(cfg.num_heads * hd, d, ("heads", "embed"), **kw)
    # FP8 matmuls (slm_jax.fp8), one per GEMM: the fused q/k/v GEMM has one.
    self.fp8 = fp8_lib.dots(fp8, ("qkv", "o") if fuse_projections else ("q", "k", "v", "o"),
                            fp8_amax_history)

  def __call__(self, x: jax.Array, positions: jax.Array,
               in_scale: jax.Array | None = None) -> jax.Array:
    b, s, _ = x.shape
    cfg = self.cfg
    x = x.astype(self.dtype)  # as nnx.Linear would
    kernels = [_scaled(m.kernel[...], in_scale).astype(self.dtype)
               for m in (self.q_proj, self.k_proj, self.v_proj)]
    if self.fuse:
      q, k, v = _fused_matmul(x, kernels, self.dtype, functools.partial(self._matmul, "qkv"))
    else:
      q, k, v = [self._matmul(site, x, w) for site, w in zip("qkv", kernels)]
    q = q.reshape(b, s, cfg.num_heads, cfg.head_dim)
    k = k.reshape(b, s, cfg.kv_heads, cfg.head_dim)
    v = v.reshape(b, s, cfg.kv_heads, cfg.head_dim)
    q = rope(q, positions, cfg.rope_theta)
    k = rope(k, positions, cfg.rope_theta)
    with jax.named_scope("attention"):  # slm_jax.profile files these ops under attention
      o = attend(q, k, v, causal=True, impl=self.attention, batch_sharding=self.batch_sharding)
    o = o.reshape(b, s, cfg.num_heads * cfg.head_dim)
    if self.fp8 is None:
      return self.o_proj(o)
    return self._matmul("o", o.astype(self.dtype), self.o_proj.kernel[...].astype(self.dtype))

  def _matmul(self, site: str, x: jax.Array, w: jax.Array) -> jax.Array:
    return fp8_lib.matmul(self.fp8, site, x, w)


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x)).

  With `pad_multiple` > 1 the matmuls run at ffn_dim rounded up to that multiple: the weights
  are padded with zeros as they are cast for compute (zero gate/up columns give silu(0) * 0 = 0,
  zero down rows add nothing), so parameters, outputs and gradients are those of the unpadded
  model. The paper's widths (2332, 4147, 6739) are not multiples of 8, which costs the GEMMs
  far more than the padding does (benchmarks/PERF_NOTES.md section 1).
  """

  def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, rngs, pad_multiple: int = 1,
               fuse_projections: bool = False, fp8: str = "", fp8_amax_history: int = 1024):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.gate_proj = _linear(cfg.d_model, cfg.ffn_dim, ("embed", "mlp"), **kw)
    self.up_proj = _linear(cfg.d_model, cfg.ffn_dim, ("embed", "mlp"), **kw)
    self.down_proj = _linear(cfg.ffn_dim, cfg.d_model, ("mlp", "embed"), **kw)
    self.dtype = dtype
    self.pad = -cfg.ffn_dim % max(pad_multiple, 1)
    self.fuse = fuse_projections
    self.fp8 = fp8_lib.dots(fp8, ("gate_up", "down") if fuse_projections
                            else ("gate", "up", "down"), fp8_amax_history)

  def __call__(self, x: jax.Array, in_scale: jax.Array | None = None) -> jax.Array:
    x = x.astype(self.dtype)  # as nnx.Linear would; with no padding jnp.pad is the identity
    gate, up = (self._padded(_scaled(m.kernel[...], in_scale), 1)
                for m in (self.gate_proj, self.up_proj))
    down = self._padded(self.down_proj.kernel[...], 0)
    if self.fuse:
      g, u = _fused_matmul(x, [gate, up], self.dtype, functools.partial(self._matmul, "gate_up"))
    else:
      g, u = self._matmul("gate", x, gate), self._matmul("up", x, up)
    return self._matmul("down", jax.nn.silu(g) * u, down)

  def _matmul(self, site: str, x: jax.Array, w: jax.Array) -> jax.Array:
    return fp8_lib.matmul(self.fp8, site, x, w)

  def _padded(self, w: jax.Array, axis: int) -> jax.Array:
    widths = [(0, 0), (0, 0)]
    widths[axis] = (0, self.pad)
    return jnp.pad(w.astype(self.dtype), widths)


class Block(nnx.Module):

  def __init__(self, cfg: ModelConfig, *, attention: str, ffn_pad_multiple: int, dtype,
               param_dtype, rngs, batch_sharding=None, fuse_projections: bool = False,
               fold_norm_scale: bool = False, fp8: str = "", fp8_amax_history: int = 1024):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    fp8_kw = dict(fp8=fp8, fp8_amax_history=fp8_amax_history)
    self.fold_norm_scale = fold_norm_scale
    self.input_layernorm = _rmsnorm(cfg.d_model, cfg, **kw)
    self.self_attn = Attention(cfg, attention=attention, batch_sharding=batch_sharding,
                               fuse_projections=fuse_projections, **fp8_kw, **kw)
    self.post_attention_layernorm = _rmsnorm(cfg.d_model, cfg, **kw)
    self.mlp = MLP(cfg, pad_multiple=ffn_pad_multiple, fuse_projections=fuse_projections,
                   **fp8_kw, **kw)

  def __call__(self, x: jax.Array, positions: jax.Array) -> jax.Array:
    h, scale = self._norm(self.input_layernorm, x)
    x = x + self.self_attn(h, positions, in_scale=scale)
    h, scale = self._norm(self.post_attention_layernorm, x)
    return x + self.mlp(h, in_scale=scale)

  def _norm(self, norm: nnx.RMSNorm, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    if not self.fold_norm_scale:
      return norm(x), None
    return _normalized(norm, x), norm.scale[...]


def _head_dot(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
              out_sharding=None):
  """nnx.Linear's dot_general for the LM head when its backward runs on a bf16 logit gradient.

  The head multiplies bf16 operands into fp32 logits. Differentiated as is, the fp32 logit
  gradient meets a bf16 operand in both backward matmuls, and XLA runs them as fp32 (TF32)
  GEMMs with fp32 operands (benchmarks/PERF_NOTES.md section 2). Here
  the gradient is rounded to the operands' dtype first, as PyTorch autocast's bf16 logits do;
  the forward, the fp32 logits and the loss are unchanged."""
  del precision, preferred_element_type, out_sharding  # the head passes fp32 and no others
  assert dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ())), dimension_numbers
  return _head_matmul(lhs, rhs)


@jax.custom_vjp
def _head_matmul(x, w):
  return jnp.matmul(x, w, preferred_element_type=jnp.float32)


def _head_matmul_fwd(x, w):
  return _head_matmul(x, w), (x, w)


def _head_matmul_bwd(res, g):
  x, w = res
  g = g.astype(x.dtype)
  batch = tuple(range(x.ndim - 1))
  dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())))
  # The weight gradient sums over every token: accumulate and return it in fp32 before the
  # cast to w's dtype, as the fp32-gradient path does.
  dw = jax.lax.dot_general(x, g, ((batch, batch), ((), ())), preferred_element_type=jnp.float32)
  return dx, dw.astype(w.dtype)


_head_matmul.defvjp(_head_matmul_fwd, _head_matmul_bwd)


class Llama(nnx.Module):
  """Token ids [batch, seq] -> logits [batch, seq, vocab] in `logits_dtype` (fp32 by default).

  `logits_grad_dtype` is the dtype the logits' gradient enters the LM head's backward in:
  float32 differentiates the head as written; the compute dtype (bf16) runs both backward
  matmuls as bf16 GEMMs (_head_dot). `fuse_projections` runs q/k/v and gate/up as one matmul
  each (_fused_matmul). `fold_norm_scale` multiplies each block's RMSNorm scales into the
  kernels after them (_scaled); the final norm keeps its own. A bf16 `logits_dtype` makes the
  head a plain bf16 matmul, whose gradient is bf16 whatever `logits_grad_dtype` says.
  `fp8` ("current" or "delayed" scaling; "" = off) runs the q/k/v/o and gate/up/down
  projections as FP8 GEMMs (slm_jax.fp8); the embedding, norms, attention and LM head stay."""

  def __init__(self, cfg: ModelConfig, *, attention: str = "xla", ffn_pad_multiple: int = 1,
               dtype=jnp.bfloat16, param_dtype=jnp.float32, activation_sharding=None,
               logits_grad_dtype=jnp.float32, fuse_projections: bool = False,
               fold_norm_scale: bool = False, logits_dtype=jnp.float32, fp8: str = "",
               fp8_amax_history: int = 1024, rngs: nnx.Rngs):
    self.cfg = cfg
    # Where the residual stream [batch, seq, d_model] lives (split by batch). Pinning it keeps
    # XLA from following sharded weights into model-parallel activations under FSDP.
    self.activation_sharding = activation_sharding
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    # Looked up in the parameters' dtype and cast after: the lookup's gradient is a
    # scatter-add of every token's row into the table, and text repeats tokens (the most
    # frequent one hundreds of times a batch), so in bf16 it would both round each sum and
    # serialize on bf16 atomics (benchmarks/PERF_NOTES.md section 3).
    self.dtype = dtype
    self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.d_model, dtype=param_dtype,
                                  param_dtype=param_dtype,
                                  embedding_init=_INIT, embedding_metadata=_axes("vocab", "embed"),
                                  rngs=rngs)
    self.layers = nnx.List(
        [Block(cfg, attention=attention, ffn_pad_multiple=ffn_pad_multiple,
               batch_sharding=activation_sharding, fuse_projections=fuse_projections,
               fold_norm_scale=fold_norm_scale, fp8=fp8, fp8_amax_history=fp8_amax_history,
               **kw)
         for _ in range(cfg.num_layers)])
    self.norm = _rmsnorm(cfg.d_model, cfg, **kw)
    # bf16 operands, fp32 result: the loss sees fp32 logits at the cost of one bf16 matmul.
    head_dot = {} if jnp.dtype(logits_grad_dtype) == jnp.float32 else {"dot_general": _head_dot}
    head_out = ({} if jnp.dtype(logits_dtype) != jnp.float32
                else dict(preferred_element_type=jnp.float32, **head_dot))
    self.lm_head = _linear(cfg.d_model, cfg.vocab_size, ("embed", "vocab"), **kw, **head_out)

  def __call__(self, tokens: jax.Array, boundary: Callable | None = None) -> jax.Array:
    """`boundary(x, [(path, module), ...]) -> x`, if given, receives each group of parameters
    one layer before the layer that uses it, so that their gradients are complete while the
    backward still has a layer to run (slm_jax.explicit_grad): layer i + 1 with layer i's
    input, the final norm and head with the last layer's, and the embedding and layer 0 first,
    with no activation."""
    positions = jnp.arange(tokens.shape[1])
    n = len(self.layers)
    if boundary is not None:
      boundary(None, [(("embed_tokens",), self.embed_tokens), (("layers", "0"), self.layers[0])])
    x = self._pin(self.embed_tokens(tokens).astype(self.dtype))
    for i, layer in enumerate(self.layers):
      if boundary is not None:
        x = boundary(x, [(("layers", str(i + 1)), self.layers[i + 1])] if i + 1 < n
                     else [(("norm",), self.norm), (("lm_head",), self.lm_head)])
      x = self._pin(layer(x, positions))
    return self.lm_head(self.norm(x))

  def _pin(self, x: jax.Array) -> jax.Array:
    if self.activation_sharding is None:
      return x
    return jax.lax.with_sharding_constraint(x, self.activation_sharding)


def abstract_model(cfg: ModelConfig, attention: str = "xla") -> Llama:
  """The model with ShapeDtypeStructs in place of arrays: nothing is allocated."""
  return nnx.eval_shape(lambda: Llama(cfg, attention=attention, rngs=nnx.Rngs(0)))


def count_params(cfg: ModelConfig) -> int:
  state = nnx.state(abstract_model(cfg), nnx.Param)
  return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


def matmul_params(cfg: ModelConfig) -> int:
  """Parameters that take part in a matmul: everything but the embedding table and norms."""
  d, hd = cfg.d_model, cfg.head_dim
  attn = d * hd * (2 * cfg.num_heads + 2 * cfg.kv_heads)
  mlp = 3 * d * cfg.ffn_dim
  return cfg.num_layers * (attn + mlp) + d * cfg.vocab_size


def flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
  """Training FLOPs per token: 6 x matmul parameters + 6 x layers x d_model x seq_len.

  The second term is causal attention's QK^T and AV, forward and backward, with half the
  score matrix skipped; it is the same for every attention implementation.
  """
  return 6 * matmul_params(cfg) + 6 * cfg.num_layers * cfg.d_model * seq_len
