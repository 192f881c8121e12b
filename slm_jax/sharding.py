"""Device meshes and the logical-axis rules that place parameters, optimizer state and batches.

A strategy is a row of `STRATEGIES`: mesh axes, the axes a batch is split over, and two
maps from the model's logical axis names (see `slm_jax.model`) to mesh axes, one for the
parameters as the state stores them and one for the optimizer state and the gradients that
update it. For most strategies the training step is the same code and XLA derives the
collectives (all-reduce, all-gather, reduce-scatter) from where the arrays live; a strategy
marked `explicit` computes its gradient with the collectives written out (slm_jax.explicit_grad).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from slm_jax.errors import UserError
from slm_jax.model import LOGICAL_AXES


@dataclasses.dataclass(frozen=True)
class Strategy:
  mesh_axes: tuple[str, ...]
  params: dict[str, str]      # logical axis -> mesh axis, for the parameters
  opt_state: dict[str, str]   # ... for gradients and optimizer state
  description: str
  explicit: bool = False      # the gradient from slm_jax.explicit_grad, not from XLA's partitioner


# ZeRO-3 splits each weight on its model dimension, except the embedding table, which it splits
# on its rows (vocab): split on its columns, GPU XLA laid the table out column-major for the
# gather, and the backward's scatter-add of each token's row into it wrote a float 32,000 apart
# per element (10 ms a step at 1B batch 64 on H200; 0.4-0.6 ms into rows under ZeRO-2;
# PERF_NOTES section 29). Rules apply in a parameter's axis order, so lm_head (embed, vocab)
# still splits on embed.
_SHARD_EMBED = {"vocab": "fsdp", "embed": "fsdp"}
# Every logical axis: a parameter is split on its first dimension the devices divide, so that a
# gather or reduce-scatter moves whole rows (contiguous blocks, no transposes around the NCCL
# call); where the first does not divide (down_proj's FFN rows at some sizes), the next one.
_SHARD_FIRST = {name: "fsdp" for name in ("vocab", "embed", "heads", "kv_heads", "mlp", "norm")}
STRATEGIES: dict[str, Strategy] = {
    "single": Strategy(("data",), {}, {}, "one device"),
    "ddp": Strategy(("data",), {}, {},
                    "parameters and optimizer state replicated, batch split, gradients "
                    "all-reduced"),
    "fsdp_full": Strategy(("fsdp",), _SHARD_EMBED, _SHARD_EMBED,
                          "ZeRO-3: parameters, gradients and optimizer state sharded; "
                          "parameters all-gathered where used, gradients reduce-scattered"),
    "fsdp_grad_op": Strategy(("fsdp",), _SHARD_FIRST, _SHARD_FIRST,
                             "ZeRO-2: fp32 parameters, gradients and optimizer state sharded; "
                             "weights all-gathered once a step in the compute dtype and kept "
                             "through the backward, gradients reduce-scattered",
                             explicit=True),
    "hsdp": Strategy(("replica", "fsdp"), _SHARD_EMBED, _SHARD_EMBED,
                     "fsdp_full inside a host, ddp across hosts"),
}


def strategy(name: str) -> Strategy:
  if name not in STRATEGIES:
    raise UserError(f"--config.strategy={name!r} is not one of {sorted(STRATEGIES)}")
  return STRATEGIES[name]


def make_mesh(name: str, devices=None, num_devices: int = 0, hosts: int | None = None) -> Mesh:
  """The mesh for strategy `name` over `devices` (default: all), or the first `num_devices`.
  `hosts` overrides how many hosts hsdp's replica axis spans (default: the processes holding
  the devices), so a mesh of several hosts can be compiled on one (slm_jax.predict)."""
  s = strategy(name)
  explicit = devices
  devices = list(jax.devices() if devices is None else devices)
  want = 1 if name == "single" else (num_devices or len(devices))
  if want > len(devices):
    raise UserError(f"--config.num_devices={want} but only {len(devices)} devices are present")
  devices = devices[:want]
  if explicit is None:
    _check_every_process_holds_one(name, devices, num_devices)
  if s.mesh_axes == ("replica", "fsdp"):
    hosts = hosts or len({d.process_index for d in devices})
    if len(devices) % hosts:
      raise UserError(f"hsdp: {len(devices)} devices do not split evenly over {hosts} hosts")
    shape = (hosts, len(devices) // hosts)
  else:
    shape = (len(devices),)
  return Mesh(np.array(devices).reshape(shape), s.mesh_axes)


def _check_every_process_holds_one(name: str, devices: list, num_devices: int) -> None:
  """Each process of a multi-process run feeds its own devices' rows of every batch, so one
  left without a device in the mesh would have nothing to feed and the others would wait for
  it: one UserError up front instead."""
  left_out = sorted(set(range(jax.process_count())) - {d.process_index for d in devices})
  if not left_out:
    return
  why = ("--config.strategy=single runs on one device" if name == "single"
         else f"--config.num_devices={num_devices} takes {len(devices)} devices")
  raise UserError(f"{why}, which leaves process(es) {left_out} of this "
                  f"{jax.process_count()}-process run without one; "
                  + ("choose ddp, fsdp_full, fsdp_grad_op or hsdp" if name == "single" else
                     "give --config.num_devices=0 (every device) or a count that reaches every "
                     "process"))


def spec_for(names, shape, rules: dict[str, str], mesh: Mesh) -> P:
  """PartitionSpec for an array with logical axes `names`; a dimension the mesh axis does not
  divide stays replicated (each device then holds it whole), so any device count runs."""
  out = []
  for name, dim in zip(names, shape):
    axis = rules.get(name) if name else None
    if axis is not None and dim % mesh.shape[axis] == 0 and axis not in out:
      out.append(axis)
    else:
      out.append(None)
  return P(*out)


def shardings(abstract_params: nnx.State, mesh: Mesh, rules: dict[str, str]):
  """A NamedSharding for every parameter (as a pure dict), from its `logical_axes` metadata."""
  def one(var):
    shape = var.get_value().shape
    names = var.get_metadata().get(LOGICAL_AXES, (None,) * len(shape))
    return NamedSharding(mesh, spec_for(names, shape, rules, mesh))
  return nnx.to_pure_dict(
      jax.tree.map(one, abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches are split over every mesh axis: each device gets per_device_batch rows."""
  return NamedSharding(mesh, P(mesh.axis_names))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def bytes_per_device(tree, shardings_tree) -> int:
  """Bytes one device holds of `tree` (arrays or ShapeDtypeStructs) laid out by `shardings_tree`."""
  total = 0
  for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings_tree)):
    total += math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
  return total
