"""Where a training step's time goes: a jax.profiler trace of a few steps, read back and split
into matmuls, attention, collectives, norms/elementwise, loss, optimizer update and idle time.

Each op in the trace is matched to its instruction in the compiled step's HLO, which names its
category (by opcode and by the `jax.named_scope` the model and step put around attention, the
loss and the optimizer) and its FLOPs and bytes. Ops on different streams or threads can run at
once, so time is split exclusively: every instant of the profiled window is shared equally by
the ops running then, and instants with none running are idle (host work, launch gaps). The
categories therefore add up to the window, which is the step time times the steps profiled.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import re
import time
from pathlib import Path

import jax

from slm_jax import hlo

CATEGORIES = ("matmul", "attention", "collectives", "norm/elementwise", "loss", "optimizer",
              "idle/host")
SCOPES = (("attention", "attention"), ("cross_entropy", "loss"), ("optimizer", "optimizer"))


@dataclasses.dataclass
class Op:
  category: str
  flops: float = 0.0
  bytes: float = 0.0
  op_name: str = ""


def _dot_flops(instr: dict, types: dict[str, str]) -> float:
  """2 x output elements x contracted size, for a `dot` (contracting dims in its attributes)
  or a library GEMM (cuBLAS custom calls: in their backend config's dot_dimension_numbers)."""
  out = hlo.shapes(instr["type"])
  operands = hlo.operands(instr)
  contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", instr["attrs"])
  dims = contracting[1] if contracting else None
  if dims is None and (gemm := re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]',
                                          instr["attrs"])):
    dims = gemm[1].replace('"', "")
  lhs = hlo.shapes(hlo.operand_type(operands[0], types)) if operands else []
  if not out or not lhs or dims is None:
    return 0.0
  k = math.prod(lhs[0][1][int(i)] for i in dims.split(",") if i.strip())
  return 2.0 * math.prod(out[0][1]) * k


def hlo_ops(hlo_text: str) -> dict[str, Op]:
  """{instruction name: Op} for the instructions that run (fusion bodies folded into their
  fusion), with categories, FLOPs (matmuls) and the bytes their operands and results span."""
  comps = hlo.computations(hlo_text)
  types = {i["name"]: i["type"] for instrs in comps.values() for i in instrs}
  fused = {c for instrs in comps.values() for i in instrs if i["op"] == "fusion"
           for c in re.findall(r"calls=%([\w.\-]+)", i["attrs"])}
  ops = {}
  for comp, instrs in comps.items():
    if comp in fused:
      continue
    for i in instrs:
      if i["op"] in hlo.NO_KERNEL:
        continue
      body = []
      for c in re.findall(r"calls=%([\w.\-]+)", i["attrs"]):
        body += comps.get(c, [])
      target = re.search(r'custom_call_target="([^"]+)"', i["attrs"])
      target = target[1] if target else ""
      gemm = target.startswith("__cublas")
      dots = [b for b in [i] + body if b["op"] in ("dot", "convolution")] + [i] * gemm
      flops = sum(_dot_flops(d, types) for d in dots)
      op_name = re.search(r'op_name="([^"]*)"', i["attrs"])
      op_name = op_name[1] if op_name else ""
      # A cuBLAS call's result is (output, workspace); the workspace is scratch, not traffic.
      result = hlo.operand_type(f"{i['name']}#0" if gemm else i["name"], types)
      nbytes = hlo.nbytes(result) + sum(hlo.nbytes(hlo.operand_type(o, types))
                                        for o in hlo.operands(i))
      ops[i["name"]] = Op(_category(i["op"], target, op_name, bool(dots)), flops, nbytes,
                          op_name)
  return ops


def _category(opcode: str, target: str, op_name: str, has_dot: bool) -> str:
  if opcode.replace("-start", "").replace("-done", "") in hlo.COLLECTIVES:
    return "collectives"
  if "fmha" in target or "cudnn" in target.lower():
    return "attention"
  for scope, category in SCOPES:
    if f"/{scope}/" in op_name or op_name.endswith(f"/{scope}") or f"({scope})" in op_name:
      return category
  if has_dot or "gemm" in target or "matmul" in target:
    return "matmul"
  return "norm/elementwise"


def capture(step, state, batch, steps: int, logdir: Path):
  """Runs `steps` steps under the profiler; (state, trace file, wall seconds per step)."""
  logdir.mkdir(parents=True, exist_ok=True)
  jax.block_until_ready(state)
  jax.profiler.start_trace(str(logdir), create_perfetto_trace=True)
  t0 = time.perf_counter()
  try:
    for i in range(steps):
      with jax.profiler.StepTraceAnnotation("train", step_num=i):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    wall = (time.perf_counter() - t0) / steps
  finally:
    jax.profiler.stop_trace()
  traces = sorted(logdir.glob("plugins/profile/*/*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
  if not traces:
    raise RuntimeError(f"the profiler wrote no trace under {logdir}")
  return state, traces[-1], wall


PROGRAM_FILE = "step.hlo.txt.gz"


def save_program(hlo_text: str, trace: Path) -> Path:
  """Writes the compiled step's HLO text, gzipped, beside its trace; returns the path."""
  path = Path(trace).parent / PROGRAM_FILE
  with gzip.open(path, "wt") as f:
    f.write(hlo_text)
  return path


def kernel_category(kernel: str) -> str:
  """A category from a GPU kernel's own name, for kernels the trace does not tie to an HLO
  instruction (library kernels launched inside a CUDA graph, say)."""
  k = kernel.lower()
  if "nccl" in k:
    return "collectives"
  if any(s in k for s in ("fmha", "sdpa", "flash", "attention", "cudnn")):
    return "attention"
  if any(s in k for s in ("gemm", "nvjet", "xmma", "cutlass", "matmul", "wgmma")):
    return "matmul"
  return "norm/elementwise"


def gpu_timelines(events: list[dict]) -> dict[str, int]:
  """{device name: trace pid} of the GPU timelines in a trace, in device order. A GPU that ran
  nothing is left out: a CPU run on a machine with a GPU plugin (JAX_PLATFORMS=cpu) names the
  GPU with no events, and its ops are the host's."""
  busy = {e.get("pid") for e in events if e.get("ph") == "X"}
  gpus = {str((e.get("args") or {}).get("name", "")): e.get("pid") for e in events
          if e.get("ph") == "M" and e.get("name") == "process_name"
          and "GPU" in str((e.get("args") or {}).get("name", "")) and e.get("pid") in busy}
  number = lambda name: int(m[1]) if (m := re.search(r"(\d+)$", name)) else -1
  return {name: gpus[name] for name in sorted(gpus, key=lambda n: (number(n), n))}


def device_spans(events: list[dict], ops: dict[str, Op],
                 device: str | None = None) -> list[tuple[float, float, str, str]]:
  """(start us, end us, op name, kernel name) of the step's ops in a trace. Where the trace has
  GPU timelines, only one GPU's events count (`device`, else the first: every device runs the
  same step, time on several would overlap, and the host's launch events would count twice):
  each is matched to its HLO instruction by the `hlo_op` the profiler attaches, else by the
  kernel name XLA derives from the instruction's ('.' and '-' become '_'), else it becomes an
  op of its own, classed by its kernel name. Without GPU timelines (CPU), events named after
  HLO instructions are the ops."""
  gpus = gpu_timelines(events)
  gpu_pids = {gpus[device or next(iter(gpus))]} if gpus else set()
  sanitized = {re.sub(r"[.\-]", "_", name): name for name in ops}
  spans = []
  for e in events:
    if e.get("ph") != "X" or not e.get("dur"):
      continue
    if gpu_pids and e.get("pid") not in gpu_pids:
      continue
    raw = e.get("name", "")
    name = (e.get("args") or {}).get("hlo_op") or raw
    name = name if name in ops else sanitized.get(raw)
    if name is None:
      if not gpu_pids:
        continue
      name = f"kernel:{raw[:200]}"
      ops.setdefault(name, Op(kernel_category(raw), op_name=raw[:200]))
    spans.append((float(e["ts"]), float(e["ts"]) + float(e["dur"]), name, raw))
  return spans


def trace_events(path: Path) -> list[dict]:
  """The events of a profiler trace (`.trace.json.gz`, or uncompressed `.json`)."""
  with gzip.open(path, "rt") if str(path).endswith(".gz") else open(path) as f:
    data = json.load(f)
  return data["traceEvents"] if isinstance(data, dict) else data


def breakdown(trace_path: Path, ops: dict[str, Op], steps: int, peak_tflops: float | None = None,
              peak_gbytes_per_s: float | None = None, top: int = 8,
              top_per_category: int = 5) -> dict:
  """The record's `breakdown` field: ms and % of a step per category, the heaviest ops, and
  the heaviest few of each category (the GEMMs fill the overall list, and a category's own
  list is what says which fusion to work on)."""
  events = trace_events(trace_path)
  ops = dict(ops)  # device_spans adds the kernels it cannot tie to an instruction
  spans = device_spans(events, ops)
  if not spans:
    raise ValueError(f"no op of the compiled step found in {trace_path}")
  intervals = list(_intervals(spans))
  per_cat = {c: 0.0 for c in CATEGORIES}
  per_op: dict[str, float] = {}
  for width, active in intervals:
    if not active:
      per_cat["idle/host"] += width
      continue
    for _, _, name, _ in active:
      per_cat[ops[name].category] += width / len(active)
      per_op[name] = per_op.get(name, 0.0) + width / len(active)
  first = _collective_times(intervals, ops, steps)
  window_us = max(e for _, e, _, _ in spans) - min(s for s, _, _, _ in spans)
  step_ms = window_us / 1e3 / steps
  ms = {c: v / 1e3 / steps for c, v in per_cat.items()}
  # Each op's own (inclusive) time and runs, for its achieved rates. One run of an op can be
  # several kernels (a cuBLAS GEMM's workspace memset, its split-K reduction), so an op ran as
  # often as its most launched kernel.
  busy, kernel_runs = {}, {}
  for s, e, name, kernel in spans:
    busy[name] = busy.get(name, 0.0) + (e - s)
    kernel_runs[name, kernel] = kernel_runs.get((name, kernel), 0) + 1
  runs = {}
  for (name, _), n in kernel_runs.items():
    runs[name] = max(runs.get(name, 0), n)

  def describe(name: str) -> dict:
    op, seconds = ops[name], busy[name] / 1e6 / steps
    # An instruction's FLOPs and bytes are one launch's. A name can launch several times a
    # step: inside a loop, or as XLA's one kernel for identical fusions (the layers' copies of
    # an op), which the trace shows under the first one's name.
    per_step = runs[name] / steps
    tflops = op.flops * per_step / seconds / 1e12 if op.flops else None
    gbs = op.bytes * per_step / seconds / 1e9
    return {
        "op": name, "category": op.category, "ms": per_op[name] / 1e3 / steps,
        "launches_per_step": per_step, "tflops": tflops, "gbytes_per_s": gbs,
        "tflops_of_peak": tflops / peak_tflops if tflops and peak_tflops else None,
        "bandwidth_of_peak": gbs / peak_gbytes_per_s if peak_gbytes_per_s else None,
        "op_name": op.op_name[-120:]}

  ranked = sorted(per_op, key=per_op.get, reverse=True)
  by_category = {}
  for name in ranked:
    group = by_category.setdefault(ops[name].category, [])
    if len(group) < top_per_category:
      group.append(describe(name))
  # The matmuls' achieved rate over their share of the step; unknown (None) unless the trace
  # ties every GEMM to its instruction (inside CUDA graphs, a kernel is known only by its graph).
  matmuls = [n for n in runs if ops[n].category == "matmul"]
  matmul_tflops = None
  if matmuls and all(ops[n].flops for n in matmuls):
    matmul_flops = sum(ops[n].flops * runs[n] / steps for n in matmuls)
    matmul_tflops = matmul_flops / (ms["matmul"] / 1e3) / 1e12
  out = {"step_ms": step_ms, "steps": steps, "ms": ms, "matmul_tflops": matmul_tflops,
         # The first GPU's: time some collective runs, the part of it hidden behind compute,
         # and the rest, which that GPU waits for.
         **{k: v for k, v in first.items() if k.startswith("collectives_")},
         "percent": {c: 100 * v / step_ms for c, v in ms.items()},
         "top_ops": [describe(name) for name in ranked[:top]],
         "top_ops_by_category": by_category, "trace": str(trace_path)}
  # Every GPU's, where the trace has several. A collective ends on every device together, so a
  # device whose compute finishes first waits at it for the others: that wait shows as exposed
  # collective time on the faster device and not on the slowest. The spread of the devices'
  # compute time per step (`compute_skew_ms`) tells that wait apart from communication nothing
  # hides, which is about the slowest device's exposed time.
  gpus = list(gpu_timelines(events))
  devices = [(gpus[0], first)] if gpus else []
  timelines = {gpus[0]: spans} if gpus else {}
  for name in gpus[1:]:
    if other := device_spans(events, ops, name):
      devices.append((name, _collective_times(list(_intervals(other)), ops, steps)))
      timelines[name] = other
  if len(devices) > 1:
    waiting = _waiting_for_peers(timelines, ops, steps)
    out["per_device"] = [{"device": name, "compute_ms": t["compute_ms"],
                          "collectives_busy_ms": t["collectives_busy_ms"],
                          "collectives_exposed_ms": t["collectives_exposed_ms"],
                          "collectives_waiting_ms": waiting[name]}
                         for name, t in devices]
    compute = [t["compute_ms"] for _, t in devices]
    out["compute_skew_ms"] = max(compute) - min(compute)
  return out


def _intervals(spans: list[tuple[float, float, str, str]]):
  """(width us, the spans running) for each elementary interval between the spans' start and
  end points, in time order."""
  points = sorted({t for s, e, _, _ in spans for t in (s, e)})
  starts = sorted(spans)
  active: list[tuple[float, float, str, str]] = []
  j = 0
  for a, b in zip(points, points[1:]):
    k = j
    while j < len(starts) and starts[j][0] <= a:
      j += 1
    # A new list each time: a caller may keep the ones it was given.
    active = [s for s in active + starts[k:j] if s[1] > a]
    yield b - a, active


def _collective_times(intervals, ops: dict[str, Op], steps: int) -> dict[str, float]:
  """ms per step with some non-collective op running (`compute_ms`), with some collective
  running (`collectives_busy_ms`), the part of the latter with a non-collective op beside it
  (`collectives_overlapped_ms`) and the rest (`collectives_exposed_ms`), over one timeline's
  `_intervals`."""
  compute = busy = overlapped = 0.0
  for width, active in intervals:
    kinds = {ops[name].category == "collectives" for _, _, name, _ in active}
    compute += width if False in kinds else 0.0
    if True in kinds:
      busy += width
      overlapped += width if False in kinds else 0.0
  ms = lambda us: us / 1e3 / steps
  return {"compute_ms": ms(compute), "collectives_busy_ms": ms(busy),
          "collectives_overlapped_ms": ms(overlapped),
          "collectives_exposed_ms": ms(busy - overlapped)}


def _waiting_for_peers(timelines: dict[str, list], ops: dict[str, Op],
                       steps: int) -> dict[str, float]:
  """ms per step of each device's exposed collective time spent before the last device's
  kernel of the same collective started: waiting for another device to arrive, not moving
  data. Every device runs the same program, so the k-th kernel of a collective op on one
  device is the k-th on each other."""
  starts: dict[tuple, dict[str, float]] = {}
  kernels: dict[str, list] = {}
  for device, spans in timelines.items():
    seen: dict[str, int] = {}
    kernels[device] = []
    for s, e, name, _ in sorted(spans):
      if ops[name].category != "collectives":
        continue
      key = (name, seen.get(name, 0))
      seen[name] = key[1] + 1
      starts.setdefault(key, {})[device] = s
      kernels[device].append((s, e, key))
  out = {}
  for device, spans in timelines.items():
    compute = [(s, e) for s, e, name, _ in spans if ops[name].category != "collectives"]
    wait = 0.0
    for s, e, key in kernels[device]:
      if len(starts[key]) < len(timelines):
        continue
      arrived = min(max(starts[key].values()), e)
      if arrived > s:
        wait += (arrived - s) - covered(compute, s, arrived)
    out[device] = wait / 1e3 / steps
  return out


def covered(intervals: list[tuple[float, float]], a: float, b: float) -> float:
  """How much of [a, b] the union of `intervals` covers."""
  clipped = sorted((max(s, a), min(e, b)) for s, e in intervals if s < b and e > a)
  total, end = 0.0, a
  for s, e in clipped:
    if e > end:
      total += e - max(s, end)
      end = e
  return total
