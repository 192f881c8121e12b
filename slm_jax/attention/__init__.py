"""Attention behind one public function, `attend`; layout [batch, seq, heads, head_dim].

Implementations register in `IMPLS`. Each one validates what it can serve and raises
`UserError` naming the constraint, so a bad `--config.attention` fails before compiling.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax

from slm_jax.attention import cudnn, pallas, xla
from slm_jax.errors import UserError

IMPLS: dict[str, Callable[..., jax.Array]] = {
    "xla": xla.attend,
    "cudnn": cudnn.attend,
    "pallas": pallas.attend,
}
# Kernels that are opaque custom calls to XLA's SPMD partitioner, which would gather a sharded
# batch onto every device and run all of it there: they run per device under shard_map instead.
PER_DEVICE = frozenset({"pallas"})
CHECKS: dict[str, Callable[..., None]] = {
    "xla": xla.check,
    "cudnn": cudnn.check,
    "pallas": pallas.check,
}


def check(impl: str, *, dtype, head_dim: int, platform: str | None = None) -> None:
  """Raises UserError if `impl` cannot run on `platform` (default: JAX's backend) for these
  inputs."""
  if impl not in IMPLS:
    raise UserError(f"attention={impl!r} is not one of {sorted(IMPLS)}")
  CHECKS[impl](dtype=dtype, head_dim=head_dim, platform=platform or jax.default_backend())


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool = True,
           impl: str = "xla", batch_sharding: jax.sharding.NamedSharding | None = None
           ) -> jax.Array:
  """Softmax(q k^T / sqrt(head_dim)) v, per head; k and v may have fewer (grouped) heads.

  q: [batch, q_len, heads, head_dim]; k, v: [batch, kv_len, kv_heads, head_dim] with heads a
  multiple of kv_heads. Returns [batch, q_len, heads, head_dim] in q's dtype.
  `batch_sharding`: how q, k and v are split over devices by batch, if they are; the
  implementations in PER_DEVICE then run on each device's rows alone.
  """
  if q.ndim != 4 or k.shape != v.shape or k.ndim != 4:
    raise UserError(f"attend wants q [b, s, h, d] and k, v of one shape [b, s, h_kv, d]; "
                    f"got q {q.shape}, k {k.shape}, v {v.shape}")
  if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or q.shape[2] % k.shape[2]:
    raise UserError(f"attend: batch and head_dim must match and q heads ({q.shape[2]}) be a "
                    f"multiple of kv heads ({k.shape[2]}); got q {q.shape}, k {k.shape}")
  check(impl, dtype=q.dtype, head_dim=q.shape[3])
  fn = functools.partial(IMPLS[impl], causal=causal)
  if batch_sharding is not None and impl in PER_DEVICE:
    spec = batch_sharding.spec
    # check_vma off: a pallas_call does not declare how its outputs vary over the mesh.
    fn = jax.shard_map(fn, mesh=batch_sharding.mesh, in_specs=(spec, spec, spec),
                       out_specs=spec, check_vma=False)
  return fn(q, k, v)
