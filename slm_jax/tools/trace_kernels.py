"""Every kernel of a profiled step, from its trace: time and launches per step, by category.

  python -m slm_jax.tools.trace_kernels <trace.json.gz> [--step <step.hlo.txt.gz>]
      [--category matmul] [--steps 3]

The record's breakdown names each category's five heaviest ops; this lists all of them, so two
compiles of one step can be set side by side kernel by kernel (which GEMM kernels cuBLAS ran,
say: the compiled step names them only by an index into cuBLAS's heuristics, PERF_NOTES section
31). With the kept step (slm_jax.profile.PROGRAM_FILE, beside the trace) kernels the trace ties
to an HLO instruction are listed under that instruction and classed by it; the rest (the
library kernels inside CUDA graphs, where XLA's command buffers are on) by their own names.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

from slm_jax import profile
from slm_jax import schedule as schedule_lib


def kernels(events: list[dict], ops: dict[str, profile.Op], steps: int,
            device: str | None = None) -> list[tuple[str, str, float, float]]:
  """(category, op or kernel name, ms per step, launches per step) of one GPU's timeline (the
  first where `device` is None), heaviest first."""
  ops = dict(ops)  # device_spans adds the kernels it cannot tie to an instruction
  ms: dict[str, float] = collections.defaultdict(float)
  launches: dict[str, int] = collections.defaultdict(int)
  for start, end, name, _ in profile.device_spans(events, ops, device):
    ms[name] += (end - start) / 1e3
    launches[name] += 1
  rows = [(ops[name].category, name.removeprefix("kernel:"), ms[name] / steps,
           launches[name] / steps) for name in ms]
  return sorted(rows, key=lambda r: -r[2])


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("trace", type=Path, help="a profile's trace (.trace.json.gz)")
  ap.add_argument("--step", type=Path, help="the compiled step it ran (step.hlo.txt[.gz])")
  ap.add_argument("--steps", type=int, default=3,
                  help="steps the trace holds: the run's --config.profile_steps (the campaigns in "
                       "benchmarks/ profile 3)")
  ap.add_argument("--category", choices=profile.CATEGORIES, help="list only this category")
  ap.add_argument("--device", help="the GPU timeline to read (default: the first)")
  args = ap.parse_args(argv)
  if args.steps < 1:
    print("error: --steps must be at least 1", file=sys.stderr)
    return 2
  try:
    events = profile.trace_events(args.trace)
    ops = profile.hlo_ops(schedule_lib.read(args.step)) if args.step else {}
  except (OSError, EOFError, ValueError) as e:
    print(f"error: cannot read {getattr(e, 'filename', None) or args.trace}: {e}",
          file=sys.stderr)
    return 2
  gpus = profile.gpu_timelines(events)
  if args.device and args.device not in gpus:
    print(f"error: --device={args.device}: the trace's GPU timelines are {sorted(gpus)}",
          file=sys.stderr)
    return 2
  rows = [r for r in kernels(events, ops, args.steps, args.device)
          if not args.category or r[0] == args.category]
  total = sum(r[2] for r in rows)
  print(f"{'category':<17} {'ms/step':>8} {'share':>6} {'launches':>8}  kernel or op")
  for category, name, ms, n in rows:
    print(f"{category:<17} {ms:>8.2f} {100 * ms / total if total else 0:>5.1f}% {n:>8.1f}  "
          f"{name}")
  print(f"{'total':<17} {total:>8.2f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
