"""Profile-guided scheduling: the step compiled again with the op times of its own profile.

XLA's latency-hiding scheduler places each collective's start and done so that compute covers
the time it *estimates* the collective takes. Its default estimate comes from a model of the
link, not from the GPU beside it: on two H200s it gave each ~25 MB gradient all-reduce of 2B
ddp one backward GEMM to hide behind, while the all-reduce, slowed by the GEMM it shares the
SMs and HBM with, ran longer, so the next GEMM waited (benchmarks/PERF_NOTES.md, section 19).
Given a profile (`xla_gpu_pgle_profile_file_or_directory_path`), the scheduler uses the measured
time of every op instead: PGLE, profile-guided latency estimation.

jax's automatic PGLE works through `jax.jit`'s dispatch; slm_jax compiles its step ahead of
time, so the profile is taken and handed to the compiler here, the way jax does it: the step
that is profiled is compiled without command buffers (kernels replayed inside a CUDA graph
are not tied to their instructions, and the profile would time a few hundred of the ~2,000
instructions of a 2B step: 286 at commit 59928e0), while the step that is timed keeps them.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
from jax.experimental import profiler as jax_profiler

from slm_jax.errors import UserError

PROFILE_FILE = "pgle_profile.pb"  # XLA reads a file ending .pb as a binary proto
OPTION = "xla_gpu_pgle_profile_file_or_directory_path"
PROFILING_OPTIONS = {"xla_gpu_enable_command_buffer": ""}  # for the profiled step only


def check_platform(c, devices) -> None:
  """PGLE reads CUDA kernel times; elsewhere asking for it is a config to change."""
  platform = devices[0].platform
  if c.get("pgle_steps", 0) and platform != "gpu":
    raise UserError(f"--config.pgle_steps={c.pgle_steps} needs NVIDIA GPUs (XLA schedules from "
                    f"the profile's CUDA kernel times); this run's devices are {platform}: set "
                    "--config.pgle_steps=0")
  if c.get("pgle_steps", 0) and jax.process_count() > 1:
    # Each process would schedule its step from its own profile, and the processes'
    # collectives need one schedule.
    raise UserError(f"--config.pgle_steps={c.pgle_steps} runs on one process (any number of "
                    f"its GPUs); this run has {jax.process_count()} processes: set "
                    "--config.pgle_steps=0")


def count_profiled(proto: bytes) -> int:
  """How many instructions a serialized ProfiledInstructionsProto times (its `costs`, field 1,
  read from the wire format: the proto's Python class is not shipped with jaxlib)."""
  count, i = 0, 0

  def varint(i):
    value, shift = 0, 0
    while True:
      byte = proto[i]
      value |= (byte & 0x7F) << shift
      i += 1
      if byte < 0x80:
        return value, i
      shift += 7

  while i < len(proto):
    key, i = varint(i)
    field, wire = key >> 3, key & 7
    if wire == 2:
      length, i = varint(i)
      i += length
    elif wire == 0:
      _, i = varint(i)
    elif wire in (1, 5):
      i += 8 if wire == 1 else 4
    else:
      raise ValueError(f"not a ProfiledInstructionsProto (wire type {wire})")
    count += field == 1
  return count


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


def schedule_from_profile(compile_fn, state, batch, steps: int, logdir: Path,
                          ops_in_step: int):
  """The step compiled (by `compile_fn(extra_options)`) from the op times of `steps` profiled
  steps; (compiled, state, what the record keeps)."""
  t0 = time.perf_counter()
  profiled = compile_fn(PROFILING_OPTIONS)
  state, _ = profiled(state, batch)  # the new executable's first run, outside the profile
  state, proto = profile_op_times(profiled, state, batch, steps, logdir)
  del profiled
  path = write_profile(proto, logdir)
  compiled = compile_fn({OPTION: str(path)})
  return compiled, state, {
      "profile": str(path), "steps": steps, "ops_profiled": count_profiled(proto),
      "ops_in_step": ops_in_step, "seconds": time.perf_counter() - t0}
