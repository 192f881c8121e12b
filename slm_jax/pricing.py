"""What a GPU-hour costs: a dated price table, the paper's normalised prices, and Token/Dollar.

Prices move; override with --config.price_per_device_hour (USD per device per hour).
"""

from __future__ import annotations

PRICE_TABLE_DATE = "2026-05"
PRICE_TABLE_SOURCE = (
    "mid-points of the specialty-provider on-demand ranges in the Mercatus cloud GPU price "
    "survey (May 2026): A100-80GB $1.10-1.50, H100 SXM $2.50-3.50, H200 SXM $3.50-4.50; "
    "A100-40GB is A100-80GB / 1.46, the paper's price ratio")
USD_PER_GPU_HOUR = {"A100-40GB": 0.89, "A100-80GB": 1.30, "H100": 3.00, "H200": 4.00}

# The paper gives prices only as ratios to an A100-40GB hour (averaged over two clouds); its
# Token/Dollar axis is tokens/s per GPU divided by this ratio.
# The H200 came after the paper: its ratio is the H100's scaled by the two GPUs' prices in the
# dated table above (2.53 x 4.00 / 3.00), so H200 points can sit on the paper's axes.
PAPER_PRICE_RATIO = {"A100-40GB": 1.00, "A100-80GB": 1.46, "H100": 2.53,
                     "H200": round(2.53 * USD_PER_GPU_HOUR["H200"] / USD_PER_GPU_HOUR["H100"], 2)}


def gpu_type(device_kind: str) -> str | None:
  """Maps the name a device reports (e.g. 'NVIDIA H100 80GB HBM3') to a price-table key."""
  kind = device_kind.upper()
  if "H200" in kind:
    return "H200"
  if "H100" in kind:
    return "H100"
  if "A100" in kind:
    return "A100-40GB" if "40GB" in kind else "A100-80GB"
  return None


def price_per_device_hour(device_kind: str, override: float = 0.0) -> tuple[float | None, str]:
  """(USD per device-hour, where it came from); (None, reason) when nothing is known."""
  if override > 0:
    return override, "config.price_per_device_hour"
  key = gpu_type(device_kind)
  if key is None:
    return None, f"no price for {device_kind!r}; set --config.price_per_device_hour"
  return USD_PER_GPU_HOUR[key], f"table {PRICE_TABLE_DATE}: {key}"


def token_per_dollar(tokens_per_s: float, num_devices: int, usd_per_device_hour: float | None):
  if not usd_per_device_hour:
    return None
  return tokens_per_s / (usd_per_device_hour * num_devices / 3600.0)


def token_per_dollar_paper(tokens_per_s_per_device: float, device_kind: str) -> float | None:
  """Token/Dollar in the paper's normalised unit (tokens/s per GPU / price ratio)."""
  ratio = PAPER_PRICE_RATIO.get(gpu_type(device_kind) or "")
  return tokens_per_s_per_device / ratio if ratio else None
