"""Our own flash attention in Pallas (Triton lowering on NVIDIA GPUs), forward and backward.

FlashAttention-2: the forward walks key/value tiles with an online softmax and saves the
base-2 logsumexp of every query row (fp32); the backward is three kernels, a preprocess
delta = rowsum(dO * O), a dK/dV kernel (grid over key blocks, loop over query blocks) and a dQ
kernel (grid over query blocks, loop over key blocks), so no two programs write one tile and no
atomics are needed. Causal attention skips every tile above the diagonal (the forward and dQ
loops stop at it, the dK/dV loop starts at it) and masks only the tiles that cross it. Grouped
KV heads are read through the BlockSpec index maps (no repeat of K and V); the dK/dV kernel
sums over a KV head's query group in registers.

Arrays stay in the model's [batch, seq, heads, head_dim] layout: BlockSpecs squeeze the batch
and head dims, so no transpose is needed. Sequences are padded to a multiple of the largest tile.
Without a GPU the same kernels run in Pallas' interpreter, which is how the CPU tests check them.
Tiles and launch parameters per GPU and shape come from `pallas_tuning`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from slm_jax.attention import pallas_tuning
from slm_jax.attention.pallas_tuning import KernelConfig, Launch
from slm_jax.errors import UserError

# tl.dot needs every side >= 16 and Triton tensors power-of-two sizes; 256 would not fit the
# accumulators in registers at useful tile sizes.
HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (jnp.bfloat16, jnp.float16, jnp.float32)
# Finite, so a row whose tile is all masked gives exp2(MASK - MASK) = 1 and no NaN; every row
# sees a visible key in its first tile, whose running max then scales such entries to zero.
_MASK = -0.7 * float(np.finfo(np.float32).max)
_LOG2E = math.log2(math.e)


def check(*, dtype, head_dim, platform) -> None:
  if platform not in ("gpu", "cpu"):
    raise UserError(f"attention='pallas' runs on NVIDIA GPUs (and interpreted on CPUs for "
                    f"tests), not on {platform!r}; use --config.attention=xla")
  if jnp.dtype(dtype) not in DTYPES:
    raise UserError(f"attention='pallas' takes bf16, fp16 or fp32 inputs, got "
                    f"{jnp.dtype(dtype).name}; set --config.compute_dtype=bfloat16")
  if head_dim not in HEAD_DIMS:
    raise UserError(f"attention='pallas' needs head_dim in {HEAD_DIMS}, got {head_dim}; use "
                    "attention='cudnn' or 'xla' for this model")


@dataclasses.dataclass(frozen=True)
class _Spec:
  """What the kernels need to know beyond the (padded) arrays; static under jit."""
  causal: bool
  q_len: int  # queries and keys before padding
  kv_len: int
  config: KernelConfig
  interpret: bool


def attend(q, k, v, *, causal: bool, config: KernelConfig | None = None,
           interpret: bool | None = None):
  """Flash attention of q [b, s, h, d] over k, v [b, s_kv, h_kv, d]; `config` defaults to the
  tuning table's entry for this GPU, `interpret` to "no GPU"."""
  sq, sk, d = q.shape[1], k.shape[1], q.shape[3]
  if causal and sq != sk:
    raise UserError(f"attention='pallas' with causal=True needs as many queries as keys, got "
                    f"{sq} and {sk}; use attention='xla' for decoding-style attention")
  if config is None:
    config = pallas_tuning.lookup(jax.devices()[0].device_kind, d, sk)
  config = config.fit(sq, sk, jnp.dtype(q.dtype).itemsize)
  if interpret is None:
    interpret = jax.default_backend() != "gpu"
  spec = _Spec(causal=causal, q_len=sq, kv_len=sk, config=config, interpret=interpret)
  align = max(max(l.block_q, l.block_k) for l in (config.fwd, config.dkdv, config.dq))
  out = _flash(_pad_seq(q, align), _pad_seq(k, align), _pad_seq(v, align), spec)
  return out[:, :sq]


def _pad_seq(x, multiple):
  # Zero rows: a padded key is masked (or, under causal, never seen by a real query) and a
  # padded query's output and gradient are sliced off, its dO being zero.
  extra = -x.shape[1] % multiple
  return jnp.pad(x, ((0, 0), (0, extra), (0, 0), (0, 0))) if extra else x


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _flash(q, k, v, spec):
  return _forward(q, k, v, spec)[0]


def _flash_fwd(q, k, v, spec):
  out, lse = _forward(q, k, v, spec)
  return out, (q, k, v, out, lse)


def _flash_bwd(spec, residuals, do):
  q, k, v, out, lse = residuals
  delta = _delta(out, do, spec)
  dk, dv = _dkdv(q, k, v, do, lse, delta, spec)
  return _dq(q, k, v, do, lse, delta, spec), dk, dv


_flash.defvjp(_flash_fwd, _flash_bwd)


# --- pieces shared by the kernels -------------------------------------------------------------

def _dot(a, b, *, trans_b=False):
  """a @ b (or a @ b.T) of 2-D tiles, accumulated in fp32."""
  # fp32 inputs would get TF32 in Triton by default; tests compare fp32 tightly.
  precision = lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
  return lax.dot_general(a, b, (((1,), (1 if trans_b else 0,)), ((), ())),
                         precision=precision, preferred_element_type=jnp.float32)


def _loops(phases, body, carry):
  """Runs body(i, carry, masked) over each (start, stop, masked) phase, in order."""
  for start, stop, masked in phases:
    if isinstance(start, int) and isinstance(stop, int) and start >= stop:
      continue  # a static empty phase (no padded tile, say): emit no loop at all
    carry = lax.fori_loop(start, stop, functools.partial(body, masked=masked), carry)
  return carry


def _cdiv(a, b):
  # lax.div, here and in the index maps: the operands are never negative, so C-style division
  # is exact, and it is one instruction where `//` adds floor-division sign fix-ups.
  return lax.div(a + b - 1, b)


def _kv_phases(qs, block_q, block_k, causal, kv_len):
  """Key tiles a query tile starting at row `qs` visits: unmasked, then masked."""
  if causal:
    # Real queries never reach padded keys, so the diagonal alone needs masking.
    stop = _cdiv(qs + block_q, block_k)  # the diagonal's last tile
    first_masked = jnp.minimum(lax.div(qs, block_k), stop)  # tiles wholly left of it are free
  else:
    # Tiles wholly of padding are skipped; the one holding the last real key is masked.
    stop, first_masked = -(-kv_len // block_k), kv_len // block_k
  return ((0, first_masked, False), (first_masked, stop, True))


def _q_phases(ks, block_q, block_k, causal, q_len):
  """Query tiles a key tile starting at column `ks` visits: masked, then unmasked."""
  n_q = -(-q_len // block_q)  # tiles wholly of padded queries have dO = 0: skipped
  if not causal:
    # Padded keys need no mask here: each key's dK/dV row depends on its own scores only, and
    # padded rows are sliced off.
    return ((0, n_q, False),)
  start = lax.div(ks, block_q)  # query tiles wholly above the diagonal see none of these keys
  first_free = jnp.minimum(_cdiv(ks + block_k, block_q), n_q)
  return ((start, first_free, True), (first_free, n_q, False))


def _scores(q, k, qs, ks, *, scale, causal, kv_len, masked):
  """Scaled scores of a [block_q, d] query and [block_k, d] key tile, in base 2, masked."""
  s = _dot(q, k, trans_b=True) * (scale * _LOG2E)
  if masked:
    q_pos = qs + jnp.arange(q.shape[0])[:, None]
    k_pos = ks + jnp.arange(k.shape[0])[None, :]
    s = jnp.where(q_pos >= k_pos if causal else k_pos < kv_len, s, _MASK)
  return s


def _call(kernel, *, name, launch: Launch, spec: _Spec, grid, in_specs, out_specs, out_shape):
  return pl.pallas_call(
      kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
      compiler_params=plgpu.CompilerParams(num_warps=launch.num_warps,
                                           num_stages=launch.num_stages),
      interpret=spec.interpret, name=name)


def _q_block_order(n_q, causal):
  # Causal query tiles near the end do the most work: launching them first keeps the last
  # wave of programs short.
  return (lambda i: n_q - 1 - i) if causal else (lambda i: i)


def _query_grid_specs(q, k, block_q, order):
  """Grid (query tile, batch, head) and the BlockSpecs of the forward and dQ kernels."""
  b, lq, h, d = q.shape
  lk, group = k.shape[1], h // k.shape[2]
  tile = pl.BlockSpec((None, block_q, None, d), lambda i, bi, hi: (bi, order(i), hi, 0))
  rows = pl.BlockSpec((None, None, block_q), lambda i, bi, hi: (bi, hi, order(i)))
  # The whole key sequence of the query head's KV head; the kernel walks it tile by tile.
  keys = pl.BlockSpec((None, lk, None, d), lambda i, bi, hi: (bi, 0, lax.div(hi, group), 0))
  return (lq // block_q, b, h), tile, rows, keys


# --- forward ----------------------------------------------------------------------------------

def _forward_kernel(q_ref, k_ref, v_ref, o_ref, lse_ref, *, order, block_k, causal, kv_len):
  block_q, d = q_ref.shape
  qs = order(pl.program_id(0)) * block_q
  q = q_ref[...]

  def body(j, carry, masked):
    acc, m, l = carry
    ks = j * block_k
    s = _scores(q, k_ref[pl.ds(ks, block_k), :], qs, ks, scale=d ** -0.5, causal=causal,
                kv_len=kv_len, masked=masked)
    m_new = jnp.maximum(m, s.max(axis=1))
    alpha = jnp.exp2(m - m_new)
    p = jnp.exp2(s - m_new[:, None])
    v = v_ref[pl.ds(ks, block_k), :]
    return alpha[:, None] * acc + _dot(p.astype(v.dtype), v), m_new, alpha * l + p.sum(axis=1)

  carry = (jnp.zeros((block_q, d), jnp.float32), jnp.full((block_q,), -jnp.inf, jnp.float32),
           jnp.zeros((block_q,), jnp.float32))
  phases = _kv_phases(qs, block_q, block_k, causal, kv_len)
  acc, m, l = _loops(phases, body, carry)
  o_ref[...] = (acc / l[:, None]).astype(o_ref.dtype)
  lse_ref[...] = m + jnp.log2(l)


def _forward(q, k, v, spec):
  """Output [b, s, h, d] and the base-2 logsumexp of each query row, [b, h, s] fp32."""
  launch = spec.config.fwd
  order = _q_block_order(q.shape[1] // launch.block_q, spec.causal)
  grid, tile, rows, keys = _query_grid_specs(q, k, launch.block_q, order)
  kernel = functools.partial(_forward_kernel, order=order, block_k=launch.block_k,
                             causal=spec.causal, kv_len=spec.kv_len)
  b, lq, h, _ = q.shape
  return _call(kernel, name="slm_flash_fwd", launch=launch, spec=spec, grid=grid,
               in_specs=[tile, keys, keys], out_specs=[tile, rows],
               out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                          jax.ShapeDtypeStruct((b, h, lq), jnp.float32)])(q, k, v)


# --- backward ---------------------------------------------------------------------------------

def _delta_kernel(o_ref, do_ref, delta_ref):
  delta_ref[...] = jnp.sum(o_ref[...].astype(jnp.float32) * do_ref[...].astype(jnp.float32),
                           axis=1)


def _delta(out, do, spec):
  """rowsum(dO * O) per query row, [b, h, s] fp32: the softmax backward's correction term."""
  launch = spec.config.fwd
  # `out` stands in for the keys, whose BlockSpec this kernel does not use.
  grid, tile, rows, _ = _query_grid_specs(out, out, launch.block_q, lambda i: i)
  return _call(_delta_kernel, name="slm_flash_delta", launch=launch, spec=spec, grid=grid,
               in_specs=[tile, tile], out_specs=rows,
               out_shape=jax.ShapeDtypeStruct(
                   (out.shape[0], out.shape[2], out.shape[1]), jnp.float32))(out, do)


def _head_tile(ref, start, size, g):
  # A [s, d] block holds one query head, a [s, group, d] block a KV head's whole group.
  return ref[pl.ds(start, size), :] if ref.ndim == 2 else ref[pl.ds(start, size), g, :]


def _head_rows(ref, start, size, g):
  return ref[pl.ds(start, size)] if ref.ndim == 1 else ref[g, pl.ds(start, size)]


def _dkdv_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *, block_q,
                 group, causal, q_len):
  block_k, d = k_ref.shape
  ks = pl.program_id(0) * block_k
  k, v = k_ref[...], v_ref[...]
  k_pos = ks + jnp.arange(block_k)[:, None]
  scale = d ** -0.5

  def body(i, carry, masked):
    dk, dv = carry
    qs = i * block_q
    for g in range(group):  # unrolled: a static head index keeps every load a plain 2-D tile
      q, do = _head_tile(q_ref, qs, block_q, g), _head_tile(do_ref, qs, block_q, g)
      # Transposed scores [block_k, block_q], so dK and dV come out of plain tile products.
      s_t = _dot(k, q, trans_b=True) * (scale * _LOG2E)
      if masked:
        s_t = jnp.where(qs + jnp.arange(block_q)[None, :] >= k_pos, s_t, _MASK)
      p_t = jnp.exp2(s_t - _head_rows(lse_ref, qs, block_q, g)[None, :])
      dv = dv + _dot(p_t.astype(do.dtype), do)
      ds_t = p_t * (_dot(v, do, trans_b=True) - _head_rows(delta_ref, qs, block_q, g)[None, :])
      dk = dk + _dot(ds_t.astype(q.dtype), q)
    return dk, dv

  phases = _q_phases(ks, block_q, block_k, causal, q_len)
  zeros = jnp.zeros((block_k, d), jnp.float32)
  dk, dv = _loops(phases, body, (zeros, zeros))
  dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _dkdv(q, k, v, do, lse, delta, spec):
  launch = spec.config.dkdv
  b, lq, h, d = q.shape
  lk, hkv = k.shape[1], k.shape[2]
  group = h // hkv
  heads = None if group == 1 else group  # squeezed for plain multi-head attention
  queries = pl.BlockSpec((None, lq, heads, d), lambda j, bi, hk: (bi, 0, hk, 0))
  rows = pl.BlockSpec((None, heads, lq), lambda j, bi, hk: (bi, hk, 0))
  tile = pl.BlockSpec((None, launch.block_k, None, d), lambda j, bi, hk: (bi, j, hk, 0))
  kernel = functools.partial(_dkdv_kernel, block_q=launch.block_q, group=group,
                             causal=spec.causal, q_len=spec.q_len)
  return _call(kernel, name="slm_flash_dkdv", launch=launch, spec=spec,
               grid=(lk // launch.block_k, b, hkv),
               in_specs=[queries, tile, tile, queries, rows, rows], out_specs=[tile, tile],
               out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype),
                          jax.ShapeDtypeStruct(v.shape, v.dtype)])(q, k, v, do, lse, delta)


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, *, order, block_k,
               causal, kv_len):
  block_q, d = q_ref.shape
  qs = order(pl.program_id(0)) * block_q
  q, do = q_ref[...], do_ref[...]
  lse, delta = lse_ref[...][:, None], delta_ref[...][:, None]

  def body(j, dq, masked):
    ks = j * block_k
    k = k_ref[pl.ds(ks, block_k), :]
    s = _scores(q, k, qs, ks, scale=d ** -0.5, causal=causal, kv_len=kv_len, masked=masked)
    p = jnp.exp2(s - lse)
    ds = p * (_dot(do, v_ref[pl.ds(ks, block_k), :], trans_b=True) - delta)
    return dq + _dot(ds.astype(k.dtype), k)

  phases = _kv_phases(qs, block_q, block_k, causal, kv_len)
  dq = _loops(phases, body, jnp.zeros((block_q, d), jnp.float32))
  dq_ref[...] = (dq * d ** -0.5).astype(dq_ref.dtype)


def _dq(q, k, v, do, lse, delta, spec):
  launch = spec.config.dq
  order = _q_block_order(q.shape[1] // launch.block_q, spec.causal)
  grid, tile, rows, keys = _query_grid_specs(q, k, launch.block_q, order)
  kernel = functools.partial(_dq_kernel, order=order, block_k=launch.block_k,
                             causal=spec.causal, kv_len=spec.kv_len)
  return _call(kernel, name="slm_flash_dq", launch=launch, spec=spec, grid=grid,
               in_specs=[tile, keys, keys, tile, rows, rows], out_specs=tile,
               out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype))(q, k, v, do, lse, delta)


def kernel_fns(*, causal: bool, config: KernelConfig, q_len: int, kv_len: int,
               interpret: bool | None = None) -> dict:
  """Each kernel alone, jitted, for arrays whose lengths are multiples of every tile:
  fwd(q, k, v) -> (out, lse), delta(out, do), dkdv(q, k, v, do, lse, delta) -> (dk, dv) and
  dq(q, k, v, do, lse, delta). `tune` times one kernel's candidate tiles with these."""
  if interpret is None:
    interpret = jax.default_backend() != "gpu"
  spec = _Spec(causal=causal, q_len=q_len, kv_len=kv_len, config=config, interpret=interpret)
  return {name: jax.jit(functools.partial(fn, spec=spec))
          for name, fn in (("fwd", _forward), ("delta", _delta), ("dkdv", _dkdv), ("dq", _dq))}
