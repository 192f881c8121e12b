"""The config `python -m slm_jax.torch_ref.main` runs with no --config: the one slm_jax.main
picks for this machine. Found through torch, since JAX here is confined to the CPU."""

import torch

from slm_jax import config
from slm_jax.default_config import for_gpu


def get_config():
  if not torch.cuda.is_available():
    return config.tiny_config()
  return for_gpu(torch.cuda.get_device_name(0))
