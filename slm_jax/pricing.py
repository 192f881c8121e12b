"""What a GPU-hour costs and Token/Dollar, from the dated prices and the paper's normalised
prices in slm_jax.hardware.

Prices move; override with --config.price_per_device_hour (USD per device per hour).
"""

from __future__ import annotations

from slm_jax import hardware
from slm_jax.hardware import PRICE_TABLE_DATE


def price_per_device_hour(device_kind: str, override: float = 0.0) -> tuple[float | None, str]:
  """(USD per device-hour, where it came from); (None, reason) when nothing is known."""
  if override > 0:
    return override, "config.price_per_device_hour"
  gpu = hardware.from_device_kind(device_kind)
  if gpu is None:
    return None, f"no price for {device_kind!r}; set --config.price_per_device_hour"
  return gpu.usd_per_hour, f"table {PRICE_TABLE_DATE}: {gpu.name}"


def token_per_dollar(tokens_per_s: float, num_devices: int, usd_per_device_hour: float | None):
  if not usd_per_device_hour:
    return None
  return tokens_per_s / (usd_per_device_hour * num_devices / 3600.0)


def token_per_dollar_paper(tokens_per_s_per_device: float, device_kind: str) -> float | None:
  """Token/Dollar in the paper's normalised unit (tokens/s per GPU / price ratio)."""
  gpu = hardware.from_device_kind(device_kind)
  ratio = gpu.paper_price_ratio if gpu else None
  return tokens_per_s_per_device / ratio if ratio else None
