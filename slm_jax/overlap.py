"""The communication a compiled multi-GPU step leaves exposed, from its schedule: a replay of
the step's instructions in the order XLA runs them, each op timed by its FLOPs and bytes and each
collective by what NCCL achieves for its size on the link.

XLA runs the entry's instructions on one compute stream in the order it prints them; an
asynchronous collective runs from its `-start` to its `-done` on a stream of its own, in start
order (NCCL serialises the collectives of one communicator), and the compute stream waits at the
`-done` for whatever of it is left. A trace of two H200s shows what runs beside it
(benchmarks/PERF_NOTES.md section 26): next to a GEMM, which fills every SM, an NCCL kernel makes
little progress; next to the memory-bound kernels between GEMMs it runs at its full rate. So a
collective progresses at GEMM_SHARE of its rate while a GEMM or attention kernel runs and at its
full rate otherwise, and what is left of it at its `-done` is exposed.

  exposed = replay(hlo_text, compute_s, gpu, link, num_devices).exposed_s

Op times are the roofline's, max(FLOPs / peak, bytes / HBM bandwidth), scaled together so the
step's compute adds up to `compute_s` (the predictor's one-GPU compute). A collective's time is
the link's measured cost for its kind and size (hardware.CollectiveCosts) where the link has
one, else the ring model's.
"""

from __future__ import annotations

import dataclasses

from slm_jax import collectives, hardware, hlo, profile

# The share of its full rate an NCCL collective keeps while a GEMM or attention kernel runs
# beside it. Fitted with `python -m slm_jax.tools.overlap_fit` on the seven profiled two-H200 runs
# whose compiled steps were kept before this model was written (campaigns h200x2-torch-new-best-
# batch-2026-11-30 and h200x2-zero2-2026-11-30: 100M-2B, ddp and fsdp_grad_op, batch 32-256): of
# the shares 0, 0.05, ..., 1, the one with the smallest mean |log(replayed / measured)| exposed
# time over the six that exposed at least 0.5 ms. Checked on twelve runs made afterwards
# (benchmarks/PERF_NOTES.md section 26).
GEMM_SHARE = 0.10

@dataclasses.dataclass
class Replay:
  exposed_s: float      # collective time with the compute stream waiting for it
  collectives_s: float  # every collective's time on its own, back to back
  collectives: int
  step_s: float         # the compute stream's end, collectives' waits included
  gemm_share: float


def collective_seconds(kind: str, nbytes: int, group: int,
                       link: hardware.Interconnect) -> float:
  """One collective's time on `link`: its measured cost where the link has one, else a ring's."""
  if group <= 1:
    return 0.0
  if link.costs is not None:
    return link.costs.seconds(kind, nbytes, group)
  factor = 2 * (group - 1) / group if kind == "all-reduce" else (group - 1) / group
  steps = 2 * (group - 1) if kind == "all-reduce" else group - 1
  return factor * nbytes / (link.gbytes_per_s * 1e9) + steps * link.latency_s


@dataclasses.dataclass
class Program:
  """A compiled step read once for replaying: its entry in order as ("op", roofline seconds,
  runs beside a collective at the GEMM share), ("start", name, collective seconds) and ("done",
  name) events."""
  events: list[tuple]
  roofline_s: float  # the ops' roofline seconds, summed


def program(hlo_text: str, gpu: hardware.GPU, link: hardware.Interconnect,
            num_devices: int) -> Program:
  """The events of a compiled step (GPU HLO text) for `num_devices` devices on `gpu` and `link`."""
  costs = profile.hlo_ops(hlo_text)  # no entry for the instructions that run no kernel
  events, total = [], 0.0
  for instr in hlo.computations(hlo_text).get("ENTRY", []):
    op = instr["op"]
    collective = op.endswith(("-start", "-done")) and op.rsplit("-", 1)[0] in hlo.COLLECTIVES
    if collective and op.endswith("-start"):
      line = f"%{instr['name']} = {instr['type']} {op}({instr['operands']}){instr['attrs']}"
      moved = collectives.op(line, num_devices)
      events.append(("start", instr["name"],
                     collective_seconds(moved.kind, moved.bytes, moved.group_size, link)
                     if moved else 0.0))
    elif collective:
      events.append(("done", hlo.operands(instr)[0].partition("#")[0]))
    elif (cost := costs.get(instr["name"])) is not None:
      flops = cost.flops or (_attention_flops(instr) if cost.category == "attention" else 0.0)
      seconds = max(flops / (gpu.peak_bf16_tflops * 1e12),
                    cost.bytes / (gpu.hbm_gbytes_per_s * 1e9))
      events.append(("op", seconds, cost.category in ("matmul", "attention")))
      total += seconds
  return Program(events, total)


def replay(hlo_text: str, compute_s: float, gpu: hardware.GPU, link: hardware.Interconnect,
           num_devices: int, gemm_share: float = GEMM_SHARE) -> Replay:
  """The schedule of a compiled step (GPU HLO text) for `num_devices` devices replayed with its
  compute taking `compute_s` in all; see the module's docstring."""
  return replay_program(program(hlo_text, gpu, link, num_devices), compute_s, gemm_share)


def replay_program(prog: Program, compute_s: float, gemm_share: float = GEMM_SHARE) -> Replay:
  """`replay` of a step already read by `program` (to replay one step at several shares)."""
  scale = compute_s / prog.roofline_s if prog.roofline_s > 0 else 0.0
  queue: list[list] = []  # [name, seconds left] in start order
  finished: set[str] = set()
  t = exposed = alone = 0.0
  count = 0

  def progress(dt: float, rate: float) -> None:
    while dt > 0 and queue and rate > 0:
      need = queue[0][1] / rate
      if need > dt:
        queue[0][1] -= dt * rate
        return
      dt -= need
      finished.add(queue.pop(0)[0])

  for event in prog.events:
    if event[0] == "start":
      queue.append([event[1], event[2]])
      alone += event[2]
      count += 1
    elif event[0] == "done":
      while event[1] not in finished and queue:
        left = queue.pop(0)
        exposed += left[1]
        t += left[1]
        finished.add(left[0])
    else:
      dt = event[1] * scale
      progress(dt, gemm_share if event[2] else 1.0)
      t += dt
  for _, left in queue:  # collectives nothing waits for before the step ends
    exposed += left
    t += left
  return Replay(exposed, alone, count, t, gemm_share)


def _attention_flops(instr: dict) -> float:
  """A fused attention kernel's FLOPs from its output [batch, heads, seq, head_dim]: causal
  attention's two matmuls (4 B H S^2 D / 2) forward, 2.5 times that backward."""
  shapes = hlo.shapes(instr["type"])
  if not shapes or len(shapes[0][1]) != 4:
    return 0.0
  b, h, s, d = shapes[0][1]
  forward = 2.0 * b * h * s * s * d
  return 2.5 * forward if "Backward" in instr["attrs"] else forward
