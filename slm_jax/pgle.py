"""Profile-guided scheduling: the step compiled again with the op times of its own profile.

XLA's latency-hiding scheduler places each collective's start and done so that compute covers
the time it *estimates* the collective takes. Its default estimate comes from a model of the
link, not from the GPU beside it: on two H200s it gave each ~25 MB gradient all-reduce of 2B
ddp one backward GEMM to hide behind, while the all-reduce, slowed by the GEMM it shares the
SMs and HBM with, ran longer, so the next GEMM waited (benchmarks/PERF_NOTES.md, section 19).
Given a profile (`xla_gpu_pgle_profile_file_or_directory_path`), the scheduler uses the measured
time of every op instead: PGLE, profile-guided latency estimation.

jax's automatic PGLE works through `jax.jit`'s dispatch; slm_jax compiles its step ahead of
time, so the profile is taken and handed to the compiler here.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
from jax.experimental import profiler as jax_profiler

from slm_jax.errors import UserError

PROFILE_FILE = "pgle_profile.pb"  # XLA reads a file ending .pb as a binary proto
OPTION = "xla_gpu_pgle_profile_file_or_directory_path"


def check_platform(c, devices) -> None:
  """PGLE reads CUDA kernel times; elsewhere asking for it is a config to change."""
  platform = devices[0].platform
  if c.get("pgle_steps", 0) and platform != "gpu":
    raise UserError(f"--config.pgle_steps={c.pgle_steps} needs NVIDIA GPUs (XLA schedules from "
                    f"the profile's CUDA kernel times); this run's devices are {platform}: set "
                    "--config.pgle_steps=0")


def profile_op_times(step, state, batch, steps: int, logdir: Path):
  """Runs `steps` steps under the profiler; (state, serialized ProfiledInstructionsProto).

  The proto holds each HLO instruction's measured time; it is empty where the profiler saw no
  CUDA kernels (another CUPTI client, such as Nsight Systems, holds the GPU's counters).
  """
  logdir.mkdir(parents=True, exist_ok=True)
  jax.block_until_ready(state)
  jax.profiler.start_trace(str(logdir))
  try:
    for _ in range(steps):
      state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
  finally:
    jax.profiler.stop_trace()
  runs = sorted(logdir.glob("plugins/profile/*"), key=lambda p: p.stat().st_mtime)
  if not runs:
    raise RuntimeError(f"the profiler wrote nothing under {logdir}")
  return state, jax_profiler.get_profiled_instructions_proto(str(runs[-1]))


def write_profile(proto: bytes, logdir: Path) -> Path:
  if not proto:
    raise UserError("the profile gave XLA no op times (is another CUPTI client, such as Nsight "
                    "Systems, attached?): run without it or set --config.pgle_steps=0")
  path = logdir / PROFILE_FILE
  path.write_bytes(proto)
  return path


def recompile(compile_fn, path: Path) -> tuple[object, dict]:
  """`compile_fn(extra_options)` with the profile; (compiled, what the record keeps)."""
  t0 = time.perf_counter()
  compiled = compile_fn({OPTION: str(path)})
  return compiled, {"profile": str(path), "profile_bytes": path.stat().st_size,
                    "compile_s": time.perf_counter() - t0}
