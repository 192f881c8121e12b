"""Timing, FLOP accounting, MFU and device memory for a training run."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import jax

# Dense bf16 tensor-core peaks in TFLOP/s, by a substring of the device kind, first match wins.
PEAK_BF16_TFLOPS = (
    ("H100 PCIE", 756.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
)


# HBM bandwidth in GB/s (datasheet), same matching.
PEAK_HBM_GBYTES_PER_S = (
    ("H100 PCIE", 2000.0),
    ("H100", 3350.0),
    ("H200", 4800.0),
    ("A100-SXM4-40GB", 1555.0),
    ("A100", 2039.0),
)


def peak_gbytes_per_s(device_kind: str) -> float | None:
  kind = device_kind.upper()
  return next((bw for name, bw in PEAK_HBM_GBYTES_PER_S if name in kind), None)


def peak_tflops(device_kind: str, override: float = 0.0) -> float | None:
  if override > 0:
    return override
  kind = device_kind.upper()
  return next((peak for name, peak in PEAK_BF16_TFLOPS if name in kind), None)


def device_memory_limit(device: jax.Device) -> int | None:
  """Bytes the allocator may hand out on `device`, or None where the backend does not say (CPU)."""
  stats = device.memory_stats() or {}
  return stats.get("bytes_limit")


def peak_memory(devices) -> int | None:
  """Largest peak bytes in use over `devices` since the process started, None if unknown."""
  peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in devices]
  peaks = [p for p in peaks if p is not None]
  return max(peaks) if peaks else None


def expected_memory(compiled) -> int | None:
  """What XLA plans to hold on one device for one call of `compiled` (arguments, outputs and
  temporaries, less the outputs that reuse donated arguments)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # some backends do not implement it
    return None
  if m is None:
    return None
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)


def time_steps(step: Callable, state, batch, n: int, on_step: Callable[[int, float, float], None]):
  """Runs `n` steps and returns (state, per-step seconds, losses).

  Step i is timed from the moment step i-1's loss is ready to the moment its own is, while
  step i+1 is already queued, so the device never waits for the host between steps and no
  host dispatch time is counted. The first step is timed from the call.
  """
  times, losses = [], []
  start = time.perf_counter()
  pending = None
  for i in range(n + 1):
    if i < n:
      state, metrics = step(state, batch)
    if pending is not None:
      loss = float(pending["loss"])  # blocks until step i-1 is done
      now = time.perf_counter()
      times.append(now - start)
      losses.append(loss)
      start = now
      on_step(i - 1, times[-1], loss)
    pending = metrics if i < n else None
  return state, times, losses


def summarize(times: list[float]) -> dict:
  return {"median": statistics.median(times), "min": min(times), "max": max(times),
          "mean": statistics.fmean(times),
          "stdev": statistics.stdev(times) if len(times) > 1 else 0.0}
