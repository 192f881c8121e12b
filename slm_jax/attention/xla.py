"""The paper's vanilla attention: the full score matrix is materialised, softmax in fp32.

Mirrors HuggingFace's eager LLaMA attention, so its memory and speed are what the paper
measured as "vanilla".
"""

import jax
import jax.numpy as jnp


def check(*, dtype, head_dim, platform) -> None:
  del dtype, head_dim, platform  # plain XLA ops serve every device, dtype and shape


def attend(q, k, v, *, causal: bool):
  b, sq, h, d = q.shape
  sk, hkv = k.shape[1], k.shape[2]
  # Grouped KV heads: view q as [b, s, kv_heads, group, d] instead of repeating k and v.
  q = q.reshape(b, sq, hkv, h // hkv, d)
  scores = jnp.einsum("bqhgd,bkhd->bhgqk", q, k, preferred_element_type=jnp.float32)
  scores = scores * (d ** -0.5)
  if causal:
    # Queries are the last sq positions of the sk keys (sq == sk in training).
    mask = jnp.arange(sq)[:, None] + (sk - sq) >= jnp.arange(sk)[None, :]
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bhgqk,bkhd->bqhgd", probs, v)
  return out.reshape(b, sq, h, d)
