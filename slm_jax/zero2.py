"""fsdp_grad_op's gradient (ZeRO-2, as PyTorch FSDP's SHARD_GRAD_OP runs it), with its
collectives written out in `shard_map` instead of left to XLA's partitioner.

Every device holds a shard of each fp32 parameter and of its optimizer state. A step casts the
device's shards of the matmul kernels to the compute dtype, all-gathers every parameter once,
runs the forward and backward pass on the device's own rows of the batch with those gathered
weights (kept from the forward through the backward, so nothing is gathered twice), and
reduce-scatters each gradient back onto the shards in the dtype the backward wrote it (bf16 for
the kernels). The optimizer then updates the shards where they live.

Why by hand: left to the partitioner, a replicated-parameter ZeRO-2 gathered the fp32
parameters after the update, twice the bytes of a bf16 gather, and sharding constraints on bf16
copies moved no collective (benchmarks/PERF_NOTES.md sections 14 and 21).

Numerics against ddp: the same per-device backward on the same weights in the compute dtype,
and the same sum of gradients, computed as a reduce-scatter. The embedding table and the norm
scales are gathered in fp32 because the model uses them in fp32 (the lookup's scatter-add
gradient, RMS statistics); a norm scale folded into a kernel (`fold_norm_scale`) multiplies the
gathered bf16 kernel instead of the fp32 one, one more rounding of the product. FP8's delayed
scaling keeps global amaxes (each history's newest entry is the maximum over devices); current
scaling takes each activation's and gradient's amax over the device's own rows, as per-device
data parallel FP8 does.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

# Parameters the model uses only after a cast to the compute dtype (every nnx.Linear kernel).
_CAST_LEAF = "kernel"


def _sharded_dim(spec: P, axis: str) -> int | None:
  """The dimension `spec` splits over mesh axis `axis`, or None (replicated)."""
  for dim, names in enumerate(spec):
    if names == axis or (isinstance(names, tuple) and axis in names):
      return dim
  return None


def _is_kernel(path) -> bool:
  last = path[-1] if path else None
  return getattr(last, "key", getattr(last, "name", None)) == _CAST_LEAF


def value_and_grad(loss_fn: Callable[..., jax.Array], mesh: Mesh, param_shardings: Any,
                   batch_sharding: NamedSharding, compute_dtype,
                   fp8_shardings: Any = None) -> Callable:
  """(params, batch, fp8_state) -> (mean loss, gradients laid out as the parameters are,
  the fp8 state's next value or None).

  `loss_fn(params, batch[, fp8_state])` is the mean loss of one device's rows, traced inside
  `shard_map` (so the model in it must not constrain shardings). The mesh has one axis, over
  which both the batch and the parameters are split."""
  if len(mesh.axis_names) != 1:
    raise ValueError(f"a one-axis mesh, not {mesh.axis_names}")
  axis = mesh.axis_names[0]
  n = mesh.shape[axis]
  specs = [s.spec for s in jax.tree.leaves(param_shardings)]
  dims = [_sharded_dim(s, axis) for s in specs]

  def local(params, batch, fp8_state):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    full = []
    for (path, x), dim in zip(leaves, dims):
      x = x.astype(compute_dtype) if _is_kernel(path) else x
      full.append(x if dim is None else jax.lax.all_gather(x, axis, axis=dim, tiled=True))
    full = jax.tree.unflatten(treedef, full)

    # The global loss is the mean of the devices' means (equal rows each); dividing here makes
    # the reduced gradient that mean's.
    if fp8_state is None:
      loss, grads = jax.value_and_grad(lambda p: loss_fn(p, batch) / n)(full)
      fp8_next = None
    else:
      loss, (grads, fp8_next) = jax.value_and_grad(
          lambda p, f: loss_fn(p, batch, f) / n, argnums=(0, 1))(full, fp8_state)
      # Scales come from the histories all devices share; a history's newest entry is this
      # device's amax, and their maximum is the global tensor's.
      fp8_next = jax.tree.map(lambda v: jax.lax.pmax(v, axis), fp8_next)

    out = []
    for (_, master), g, dim in zip(leaves, jax.tree.leaves(grads), dims):
      g = (jax.lax.psum(g, axis) if dim is None
           else jax.lax.psum_scatter(g, axis, scatter_dimension=dim, tiled=True))
      out.append(g.astype(master.dtype))
    return jax.lax.psum(loss, axis), jax.tree.unflatten(treedef, out), fp8_next

  param_specs = jax.tree.map(lambda s: s.spec, param_shardings)
  fp8_specs = None if fp8_shardings is None else jax.tree.map(lambda s: s.spec, fp8_shardings)
  # check_vma off: every collective here is written out, and none is to be added by autodiff.
  return jax.shard_map(local, mesh=mesh,
                       in_specs=(param_specs, batch_sharding.spec, fp8_specs),
                       out_specs=(P(), param_specs, fp8_specs), check_vma=False)


def gathered_dtype_bytes(params: Any, compute_dtype) -> int:
  """Bytes of one gathered copy of `params` (kernels in the compute dtype, the rest as stored):
  what each step all-gathers, for a device count N, (N - 1) / N of it over the links."""
  total = 0
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    dtype = jnp.dtype(compute_dtype) if _is_kernel(path) else jnp.dtype(x.dtype)
    total += x.size * dtype.itemsize
  return total
