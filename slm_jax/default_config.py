"""The config `python -m slm_jax.main` runs with no --config: a fit for the device it finds.

A known GPU gets the paper's 100M model at its preset batch; an unknown GPU the same model
with its own memory as the budget; a CPU the tiny model.
"""

import jax

from slm_jax import config


def gpu_key(device_kind: str) -> str | None:
  kind = device_kind.upper()
  if "A100" in kind:
    return "a100_40g" if "40GB" in kind else "a100"
  return next((k for k in ("h200", "h100") if k.upper() in kind), None)


def get_config():
  device = jax.devices()[0]
  if device.platform != "gpu":
    return config.tiny_config()
  key = gpu_key(device.device_kind)
  c = config.paper_config("100m", key or "h100")
  if key is None:
    c.device_memory_gb = 0.0
  return c
