"""A profiled multi-GPU step's collectives as its trace shows them, beside slm_jax.overlap's
replay of the same compiled step: what each exposed, where its kernel got onto the GPU, and who
won the SMs when a collective and a GEMM became ready together.

  python -m slm_jax.tools.trace_collectives <trace.json.gz> <step.hlo.txt.gz> [--each]

The trace is a profile's (`<workdir>/profile/<run_id>/.../*.trace.json.gz`, or one kept in
benchmarks/traces) and the step the compiled text kept with it (slm_jax.profile.PROGRAM_FILE,
or benchmarks/schedules/<run_id>.step.hlo.txt.gz). Every profiled step runs the same
collectives in the same order, one NCCL kernel each, so the last step's k-th collective kernel
is the k-th `-start` of the step's entry. For each GPU it prints:

- per ten collectives, the exposed time in the trace (no compute kernel beside it) and in the
  replay run with that GPU's measured compute, and the kernels' time in the trace and alone
  (the link's cost);
- the races at a wait's end (PERF_NOTES section 28): the compute stream waited for one
  collective, and the next collective and a GEMM became ready as it ended; which kernel got
  onto the GPU first, by the next collective's kind;
- where collectives launched inside a GEMM or attention kernel: by kernel, how far into it
  (section 27's GEMM_TAIL was read from these fractions).
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import statistics
import sys
from pathlib import Path

from slm_jax import hardware, hlo, overlap, profile
from slm_jax import schedule as schedule_lib

# A compute kernel that starts this soon after a collective's kernel ends was waiting for it
# (the GEMMs after a wait started 2-7 us after its end in the two-H200 traces of PERF_NOTES
# section 28), one that ended this long before the collective's end had left the compute stream
# idle (us).
_RESUMED_WITHIN_US = 8.0
_IDLE_BEFORE_US = 5.0
# Kernels shorter than this are no GEMM a collective could be held behind (us).
_MIN_GEMM_US = 50.0
# Launch fractions are read only inside kernels at least this long: in shorter ones the launch
# latency alone is a large part of the kernel (us).
_MIN_LAUNCH_GEMM_US = 200.0


@dataclasses.dataclass
class Collective:
  """One collective of the last profiled step on one GPU."""
  name: str              # its -start instruction
  kind: str              # all-reduce, reduce-scatter, ...
  start_us: float
  end_us: float
  exposed_us: float      # of its kernel's time, with no compute kernel running beside it
  replay_exposed_us: float
  alone_us: float        # the link's cost for it, as the replay times it
  launched_in: str | None = None    # the GEMM or attention kernel running when it launched
  launched_at: float | None = None  # how far into that kernel, 0-1


@dataclasses.dataclass
class Race:
  kind: str     # of the collective that came due
  won: bool     # its kernel launched before the GEMM's
  at: float     # where it lost: how far into the GEMM it launched (1.0: at its end)


@dataclasses.dataclass
class Device:
  device: str
  steps: int
  compute_ms: float  # per step, with some compute kernel running
  collectives: list[Collective]
  races: list[Race]


class TraceError(Exception):
  pass


def analyse(events: list[dict], hlo_text: str, gpu: hardware.GPU,
            link: hardware.Interconnect) -> list[Device]:
  """Each GPU timeline of the trace, its last step's collectives set beside the replay's."""
  timelines = list(profile.gpu_timelines(events))
  if not timelines:
    raise TraceError("the trace has no GPU timelines (a CPU profile?)")
  ops = profile.hlo_ops(hlo_text)
  # Every collective of the entry in order: a synchronous one (a scalar's all-reduce) runs a
  # kernel too, on the compute stream, which the replay times as an op.
  starts = []
  for i in hlo.computations(hlo_text).get("ENTRY", []):
    if (c := hlo.async_collective(i["op"])) and c[1] == "start":
      starts.append((i["name"], c[0]))
    elif i["op"] in hlo.COLLECTIVES:
      starts.append((i["name"], i["op"]))
  if not starts:
    raise TraceError("the step has no collectives (a one-device step?)")
  prog = overlap.program(hlo_text, gpu, link, len(timelines))
  alone = {e[1]: e[2] for e in prog.events if e[0] == "start"}
  out = []
  for device in timelines:
    seen = dict(ops)  # device_spans adds the kernels it cannot tie to an instruction
    spans = sorted(profile.device_spans(events, seen, device))
    is_collective = lambda s: s[3].lower().startswith("nccl") or (
        s[2] in seen and seen[s[2]].category == "collectives")
    kernels = [s for s in spans if is_collective(s)]
    compute = [s for s in spans if not is_collective(s)]
    if not kernels or len(kernels) % len(starts):
      raise TraceError(
          f"{device}: {len(kernels)} collective kernels in the trace are not whole steps of "
          f"the compiled step's {len(starts)} collectives: is it the step this trace ran?")
    steps = len(kernels) // len(starts)
    intervals = [(c[0], c[1]) for c in compute]
    compute_us = (profile.covered(intervals, compute[0][0], max(e for _, e in intervals))
                  if compute else 0.0)
    replayed = overlap.replay_program(prog, compute_us / steps * 1e-6)
    last = kernels[-len(starts):]
    begins = [c[0] for c in compute]
    collectives = []
    for (name, kind), (s, e, _, _) in zip(starts, last):
      c = Collective(name, kind, s, e, (e - s) - profile.covered(intervals, s, e),
                     replayed.exposed_by_collective.get(name, 0.0) * 1e6,
                     alone.get(name, 0.0) * 1e6)
      i = bisect.bisect_right(begins, s) - 1
      if i >= 0 and compute[i][0] < s < compute[i][1] and _is_gemm(compute[i], seen) and \
          compute[i][1] - compute[i][0] >= _MIN_LAUNCH_GEMM_US:
        c.launched_in = compute[i][3]
        c.launched_at = (s - compute[i][0]) / (compute[i][1] - compute[i][0])
      collectives.append(c)
    out.append(Device(device, steps, compute_us / steps / 1e3, collectives,
                      _races(collectives, compute, begins, seen)))
  return out


def _is_gemm(span, ops) -> bool:
  category = ops[span[2]].category if span[2] in ops else None
  return category in ("matmul", "attention")


def _races(collectives: list[Collective], compute: list, begins: list[float],
           ops) -> list[Race]:
  """The races at a wait's end among consecutive collectives."""
  out = []
  for before, due in zip(collectives, collectives[1:]):
    end = before.end_us
    # Two streams' timestamps: a kernel recorded up to 1 us before the collective's end still
    # started after it.
    i = bisect.bisect_left(begins, end - 1.0)
    if i >= len(compute) or compute[i][0] > end + _RESUMED_WITHIN_US:
      continue
    gemm = compute[i]
    if not _is_gemm(gemm, ops) or gemm[1] - gemm[0] < _MIN_GEMM_US:
      continue
    # The compute stream must have been idle, waiting, before the collective ended (it runs
    # one kernel at a time, so the last few kernels before this one say).
    if i > 0 and max(c[1] for c in compute[max(0, i - 8):i]) > end - _IDLE_BEFORE_US:
      continue
    if due.start_us < gemm[0]:
      out.append(Race(due.kind, True, 0.0))
    else:
      out.append(Race(due.kind, False, min(1.0, (due.start_us - gemm[0]) / (gemm[1] - gemm[0]))))
  return out


def kernel_shape(events: list[dict]) -> dict[str, str]:
  """{kernel name: its registers and grid} from the trace's kernel details."""
  out = {}
  for e in events:
    details = (e.get("args") or {}).get("kernel_details")
    if details and e.get("name") not in out:
      out[e["name"]] = " ".join(p for p in details.split() if p.startswith(("grid:", "regs:")))
  return out


def report(devices: list[Device], shapes: dict[str, str], each: bool = False) -> str:
  lines = []
  for d in devices:
    cs = d.collectives
    lines.append(f"## {d.device}: {d.steps} steps, compute {d.compute_ms:.1f} ms a step; last "
                 f"step's {len(cs)} collectives exposed {sum(c.exposed_us for c in cs) / 1e3:.2f} "
                 f"ms in the trace, {sum(c.replay_exposed_us for c in cs) / 1e3:.2f} ms replayed")
    lines.append(f"{'from':>5} {'kind':<16} {'n':>3} {'exposed us':>10} {'replayed':>9} "
                 f"{'kernel us':>10} {'alone':>7}")
    groups: dict[tuple, list[Collective]] = {}
    for k, c in enumerate(cs):
      groups.setdefault((k // 10, c.kind), []).append(c)
    for (ten, kind), g in sorted(groups.items()):
      lines.append(f"{ten * 10:>5} {kind:<16} {len(g):>3} {sum(c.exposed_us for c in g):>10.0f} "
                   f"{sum(c.replay_exposed_us for c in g):>9.0f} "
                   f"{sum(c.end_us - c.start_us for c in g):>10.0f} "
                   f"{sum(c.alone_us for c in g):>7.0f}")
    lines.append("races at a wait's end (the due collective's kind: its kernel first / the "
                 "GEMM first, launched how far into it):")
    kinds = sorted({r.kind for r in d.races})
    if not kinds:
      lines.append("  none")
    for kind in kinds:
      rs = [r for r in d.races if r.kind == kind]
      lost = sorted(round(r.at, 2) for r in rs if not r.won)
      lines.append(f"  {kind:<16} {sum(r.won for r in rs):>3} first / {len(lost):>3} behind the "
                   f"GEMM {lost if lost else ''}")
    lines.append("collectives launched inside a GEMM or attention kernel, by kernel (how far "
                 "into it: min / median / max):")
    inside: dict[str, list[Collective]] = {}
    for c in cs:
      if c.launched_in:
        inside.setdefault(c.launched_in, []).append(c)
    if not inside:
      lines.append("  none")
    for kernel, g in sorted(inside.items(), key=lambda x: -len(x[1])):
      at = [c.launched_at for c in g]
      kinds = ",".join(sorted({c.kind for c in g}))
      lines.append(f"  {len(g):>3} {kernel[:56]:<56} {shapes.get(kernel, ''):<24} {kinds:<28} "
                   f"{min(at):.2f} / {statistics.median(at):.2f} / {max(at):.2f}")
    if each:
      lines.append(f"{'#':>4} {'collective':<28} {'kind':<15} {'start us':>12} {'kernel':>7} "
                   f"{'exposed':>8} {'replayed':>8} launched inside")
      t0 = cs[0].start_us
      for k, c in enumerate(cs):
        where = f"{c.launched_at:.2f} of {c.launched_in[:40]}" if c.launched_in else ""
        lines.append(f"{k:>4} {c.name[:28]:<28} {c.kind:<15} {c.start_us - t0:>12.0f} "
                     f"{c.end_us - c.start_us:>7.0f} {c.exposed_us:>8.0f} "
                     f"{c.replay_exposed_us:>8.0f} {where}")
    lines.append("")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("trace", type=Path, help="a profile's trace (.trace.json.gz)")
  ap.add_argument("step", type=Path, help="the compiled step it ran (step.hlo.txt[.gz])")
  ap.add_argument("--gpu", default="h200", choices=sorted(hardware.GPUS),
                  help="the GPU type the trace ran on (times the replay's ops and link)")
  ap.add_argument("--each", action="store_true", help="also list every collective")
  args = ap.parse_args(argv)
  gpu = hardware.GPUS[args.gpu]
  try:
    events = profile.trace_events(args.trace)
    text = schedule_lib.read(args.step)
  except (OSError, EOFError, ValueError) as e:
    print(f"error: cannot read {e.filename if isinstance(e, OSError) else 'the trace'}: {e}",
          file=sys.stderr)
    return 2
  try:
    devices = analyse(events, text, gpu, hardware.interconnect(gpu.intra_node))
  except TraceError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(report(devices, kernel_shape(events), args.each))
  return 0


if __name__ == "__main__":
  sys.exit(main())
