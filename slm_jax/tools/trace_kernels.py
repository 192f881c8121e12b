"""Every kernel of a profiled step, from its trace: time and launches per step, by category.

  python -m slm_jax.tools.trace_kernels <trace.json.gz> [--step <step.hlo.txt.gz>]
      [--category matmul] [--steps 3]
  python -m slm_jax.tools.trace_kernels <trace.json.gz> --step <step.hlo.txt.gz> --gemms

The record's breakdown names each category's five heaviest ops; this lists all of them, so two
compiles of one step can be set side by side kernel by kernel (which GEMM kernels cuBLAS ran,
say: the compiled step names them only by an index into cuBLAS's heuristics, PERF_NOTES section
31). With the kept step (slm_jax.profile.PROGRAM_FILE, beside the trace) kernels the trace ties
to an HLO instruction are listed under that instruction and classed by it; the rest (the
library kernels inside CUDA graphs, where XLA's command buffers are on) by their own names.

--gemms lists the step's cuBLAS GEMMs by output shape, contracted length and the index the
compile chose (`selected_algorithm`), with the kernels the trace ran for them: what an index
meant on the host that compiled the step (whether a weight gradient ran split-K, say:
PERF_NOTES section 30).
"""

from __future__ import annotations

import argparse
import collections
import math
import re
import sys
from pathlib import Path

from slm_jax import hlo, profile
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


_ALGORITHM = re.compile(r'"selected_algorithm":"(-?\d+)"')


_REDUCE = "splitKreduce"  # cuBLAS's second kernel of a split-K GEMM


def _short(kernel: str) -> str:
  """A kernel's name without the template arguments and signature library kernels carry."""
  return re.split(r"[<(]", kernel.removeprefix("void "))[0]


def gemms(events: list[dict], hlo_text: str, steps: int, device: str | None = None,
          ops: dict[str, profile.Op] | None = None
          ) -> list[tuple[tuple[int, ...], int, str, int, list[str], float]]:
  """(output dims, contracted length, cuBLAS algorithm index, GEMMs, the kernels the trace ran
  for them, ms per step) of a step's cuBLAS GEMMs, grouped by the first three, heaviest first.
  The index is into cuBLAS's heuristic list for that shape on the host that compiled it.

  Most GEMMs run inside CUDA graphs, where the trace ties a kernel only to its graph, so each
  GEMM kernel (a split-K reduction counts with the GEMM before it) is matched k-th to k-th with
  the entry's GEMMs in schedule order, step after step, as one compute stream runs them
  (ValueError where the trace does not hold `steps` times the step's GEMMs). `ops`: the
  step's profile.hlo_ops, where the caller has them already."""
  ops = profile.hlo_ops(hlo_text) if ops is None else ops
  order: list[tuple[tuple[int, ...], int, str]] = []
  for instr in hlo.computations(hlo_text).get("ENTRY", []):
    if (m := _ALGORITHM.search(instr["attrs"])) and instr["name"] in ops:
      out = tuple(hlo.shapes(instr["type"])[0][1])
      order.append((out, round(ops[instr["name"]].flops / (2 * math.prod(out))), m[1]))
  launched = sorted((span for span in profile.device_spans(events, dict(ops), device)
                     if profile.kernel_category(span[3]) == "matmul" or _REDUCE in span[3]),
                    key=lambda s: s[0])
  main = [s for s in launched if _REDUCE not in s[3]]
  if len(main) != steps * len(order):
    raise ValueError(f"the trace holds {len(main)} GEMM kernels, not {steps} steps x the "
                     f"step's {len(order)} cuBLAS GEMMs: is it this step's trace, of "
                     f"--steps={steps} steps?")
  ms: dict[tuple, float] = collections.defaultdict(float)
  names: dict[tuple, set[str]] = collections.defaultdict(set)
  k = -1
  for start, end, _, kernel in launched:
    k += _REDUCE not in kernel
    key = order[k % len(order)]
    ms[key] += (end - start) / 1e3
    names[key].add(_short(kernel))
  count = collections.Counter(order)
  rows = [(*key, n, sorted(names[key]), ms[key] / steps) for key, n in count.items()]
  return sorted(rows, key=lambda r: (-r[5], r[0], r[2]))


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("trace", type=Path, help="a profile's trace (.trace.json.gz)")
  ap.add_argument("--step", type=Path, help="the compiled step it ran (step.hlo.txt[.gz])")
  ap.add_argument("--steps", type=int, default=3,
                  help="steps the trace holds: the run's --config.profile_steps (the campaigns in "
                       "benchmarks/ profile 3)")
  ap.add_argument("--category", choices=profile.CATEGORIES, help="list only this category")
  ap.add_argument("--device", help="the GPU timeline to read (default: the first)")
  ap.add_argument("--gemms", action="store_true",
                  help="list the cuBLAS GEMMs by shape and algorithm index, with their kernels")
  args = ap.parse_args(argv)
  if args.steps < 1:
    print("error: --steps must be at least 1", file=sys.stderr)
    return 2
  if args.gemms and not args.step:
    print("error: --gemms needs --step: the algorithm indices are in the compiled step",
          file=sys.stderr)
    return 2
  try:
    events = profile.trace_events(args.trace)
    step = schedule_lib.read(args.step) if args.step else None
    ops = profile.hlo_ops(step) if step else {}
  except (OSError, EOFError, ValueError) as e:
    print(f"error: cannot read {getattr(e, 'filename', None) or args.trace}: {e}",
          file=sys.stderr)
    return 2
  gpus = profile.gpu_timelines(events)
  if args.device and args.device not in gpus:
    print(f"error: --device={args.device}: the trace's GPU timelines are {sorted(gpus)}",
          file=sys.stderr)
    return 2
  if args.gemms:
    try:
      rows = gemms(events, step, args.steps, args.device, ops)
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    print(f"{'output':>12} {'contracted':>10} {'algorithm':>9} {'GEMMs':>5} {'ms/step':>8}  "
          "kernels")
    for out, k, algorithm, n, names, ms in rows:
      print(f"{'x'.join(map(str, out)):>12} {k:>10} {algorithm:>9} {n:>5} {ms:>8.2f}  "
            f"{' + '.join(names) or '-'}")
    return 0
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
