"""Timing, FLOP accounting, MFU and device memory for a training run."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import jax

from slm_jax import hardware


def peak_gbytes_per_s(device_kind: str) -> float | None:
  """HBM bandwidth of the device's GPU type (slm_jax.hardware), None if unknown."""
  gpu = hardware.from_device_kind(device_kind)
  return gpu.hbm_gbytes_per_s if gpu else None


def peak_tflops(device_kind: str, override: float = 0.0) -> float | None:
  """Dense bf16 peak of the device's GPU type (slm_jax.hardware) unless `override` > 0."""
  if override > 0:
    return override
  gpu = hardware.from_device_kind(device_kind)
  return gpu.peak_bf16_tflops if gpu else None


def peak_fp8_tflops(device_kind: str) -> float | None:
  """Dense FP8 peak of the device's GPU type (slm_jax.hardware); None without FP8 (A100)."""
  gpu = hardware.from_device_kind(device_kind)
  return gpu.peak_fp8_tflops if gpu else None


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
