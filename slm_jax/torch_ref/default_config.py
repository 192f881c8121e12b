"""The config `python -m slm_jax.torch_ref.main` runs with no --config: the one slm_jax.main
picks for this machine. Found through torch, since JAX here is confined to the CPU."""

import torch

from slm_jax import config
from slm_jax.default_config import gpu_key


def get_config():
  if not torch.cuda.is_available():
    return config.tiny_config()
  key = gpu_key(torch.cuda.get_device_name(0))
  c = config.paper_config("100m", key or "h100")
  if key is None:
    c.device_memory_gb = 0.0
  return c
