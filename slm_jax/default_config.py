"""The config `python -m slm_jax.main` runs with no --config: a fit for the device it finds.

A known GPU gets the paper's 100M model at its preset batch; an unknown GPU the same model
with its own memory as the budget; a CPU the tiny model.
"""

import jax

from slm_jax import config, hardware

# The presets an unknown GPU runs (with its own memory as the budget).
FALLBACK_GPU = "h100"


def preset_gpu(device_kind: str) -> str:
  """The config key of the presets a GPU runs: its type's, else FALLBACK_GPU's."""
  gpu = hardware.from_device_kind(device_kind)
  return gpu.key if gpu else FALLBACK_GPU


def for_gpu(device_kind: str):
  """The paper's 100M model on this GPU."""
  c = config.paper_config("100m", preset_gpu(device_kind))
  if hardware.from_device_kind(device_kind) is None:
    c.device_memory_gb = 0.0
  return c


def get_config():
  device = jax.devices()[0]
  if device.platform != "gpu":
    return config.tiny_config()
  return for_gpu(device.device_kind)
