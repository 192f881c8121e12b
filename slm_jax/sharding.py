"""Device meshes and the logical-axis rules that place parameters, state and batches on them.

A strategy is an entry in `RULES`: a mesh shape plus a map from the model's logical axis
names (see `slm_jax.model`) to mesh axes. The training step is the same code for all of them.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from slm_jax.errors import UserError
from slm_jax.model import LOGICAL_AXES

# Strategy -> (mesh axis names, logical axis -> mesh axis). Logical axes a strategy does not
# name are replicated. Batches are always split over "data".
RULES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "single": (("data",), {}),
}


def make_mesh(strategy: str, devices=None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  if strategy not in RULES:
    raise UserError(f"--config.strategy={strategy!r} is not one of {sorted(RULES)}")
  if strategy == "single":
    devices = devices[:1]
  axes, _ = RULES[strategy]
  return Mesh(np.array(devices).reshape((len(devices),) + (1,) * (len(axes) - 1)), axes)


def logical_to_spec(names: tuple[str | None, ...], strategy: str) -> P:
  _, rules = RULES[strategy]
  return P(*(rules.get(n) if n else None for n in names))


def param_shardings(abstract_params: nnx.State, mesh: Mesh, strategy: str):
  """A NamedSharding for every parameter, from its `logical_axes` metadata."""
  def one(var):
    names = var.get_metadata().get(LOGICAL_AXES, (None,) * var.value.ndim)
    return NamedSharding(mesh, logical_to_spec(names, strategy))
  return jax.tree.map(one, abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
