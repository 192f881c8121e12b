"""Weights between the Flax model (slm_jax.model) and HuggingFace's `LlamaForCausalLM`.

The two share module names, so a parameter's path is its name in both; what differs is the
leaf (Flax `kernel`/`embedding`/`scale`, torch `weight`), the `model.` prefix torch puts on
everything but `lm_head`, and the layout of a Linear weight (Flax [in, out], torch [out, in]).
Arrays cross as numpy, so neither side needs the other's device.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import torch

# Flax leaf name -> whether the torch weight is its transpose.
_LEAVES = {"kernel": True, "embedding": False, "scale": False}


def _flatten(tree, prefix=()):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flatten(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def torch_name(path: tuple) -> str:
  """('layers', 0, 'self_attn', 'q_proj', 'kernel') -> 'model.layers.0.self_attn.q_proj.weight'."""
  *modules, leaf = path
  if leaf not in _LEAVES:
    raise KeyError(f"unexpected Flax parameter {path}")
  name = ".".join(str(m) for m in modules) + ".weight"
  return name if modules[0] == "lm_head" else "model." + name


def flax_path(name: str) -> tuple:
  """The inverse of `torch_name`."""
  parts = name.removeprefix("model.").split(".")
  if parts[-1] != "weight":
    raise KeyError(f"unexpected torch parameter {name!r}")
  modules = tuple(int(p) if p.isdigit() else p for p in parts[:-1])
  last = modules[-1]
  if last == "embed_tokens":
    leaf = "embedding"
  elif last.endswith("norm"):
    leaf = "scale"
  else:
    leaf = "kernel"
  return modules + (leaf,)


def _to_torch(x) -> torch.Tensor:
  x = np.asarray(x)
  if x.dtype == ml_dtypes.bfloat16:  # numpy has no bfloat16 torch understands
    return torch.from_numpy(x.view(np.int16).copy()).view(torch.bfloat16)
  return torch.from_numpy(np.array(x))  # a copy: jax's buffers are read-only


def _to_numpy(t: torch.Tensor) -> np.ndarray:
  t = t.detach().cpu()
  if t.dtype == torch.bfloat16:
    return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.numpy().copy()


def flax_to_torch(params: dict) -> dict[str, torch.Tensor]:
  """A `LlamaForCausalLM` state dict from `nnx.to_pure_dict` parameters; load it with
  `model.load_state_dict(..., strict=True)`."""
  out = {}
  for path, value in _flatten(params):
    t = _to_torch(value)
    out[torch_name(path)] = t.T.contiguous() if _LEAVES[path[-1]] else t
  return out


def torch_to_flax(state_dict: dict[str, torch.Tensor]) -> dict:
  """`nnx.to_pure_dict`-shaped parameters (numpy arrays) from a `LlamaForCausalLM` state dict;
  load them with `nnx.replace_by_pure_dict`."""
  out: dict = {}
  for name, tensor in state_dict.items():
    if "rotary_emb" in name:  # RoPE's frequency buffer, computed, not learnt
      continue
    path = flax_path(name)
    x = _to_numpy(tensor)
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = np.ascontiguousarray(x.T) if _LEAVES[path[-1]] else x
  return out
