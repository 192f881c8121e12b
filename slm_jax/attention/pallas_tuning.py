"""Tile sizes and Triton launch parameters for the Pallas flash attention, per GPU and shape.

The table is `pallas_tuning.json` beside this file: entries keyed by GPU (`gpu_key`: the GPU
type's tuning key in slm_jax.hardware, or "default"), head_dim and seq_len, each giving the
forward, dK/dV and dQ kernels' (block_q, block_k, num_warps, num_stages).
`python -m slm_jax.tools.attention_tune --out FILE` measures entries on the GPU at hand and
merges them into FILE; set $SLM_JAX_PALLAS_TUNING=FILE to use a table other than the shipped one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path

from slm_jax import hardware
from slm_jax.errors import UserError

TABLE_PATH = Path(__file__).with_name("pallas_tuning.json")
KERNELS = ("fwd", "dkdv", "dq")


@dataclasses.dataclass(frozen=True)
class Launch:
  """One kernel's tiles: the grid walks blocks of one axis, the loop inside blocks of the other."""
  block_q: int
  block_k: int
  num_warps: int
  num_stages: int

  def __post_init__(self):
    for name in ("block_q", "block_k"):
      size = getattr(self, name)
      # Triton tensors must have power-of-two sizes and tl.dot wants every side >= 16.
      if size < 16 or size & (size - 1):
        raise UserError(f"pallas tuning: {name}={size} must be a power of two >= 16; fix the "
                        "tuning table entry")

  def fit(self, q_len: int, kv_len: int, itemsize: int = 2) -> Launch:
    """Blocks no larger than the (power-of-two-rounded) sequences, so short inputs pad little;
    for 4-byte inputs at most 2 pipeline stages, as the table's stages are sized for 2-byte
    tiles and twice the bytes per stage can overflow shared memory."""
    return dataclasses.replace(self, block_q=min(self.block_q, _pow2_at_least(q_len)),
                               block_k=min(self.block_k, _pow2_at_least(kv_len)),
                               num_stages=self.num_stages if itemsize <= 2
                               else min(self.num_stages, 2))


@dataclasses.dataclass(frozen=True)
class KernelConfig:
  fwd: Launch
  dkdv: Launch
  dq: Launch

  def fit(self, q_len: int, kv_len: int, itemsize: int = 2) -> KernelConfig:
    return KernelConfig(*(getattr(self, k).fit(q_len, kv_len, itemsize) for k in KERNELS))

  def to_json(self) -> dict:
    return {k: list(dataclasses.astuple(getattr(self, k))) for k in KERNELS}

  @classmethod
  def from_json(cls, entry: dict) -> KernelConfig:
    return cls(*(Launch(*entry[k]) for k in KERNELS))


def _pow2_at_least(n: int) -> int:
  return max(16, 1 << max(0, n - 1).bit_length())


def gpu_key(device_kind: str) -> str:
  """'NVIDIA H100 80GB HBM3' -> 'h100': the table's name for a device kind (its GPU type's
  tuning key in slm_jax.hardware; for a type the table does not know, its own name)."""
  gpu = hardware.from_device_kind(device_kind)
  if gpu is not None:
    return gpu.tuning_key
  return device_kind.lower().replace("nvidia ", "").strip() or "default"


def _same_chip(key: str) -> set[str]:
  """The other table names of GPU types on the chip of `key` (H100 and H200: GH100), whose
  tiles carry over: same SMs, shared memory and registers."""
  chips = {g.chip for g in hardware.GPUS.values() if g.tuning_key == key}
  return {g.tuning_key for g in hardware.GPUS.values() if g.chip in chips} - {key}


@functools.cache
def load_table(path: str | None = None) -> tuple[dict, ...]:
  path = Path(path or os.environ.get("SLM_JAX_PALLAS_TUNING") or TABLE_PATH)
  try:
    return tuple(json.loads(path.read_text())["entries"])
  except (OSError, ValueError, KeyError) as e:
    raise UserError(f"pallas tuning table {path} cannot be read ({e}); fix it or unset "
                    "$SLM_JAX_PALLAS_TUNING") from e


def lookup(device_kind: str, head_dim: int, seq_len: int, table=None) -> KernelConfig:
  """The entry for this GPU (else one on the same chip, else "default") with this head_dim
  (else the nearest), and of those the one whose seq_len is nearest on a log scale."""
  entries = load_table() if table is None else table
  key = gpu_key(device_kind)
  same_chip = _same_chip(key)
  pool = ([e for e in entries if e["gpu"] == key]
          or [e for e in entries if e["gpu"] in same_chip]
          or [e for e in entries if e["gpu"] == "default"])
  if not pool:
    raise UserError(f"pallas tuning table has no entry for {key!r} and no 'default' entries")
  best_dim = min((e["head_dim"] for e in pool), key=lambda d: abs(math.log2(d / head_dim)))
  pool = [e for e in pool if e["head_dim"] == best_dim]
  entry = min(pool, key=lambda e: abs(math.log2(e["seq_len"] / max(seq_len, 1))))
  return KernelConfig.from_json(entry)


def merge(entries: list[dict], new: list[dict]) -> list[dict]:
  """`entries` with each of `new` replacing the entry of the same (gpu, head_dim, seq_len)."""
  keys = {(e["gpu"], e["head_dim"], e["seq_len"]) for e in new}
  kept = [e for e in entries if (e["gpu"], e["head_dim"], e["seq_len"]) not in keys]
  return sorted(kept + list(new), key=lambda e: (e["gpu"] != "default", e["gpu"], e["head_dim"],
                                                 e["seq_len"]))


def save_table(entries: list[dict], path) -> None:
  """One entry per line, so a re-tune shows in `git diff` as the lines of the shapes it measured."""
  lines = ",\n".join("  " + json.dumps(e) for e in entries)
  Path(path).write_text(
      "{\n \"comment\": \"Pallas flash attention launch table: each kernel is [block_q, block_k, "
      "num_warps, num_stages]; 'default' serves GPUs without entries of their own. Measured "
      "entries come from python -m slm_jax.tools.attention_tune.\",\n"
      f" \"entries\": [\n{lines}\n ]\n}}\n")
  load_table.cache_clear()
