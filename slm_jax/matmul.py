"""x @ w whose weight gradient can be computed as a batched GEMM over token chunks.

A projection's weight gradient, x^T g, contracts over every token of the step (65,536 at batch
64) into an output as small as the weight. A GEMM's parallelism is its output tiles, and at the
paper's widths a d x d output is one partial wave on an H200's 132 SMs, so those GEMMs run at
86-94% of the rate of the step's other GEMMs (benchmarks/PERF_NOTES.md section 11). Splitting
the tokens into `chunks` gives the GEMM `chunks` times the tiles; the partial products are
summed in fp32, which costs one extra write and read of `chunks` fp32 copies of the weight.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def weight_grad(x: jax.Array, g: jax.Array, chunks: int, dtype=None) -> jax.Array:
  """x^T g over every leading axis of x [..., m] and g [..., n]: [m, n] in `dtype` (g's).

  With chunks > 1 the tokens are split into `chunks` equal runs along the first axis whose
  size they divide (so a batch axis splits without moving data), each run's product is
  accumulated in fp32, and the runs are summed in fp32 before the one rounding to `dtype`."""
  dtype = dtype or g.dtype
  lead = x.shape[:-1]
  if chunks <= 1:
    axes = tuple(range(len(lead)))
    return jax.lax.dot_general(x, g, ((axes, axes), ((), ()))).astype(dtype)
  tokens = x.size // x.shape[-1]
  if tokens % chunks:
    raise ValueError(f"weight_grad_chunks={chunks} must divide the {tokens} tokens a step "
                     "multiplies")
  xs = x.reshape(chunks, tokens // chunks, x.shape[-1])
  gs = g.reshape(chunks, tokens // chunks, g.shape[-1])
  parts = jax.lax.dot_general(xs, gs, (((1,), (1,)), ((0,), (0,))),
                              preferred_element_type=jnp.float32)
  return parts.sum(axis=0).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def matmul(x: jax.Array, w: jax.Array, weight_grad_chunks: int = 1) -> jax.Array:
  """x [..., m] @ w [m, n], differentiated with `weight_grad` for w's gradient."""
  return x @ w


def _matmul_fwd(x, w, weight_grad_chunks):
  return x @ w, (x, w)


def _matmul_bwd(weight_grad_chunks, res, g):
  x, w = res
  dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ()))).astype(x.dtype)
  return dx, weight_grad(x, g, weight_grad_chunks, w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)
