"""What one NCCL collective of a given size costs through XLA on this host's GPUs: the rate the
schedule replay (slm_jax.overlap) times each collective of a compiled step with (the built-in
table, slm_jax.hardware, or this host's with `python -m slm_jax.predict --link_costs=F`).

The ring model's link figure (slm_jax.hardware.INTERCONNECTS, a datasheet's) is what the wires
carry; a collective of a gradient bucket's size gets a fraction of it (NCCL's protocol for the
size, its launch). For each kind (an all-reduce; a reduce-scatter followed by the all-gather
that undoes it, as a ZeRO-2 step pairs them), dtype and size, this runs --reps collectives back
to back in one compiled loop over every local device, each on the previous one's result so none
can be combined or hoisted, and reports the wall time per collective (median of --runs). One
JSON line per (kind, dtype, size, round) is appended to --out:

  python3 benchmarks/link_bandwidth.py --out=F
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python3 benchmarks/link_bandwidth.py \\
      --sizes_mb=1 --reps=2 --runs=2      # seconds, on a CPU
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import sys

import jax
import jax.numpy as jnp
from absl import app, flags
from jax.sharding import NamedSharding, PartitionSpec as P

from slm_jax import results
from slm_jax.tools.timing import time_calls

_OUT = flags.DEFINE_string("out", None, "JSONL file to append records to (none: print only).")
_SIZES = flags.DEFINE_list("sizes_mb", ["0.25", "1", "4", "16", "25", "34", "64", "128", "256"],
                           "Per-device tensor sizes in MB (10^6 bytes): an all-reduce's operand.")
_DTYPES = flags.DEFINE_list("dtypes", ["bfloat16", "float32"], "Element types.")
_KINDS = flags.DEFINE_list("kinds", ["all-reduce", "reduce-scatter+all-gather"],
                           "Collectives to time.")
_REPS = flags.DEFINE_integer("reps", 20, "Collectives per compiled call, each on the last's "
                             "result.")
_RUNS = flags.DEFINE_integer("runs", 10, "Timed calls; the median is reported.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds; each times every size once.")
_CAMPAIGN = results.campaign_flag()

AXIS = "devices"


def chain(kind: str, mesh: jax.sharding.Mesh, reps: int):
  """A jitted call running `reps` collectives of `kind` over the mesh, one after another."""
  def step(x):
    if kind == "all-reduce":
      return jax.lax.psum(x, AXIS)
    shard = jax.lax.psum_scatter(x, AXIS, scatter_dimension=0, tiled=True)
    return jax.lax.all_gather(shard, AXIS, axis=0, tiled=True)

  # The loop's carry is the per-device block either way; an all-reduce's result is the same on
  # every device, which the type check would hold against the carry.
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=P(AXIS), out_specs=P(AXIS),
                     check_vma=False)
  def local(x):
    # Unrolled: a device-side loop adds its condition's round trip to every collective.
    y = x[0]
    for _ in range(reps):
      y = step(y)
    return y[None]

  return jax.jit(local)


def main(_):
  devices = jax.devices()
  n = len(devices)
  if n < 2:
    print(f"error: a collective needs two or more devices; this process sees {n} "
          f"({devices[0].device_kind}). On a CPU, set "
          "XLA_FLAGS=--xla_force_host_platform_device_count=2.", file=sys.stderr)
    return 2
  if _CAMPAIGN.value:
    os.environ[results.CAMPAIGN_ENV] = _CAMPAIGN.value
  mesh = jax.make_mesh((n,), (AXIS,), devices=devices)
  common = dict(device_kind=devices[0].device_kind, num_devices=n,
                git_commit=results.git_commit(), versions=results.versions(devices[0]),
                gpus=results.gpu_identity(), campaign=results.campaign(), reps=_REPS.value)
  calls = {k: chain(k, mesh, _REPS.value) for k in _KINDS.value}
  for r in range(_ROUNDS.value):
    for kind in _KINDS.value:
      for dtype in _DTYPES.value:
        for mb in _SIZES.value:
          itemsize = jnp.dtype(dtype).itemsize
          # A length the devices divide (the reduce-scatter's shards), rounded to 1 KiB.
          elements = max(n * 512, int(float(mb) * 1e6 / itemsize) // (n * 512) * n * 512)
          x = jax.device_put(jnp.ones((n, elements), dtype),
                             NamedSharding(mesh, P(AXIS)))
          times, compile_s = time_calls(calls[kind], (x,), runs=_RUNS.value, inner=1, warmup=1)
          per = statistics.median(times) / _REPS.value
          nbytes = elements * itemsize
          # What each device sends over a ring: 2(n-1)/n of the tensor for an all-reduce, and
          # for a reduce-scatter then an all-gather (n-1)/n each, the same.
          ring = 2 * (n - 1) / n * nbytes
          row = dict(common, kind=kind, dtype=dtype, bytes=nbytes, round=r,
                     median_us=per * 1e6, min_us=min(times) / _REPS.value * 1e6,
                     ring_gbytes_per_s=ring / per / 1e9, compile_s=compile_s,
                     timestamp=results.utc_now())
          print(json.dumps({k: row[k] for k in ("kind", "dtype", "bytes", "round", "median_us",
                                                "ring_gbytes_per_s")}), flush=True)
          if _OUT.value:
            results.append_line(_OUT.value, row)
          del x
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
