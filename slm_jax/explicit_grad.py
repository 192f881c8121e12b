"""Gradients with their collectives written out in `shard_map` instead of left to XLA's
partitioner: ddp's all-reduces, and fsdp_grad_op's ZeRO-2 (as PyTorch FSDP's SHARD_GRAD_OP runs
it) gathers and reduce-scatters.

Every parameter is either replicated (ddp) or stored as a shard of its fp32 value, with its
optimizer state, on each device (fsdp_grad_op, split on the dimension `param_shardings` give
it). A step casts the device's matmul kernels to the compute dtype, all-gathers each sharded
parameter once, runs the forward and backward pass on the device's own rows of the batch with
those weights (kept from the forward through the backward, so nothing is gathered twice), and
reduces each gradient in the dtype the backward wrote it (bf16 for the kernels): summed on
every device where the parameter is replicated, reduce-scattered onto the shards where it is
sharded. The optimizer then updates the parameters where they live.

When the reductions run (`per_layer`, `--config.reduce_schedule`; ddp comes here only with it,
and otherwise takes its gradient from XLA's partitioner):
- False: every gradient is reduced after the backward, and XLA's scheduler places the
  collectives. It puts them after the last weight-gradient GEMM, with next to nothing to
  overlap (benchmarks/PERF_NOTES.md section 22).
- True: the model hands each group of parameters through `boundary` (Llama.__call__), a layer
  ahead of the layer that uses them; the group's weights are gathered there in the forward, and
  its gradients are reduced in the backward while the layer before runs: the reduction's result
  is tied to that layer's input gradient, which the rest of the backward waits on, so XLA cannot
  leave it until the end. The first group (embedding and layer 0) is reduced last. On two
  power-capped H200s this hid the collectives and slowed the GEMMs beside them by more (1-2%
  a step, section 22), so it is not the default.

Why by hand: left to the partitioner, a replicated-parameter ZeRO-2 gathered the fp32
parameters after the update, twice the bytes of a bf16 gather, and sharding constraints on bf16
copies moved no collective (benchmarks/PERF_NOTES.md sections 14 and 21).

Numerics: the same per-device backward on the same weights in the compute dtype, and the same
sum of gradients as XLA's ddp. The embedding table and the norm scales are gathered in fp32
because the model uses them in fp32 (the lookup's scatter-add gradient, RMS statistics); a norm
scale folded into a kernel (`fold_norm_scale`) multiplies the gathered bf16 kernel instead of
the fp32 one, one more rounding of the product. FP8's delayed scaling keeps global amaxes (each
history's newest entry is the maximum over devices); current scaling takes each activation's and
gradient's amax over the device's own rows, as per-device data parallel FP8 does.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

# Parameters the model uses only after a cast to the compute dtype (every nnx.Linear kernel).
_CAST_LEAF = "kernel"


def _sharded_dim(spec: P, axis: str) -> int | None:
  """The dimension `spec` splits over mesh axis `axis`, or None (replicated)."""
  for dim, names in enumerate(spec):
    if names == axis or (isinstance(names, tuple) and axis in names):
      return dim
  return None


def _name(path) -> tuple[str, ...]:
  """A parameter's path as names, the same for the pure-dict parameters and a module's state."""
  names = tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
  return names[:-1] if names and names[-1] == "value" else names


def _is_kernel(path) -> bool:
  return bool(path) and _name(path)[-1] == _CAST_LEAF


def _gather(x: jax.Array, axis: str, dim: int | None) -> jax.Array:
  return x if dim is None else jax.lax.all_gather(x, axis, axis=dim, tiled=True)


def _reduce(g: jax.Array, axis: str, dim: int | None) -> jax.Array:
  return (jax.lax.psum(g, axis) if dim is None
          else jax.lax.psum_scatter(g, axis, scatter_dimension=dim, tiled=True))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _hand_over(axis: str, dims: tuple[int | None, ...], x, params: list):
  """(x, the group's local parameters) -> (x, the group's gathered parameters)."""
  return x, [_gather(p, axis, d) for p, d in zip(params, dims)]


def _hand_over_fwd(axis, dims, x, params):
  return _hand_over(axis, dims, x, params), None


def _hand_over_bwd(axis, dims, _, cotangents):
  g_x, g_params = cotangents
  reduced = [_reduce(g, axis, d) for g, d in zip(g_params, dims)]
  if g_x is not None:
    # The layer before's backward waits on the reductions: they run beside it, not at the end.
    reduced, g_x = jax.lax.optimization_barrier((reduced, g_x))
  return g_x, reduced


_hand_over.defvjp(_hand_over_fwd, _hand_over_bwd)


class _Boundary:
  """The `boundary` Llama.__call__ hands its parameter groups to (per_layer)."""

  def __init__(self, axis: str, dims: dict[tuple[str, ...], int | None]):
    self.axis, self.dims, self.seen = axis, dims, set()

  def __call__(self, x, modules: Sequence[tuple[tuple[str, ...], nnx.Module]]):
    states = [nnx.state(m, nnx.Param) for _, m in modules]
    flat = [jax.tree_util.tree_flatten_with_path(s) for s in states]
    names = [prefix + _name(path) for (prefix, _), (leaves, _) in zip(modules, flat)
             for path, _ in leaves]
    self.seen.update(names)
    x, params = _hand_over(self.axis, tuple(self.dims[n] for n in names), x,
                           [v for leaves, _ in flat for _, v in leaves])
    params = iter(params)
    for (_, module), (leaves, treedef) in zip(modules, flat):
      nnx.update(module, jax.tree.unflatten(treedef, [next(params) for _ in leaves]))
    return x


def value_and_grad(loss_fn: Callable[..., jax.Array], mesh: Mesh, param_shardings: Any,
                   batch_sharding: NamedSharding, compute_dtype,
                   fp8_shardings: Any = None, per_layer: bool = False) -> Callable:
  """(params, batch, fp8_state) -> (mean loss, gradients laid out as the parameters are,
  the fp8 state's next value or None).

  `loss_fn(params, batch[, fp8_state], boundary=None)` is the mean loss of one device's rows,
  traced inside `shard_map` (so the model in it must not constrain shardings); with `per_layer`
  it gets a `boundary` to pass to the model. The mesh has one axis, over which the batch and the
  sharded parameters are split."""
  if len(mesh.axis_names) != 1:
    raise ValueError(f"a one-axis mesh, not {mesh.axis_names}")
  axis = mesh.axis_names[0]
  n = mesh.shape[axis]
  specs = [s.spec for s in jax.tree.leaves(param_shardings)]
  dims = [_sharded_dim(s, axis) for s in specs]

  def local(params, batch, fp8_state):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    cast = [x.astype(compute_dtype) if _is_kernel(path) else x for path, x in leaves]
    if per_layer:
      boundary = _Boundary(axis, {_name(path): d for (path, _), d in zip(leaves, dims)})
      inputs, kw = cast, {"boundary": boundary}
    else:
      inputs, kw = [_gather(x, axis, d) for x, d in zip(cast, dims)], {}
    inputs = jax.tree.unflatten(treedef, inputs)

    # The global loss is the mean of the devices' means (equal rows each); dividing here makes
    # the reduced gradient that mean's.
    if fp8_state is None:
      loss, grads = jax.value_and_grad(lambda p: loss_fn(p, batch, **kw) / n)(inputs)
      fp8_next = None
    else:
      loss, (grads, fp8_next) = jax.value_and_grad(
          lambda p, f: loss_fn(p, batch, f, **kw) / n, argnums=(0, 1))(inputs, fp8_state)
      # Scales come from the histories all devices share; a history's newest entry is this
      # device's amax, and their maximum is the global tensor's.
      fp8_next = jax.tree.map(lambda v: jax.lax.pmax(v, axis), fp8_next)

    if per_layer:
      missing = {_name(path) for path, _ in leaves} - boundary.seen
      if missing:
        raise ValueError(f"the model handed no boundary these parameters: {sorted(missing)}")
    out = []
    for (_, master), g, dim in zip(leaves, jax.tree.leaves(grads), dims):
      out.append((g if per_layer else _reduce(g, axis, dim)).astype(master.dtype))
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
