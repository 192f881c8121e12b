"""Every fact about a GPU type and an interconnect, in one table that the rest of slm_jax reads.

Values are those of config.py (memory, presets' XLA options and batches), measure.py (peaks,
HBM bandwidth), pricing.py (the dated price table and the paper's price ratios) and
collectives.py (link bandwidths and latencies).
"""

from __future__ import annotations

import dataclasses

from slm_jax.errors import UserError

_HOPPER_XLA = "xla_gpu_enable_triton_gemm=false"


@dataclasses.dataclass(frozen=True)
class GPU:
  key: str                 # config-file key
  name: str                # price/paper name
  memory_gb: float         # per device
  peak_bf16_tflops: float  # dense
  peak_fp8_tflops: float | None
  hbm_gbytes_per_s: float  # datasheet
  intra_node: str          # interconnect key inside a node
  usd_per_hour: float      # the dated price table (pricing.PRICE_TABLE_DATE)
  paper_price_ratio: float | None  # the paper's price ratio to an A100-40GB hour
  xla_options: str         # per-GPU compile options of the presets
  default_batch: dict[str, int]
  tuning_key: str          # Pallas tuning-table chip key


@dataclasses.dataclass(frozen=True)
class Interconnect:
  key: str
  name: str
  gbytes_per_s: float  # per direction, per GPU
  latency_s: float     # per ring step


GPUS: dict[str, GPU] = {g.key: g for g in (
    GPU("a100_40g", "A100-40GB", 40.0, 312.0, None, 1555.0, "nvlink3", 0.89, 1.00, "",
        {"100m": 16, "500m": 16, "1b": 16, "2b": 4}, "a100_40g"),
    GPU("a100", "A100-80GB", 80.0, 312.0, None, 2039.0, "nvlink3", 1.30, 1.46, "",
        {"100m": 16, "500m": 16, "1b": 16, "2b": 8}, "a100"),
    GPU("h100", "H100", 80.0, 989.0, 1979.0, 3350.0, "nvlink4", 3.00, 2.53, _HOPPER_XLA,
        {"100m": 16, "500m": 16, "1b": 16, "2b": 8}, "h200"),
    GPU("h200", "H200", 141.0, 989.0, 1979.0, 4800.0, "nvlink4", 4.00, round(2.53 * 4 / 3, 2),
        _HOPPER_XLA, {"100m": 16, "500m": 16, "1b": 16, "2b": 8}, "h200"),
)}

INTERCONNECTS: dict[str, Interconnect] = {i.key: i for i in (
    Interconnect("nvlink4", "NVLink 4 (H100/H200 SXM, 450 GB/s per direction)", 450.0, 3e-6),
    Interconnect("nvlink3", "NVLink 3 (A100 SXM, 300 GB/s per direction)", 300.0, 3e-6),
    Interconnect("pcie4", "PCIe 4.0 x16 (~25 GB/s achievable)", 25.0, 5e-6),
    Interconnect("pcie5", "PCIe 5.0 x16 (~50 GB/s achievable)", 50.0, 5e-6),
    Interconnect("ib400", "InfiniBand NDR / EFA 400 Gb/s per GPU (50 GB/s)", 50.0, 10e-6),
    Interconnect("efa100", "EFA 100 Gb/s per GPU (12.5 GB/s)", 12.5, 15e-6),
)}


def gpu(key_or_name: str) -> GPU:
  """The GPU by config key or name, any case ("h100", "H100", "A100-80GB", "H100-80GB")."""
  want = key_or_name.strip().lower()
  for g in GPUS.values():
    if want in (g.key, g.name.lower(), f"{g.name.lower()}-80gb"):
      return g
  raise UserError(f"unknown GPU type {key_or_name!r}; known: "
                  f"{', '.join(f'{g.key} ({g.name})' for g in GPUS.values())}")


def from_device_kind(device_kind: str) -> GPU | None:
  """The GPU a device reports itself as ('NVIDIA H100 80GB HBM3' -> H100); None for others."""
  kind = (device_kind or "").upper()
  if "H200" in kind:
    return GPUS["h200"]
  if "H100" in kind:
    return GPUS["h100"]
  if "A100" in kind:
    return GPUS["a100_40g" if "40GB" in kind else "a100"]
  return None


def interconnect(key: str) -> Interconnect:
  if key not in INTERCONNECTS:
    raise UserError(f"unknown interconnect {key!r}; known: {', '.join(INTERCONNECTS)}")
  return INTERCONNECTS[key]
