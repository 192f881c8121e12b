"""cuDNN's fused flash attention through `jax.nn.dot_product_attention` (GPU only)."""

import jax
import jax.numpy as jnp

from slm_jax.errors import UserError


def check(*, dtype, head_dim, platform) -> None:
  if platform != "gpu":
    raise UserError(f"attention='cudnn' needs an NVIDIA GPU, but JAX's backend is {platform!r}; "
                    "use --config.attention=xla on this machine")
  if jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
    raise UserError(f"attention='cudnn' takes bf16 or fp16 inputs, got {jnp.dtype(dtype).name}; "
                    "set --config.compute_dtype=bfloat16 or use attention='xla'")
  if head_dim % 8 or head_dim > 256:
    raise UserError(f"attention='cudnn' needs head_dim a multiple of 8 and at most 256, got "
                    f"{head_dim}; use attention='xla' for this model")


def attend(q, k, v, *, causal: bool):
  return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="cudnn")
