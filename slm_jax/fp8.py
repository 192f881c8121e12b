"""FP8 matmuls for the projections (`--config.fp8`): e4m3 weights and activations, e5m2
gradients, one scale per tensor.

Each matmul quantizes its operands to fp8 (x / scale, clipped to the format's range), multiplies
the fp8 values with fp32 accumulation, and multiplies the product by the two scales. On a GPU of
compute capability 8.9 or later (Ada, Hopper) XLA runs such a dot as a cuBLASLt FP8 GEMM, at
twice the bf16 tensor-core rate on Hopper; a CPU computes the same numbers from the fp8 values
in higher precision (slowly: for tests). The forward uses fast accumulation
(`Precision.DEFAULT`) and the two backward GEMMs full accumulation (`HIGHEST`), as Transformer
Engine's recipe and flax's ops do: the gradients sum over every token.

Two ways to pick the scales (`--config.fp8_scaling`):
- `current`: from this tensor's own amax (scale = amax / fp8 max), stateless. No value is ever
  clipped; it costs a read of each operand for its amax before the GEMM.
- `delayed`: from the largest amax of the previous `fp8_amax_history` steps, kept in the train
  state (`Fp8State` variables, replicated on every device). This is flax's own delayed-scaling
  dot (flax.linen.fp8_ops), whose custom VJP returns each variable's next value as its
  "gradient" (flax's overwrite-with-gradient convention): the step writes those back instead
  of handing them to the optimizer. A tensor whose amax jumps above its history's is clipped
  for that step; the first step quantizes with scale 1 (an empty history).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.linen import fp8_ops

from slm_jax.errors import UserError

E4M3 = jnp.float8_e4m3fn  # weights and activations: 3 mantissa bits, up to 448
E5M2 = jnp.float8_e5m2    # gradients: 2 mantissa bits, up to 57344
SCALINGS = ("current", "delayed")
# The oldest GPUs with FP8 tensor cores: Ada (8.9) and Hopper (9.0).
MIN_COMPUTE_CAPABILITY = (8, 9)


class Fp8State(nnx.Variable):
  """Delayed scaling's scales and amax histories: not trained, decayed or clipped; the step
  replaces each with the value its custom VJP returns as its gradient."""


def check_device(device) -> None:
  """Raises UserError where FP8 GEMMs cannot run. A CPU is let through: XLA computes the same
  numbers there from the fp8 values (tests), at no speed worth measuring."""
  if device.platform == "cpu":
    return
  cc = getattr(device, "compute_capability", None)
  try:
    ok = device.platform == "gpu" and tuple(int(p) for p in cc.split(".")) >= (8, 9)
  except (AttributeError, ValueError):
    ok = False
  if not ok:
    raise UserError(
        f"--config.fp8=true needs FP8 tensor cores (an NVIDIA GPU of compute capability "
        f">= 8.9: Ada, Hopper or later), but {device.device_kind} ({device.platform}, compute "
        f"capability {cc or 'n/a'}) has none; run with --config.fp8=false")


def _scale(x: jax.Array, dtype) -> jax.Array:
  """amax(x) / the format's max, so that x / scale spans its range; 1 for an all-zero or
  non-finite x (flax's rule for delayed scales, applied to this tensor's own amax)."""
  amax = jnp.max(jnp.abs(x)).astype(jnp.float32)
  return fp8_ops.compute_scale(amax, jnp.float32(1.0), fp8_ops.get_fp8_max(dtype, jnp.float32))


def _quantize(x: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
  scale = _scale(x, dtype)
  return fp8_ops.quantize(x, dtype, scale, x.dtype), scale


def _scaled_dot(a, b, dims, scale, dtype, precision):
  """fp8 a . fp8 b, accumulated in fp32, written in `dtype` and multiplied by `scale`."""
  out = jax.lax.dot_general(a, b, dims, precision=precision, preferred_element_type=dtype)
  return fp8_ops.dequantize(out, dtype, scale)


@jax.custom_vjp
def current_dot(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [..., K] @ w [K, N] as FP8 GEMMs with current scaling, in x's dtype (w's too)."""
  return _current_fwd(x, w)[0]


def _current_fwd(x, w):
  qx, sx = _quantize(x, E4M3)
  qw, sw = _quantize(w, E4M3)
  y = _scaled_dot(qx, qw, (((x.ndim - 1,), (0,)), ((), ())), sx * sw, x.dtype,
                  jax.lax.Precision.DEFAULT)
  # The fp8 operands are what the backward reads: half the bytes of bf16 residuals.
  return y, (qx, sx, qw, sw)


def _current_bwd(res, g):
  qx, sx, qw, sw = res
  qg, sg = _quantize(g, E5M2)
  tokens = tuple(range(g.ndim - 1))
  highest = jax.lax.Precision.HIGHEST
  dx = _scaled_dot(qg, qw, (((g.ndim - 1,), (1,)), ((), ())), sg * sw, g.dtype, highest)
  dw = _scaled_dot(qx, qg, ((tokens, tokens), ((), ())), sx * sg, g.dtype, highest)
  return dx, dw


current_dot.defvjp(_current_fwd, _current_bwd)


class Dot(nnx.Module):
  """One projection's FP8 matmul, x [..., K] @ w [K, N] in x's dtype (w already cast to it),
  holding its delayed-scaling state (none for current scaling)."""

  def __init__(self, scaling: str, amax_history: int = 1024):
    if scaling not in SCALINGS:
      raise UserError(f"--config.fp8_scaling={scaling!r} is not one of {list(SCALINGS)}")
    self.scaling = scaling
    if scaling == "delayed":
      # flax's names, for the input, the kernel and the output's gradient.
      for name in ("input", "kernel", "output_grad"):
        setattr(self, f"{name}_scale", Fp8State(jnp.ones((1,), jnp.float32)))
        setattr(self, f"{name}_amax_history",
                Fp8State(jnp.zeros((amax_history,), jnp.float32)))

  def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
    if self.scaling == "current":
      return current_dot(x, w)
    return fp8_ops.fp8_scaled_dot_general(
        x, w, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=x.dtype,
        lhs_scale=self.input_scale[...], rhs_scale=self.kernel_scale[...],
        grad_scale=self.output_grad_scale[...],
        lhs_amax_history=self.input_amax_history[...],
        rhs_amax_history=self.kernel_amax_history[...],
        grad_amax_history=self.output_grad_amax_history[...], quantize_compute_type=x.dtype)


def dots(scaling: str, sites: tuple[str, ...], amax_history: int = 1024) -> nnx.Dict | None:
  """A Dot per matmul site (e.g. "q", "k", "v", "o"), or None with FP8 off (scaling "")."""
  if not scaling:
    return None
  return nnx.Dict({site: Dot(scaling, amax_history) for site in sites})


def matmul(fp8_dots: nnx.Dict | None, site: str, x: jax.Array, w: jax.Array) -> jax.Array:
  """x @ w, as the site's FP8 dot when there are dots."""
  return x @ w if fp8_dots is None else fp8_dots[site](x, w)
