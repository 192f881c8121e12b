"""Attention behind one public function, `attend`; layout [batch, seq, heads, head_dim].

Implementations register in `IMPLS`. Each one validates what it can serve and raises
`UserError` naming the constraint, so a bad `--config.attention` fails before compiling.
"""

from __future__ import annotations

from typing import Callable

import jax

from slm_jax.attention import cudnn, pallas, xla
from slm_jax.errors import UserError

IMPLS: dict[str, Callable[..., jax.Array]] = {
    "xla": xla.attend,
    "cudnn": cudnn.attend,
    "pallas": pallas.attend,
}
CHECKS: dict[str, Callable[..., None]] = {
    "xla": xla.check,
    "cudnn": cudnn.check,
    "pallas": pallas.check,
}


def check(impl: str, *, dtype, head_dim: int, platform: str | None = None) -> None:
  """Raises UserError if `impl` cannot run on `platform` (default: JAX's backend) for these inputs."""
  if impl not in IMPLS:
    raise UserError(f"attention={impl!r} is not one of {sorted(IMPLS)}")
  CHECKS[impl](dtype=dtype, head_dim=head_dim, platform=platform or jax.default_backend())


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool = True,
           impl: str = "xla") -> jax.Array:
  """Softmax(q k^T / sqrt(head_dim)) v, per head; k and v may have fewer (grouped) heads.

  q: [batch, q_len, heads, head_dim]; k, v: [batch, kv_len, kv_heads, head_dim] with heads a
  multiple of kv_heads. Returns [batch, q_len, heads, head_dim] in q's dtype.
  """
  if q.ndim != 4 or k.shape != v.shape or k.ndim != 4:
    raise UserError(f"attend wants q [b, s, h, d] and k, v of one shape [b, s, h_kv, d]; "
                    f"got q {q.shape}, k {k.shape}, v {v.shape}")
  if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or q.shape[2] % k.shape[2]:
    raise UserError(f"attend: batch and head_dim must match and q heads ({q.shape[2]}) be a "
                    f"multiple of kv heads ({k.shape[2]}); got q {q.shape}, k {k.shape}")
  check(impl, dtype=q.dtype, head_dim=q.shape[3])
  return IMPLS[impl](q, k, v, causal=causal)
