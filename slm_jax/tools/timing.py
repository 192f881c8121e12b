"""Wall-clock timing of a jitted call, shared by the attention benchmark and tuner and
benchmarks/wgrad_gemm.py."""

from __future__ import annotations

import time

import jax


def time_calls(fn, args, *, runs: int, inner: int, warmup: int) -> tuple[list[float], float]:
  """Seconds per call of `fn(*args)` for each of `runs` runs, and the seconds to compile.

  A run is `inner` calls dispatched back to back and one block_until_ready: the device queue
  stays full, so host dispatch is hidden wherever a call takes longer than dispatching it."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    for _ in range(inner):
      out = fn(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / inner)
  return times, compile_s
