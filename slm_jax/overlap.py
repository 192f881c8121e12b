"""The communication a compiled multi-GPU step leaves exposed, from its schedule: a replay of
the step's instructions in the order XLA runs them, each op timed by its FLOPs and bytes and each
collective by what NCCL achieves for its size on the link.

XLA runs the entry's instructions on one compute stream in the order it prints them; an
asynchronous collective runs from its `-start` to its `-done` on a stream of its own, in start
order (NCCL serialises the collectives of one communicator), and the compute stream waits at the
`-done` for whatever of it is left. What decides how much of it hides is when its kernel can get
onto the GPU, as a trace of 2B ddp on two H200s shows (benchmarks/PERF_NOTES.md section 27): an
NCCL kernel launched before a GEMM keeps its SMs and runs beside the GEMM at its full rate,
while one that comes due (the collective before it ends) once a GEMM is running waits until
the GEMM's last wave frees SMs, about its last GEMM_TAIL of its time; between the memory-bound
kernels around the GEMMs it launches at once. Its kernel then runs to its end, and what is
left of it at its `-done` is exposed.

Where the compute stream has waited at a `-done`, the next collective and the GEMM after the
wait both become ready as that collective ends, and the kernel dispatched first takes the SMs.
In the traces of ZeRO-2 and fsdp_full the GEMM came first in 70 of 76 such races and the
reduce-scatter launched at its end (in 9, halfway through it); in ddp's the all-reduce came
first in 36 of 40 (2.5-4.4 us after the one before it, the GEMM 5-7 us) and ran beside it. A
collective of a kind in GEMM_FIRST_KINDS that comes due that way waits for the whole GEMM.

  exposed = replay(hlo_text, compute_s, gpu, link, num_devices).exposed_s

Op times are the roofline's, max(FLOPs / peak, bytes / HBM bandwidth), scaled together so the
step's compute adds up to `compute_s` (the predictor's one-GPU compute). A collective's time is
the link's measured cost for its kind and size (hardware.CollectiveCosts) where the link has
one, else the ring model's.
"""

from __future__ import annotations

import dataclasses

from slm_jax import collectives, hardware, hlo, profile

# The part of a GEMM (or attention kernel), at its end, during which a collective that came due
# while it ran can launch: its last wave. Read from the trace of 2B ddp at batch 48 on two H200s
# (traces/h200x2_2b_b48_ddp_7b812d8.*): the all-reduce due during each 980 us GEMM launched
# 117-122 us before the GEMM's end, on both GPUs. Not fitted on the runs it is checked against;
# `python -m slm_jax.tools.overlap_fit` scores other values on them (PERF_NOTES section 27).
GEMM_TAIL = 0.12

# Collectives whose kernel, due as the compute stream stops waiting for the collective before
# it, loses the race for the SMs to the GEMM dispatched at that moment and launches at the
# GEMM's end: reduce-scatters, in traces of ZeRO-2 at 1B and 2B and fsdp_full at 2B on two
# H200s (PERF_NOTES section 28). No trace shows an all-gather due that way; all-gathers keep
# the default, as all-reduces, which won 36 of 40 such races in ddp at 2B.
GEMM_FIRST_KINDS = ("reduce-scatter",)

@dataclasses.dataclass
class Replay:
  exposed_s: float      # collective time with the compute stream waiting for it
  collectives_s: float  # every collective's time on its own, back to back
  collectives: int
  step_s: float         # the compute stream's end, collectives' waits included
  gemm_tail: float
  # Each collective's exposed seconds, by its -start instruction, in start order (to set
  # beside a trace's: slm_jax.tools.trace_collectives).
  exposed_by_collective: dict[str, float] = dataclasses.field(default_factory=dict)


def collective_seconds(kind: str, nbytes: int, group: int,
                       link: hardware.Interconnect) -> float:
  """One collective's time on `link`: its measured cost where the link has one, else a ring's."""
  if group <= 1:
    return 0.0
  if link.costs is not None:
    return link.costs.seconds(kind, nbytes, group)
  return collectives.ring_seconds(kind, nbytes, group, 1, link, link)


@dataclasses.dataclass
class Program:
  """A compiled step read once for replaying: its entry in order as ("op", roofline seconds,
  is a GEMM or attention kernel, category), ("start", name, collective seconds, kind) and
  ("done", name) events."""
  events: list[tuple]
  roofline_s: float  # the ops' roofline seconds, summed


def program(hlo_text: str, gpu: hardware.GPU, link: hardware.Interconnect,
            num_devices: int) -> Program:
  """The events of a compiled step (GPU HLO text) for `num_devices` devices on `gpu` and `link`."""
  costs = profile.hlo_ops(hlo_text)  # no entry for the instructions that run no kernel
  events, total = [], 0.0
  for instr in hlo.computations(hlo_text).get("ENTRY", []):
    collective = hlo.async_collective(instr["op"])
    if collective and collective[1] == "start":
      moved = collectives.op_of(instr, num_devices)
      events.append(("start", instr["name"],
                     collective_seconds(moved.kind, moved.bytes, moved.group_size, link)
                     if moved else 0.0, moved.kind if moved else collective[0]))
    elif collective:
      events.append(("done", hlo.started(instr)))
    elif (cost := costs.get(instr["name"])) is not None:
      flops = cost.flops or (_attention_flops(instr) if cost.category == "attention" else 0.0)
      seconds = max(flops / (gpu.peak_bf16_tflops * 1e12),
                    cost.bytes / (gpu.hbm_gbytes_per_s * 1e9))
      events.append(("op", seconds, cost.category in ("matmul", "attention"), cost.category))
      total += seconds
  return Program(events, total)


def replay(hlo_text: str, compute_s: float, gpu: hardware.GPU, link: hardware.Interconnect,
           num_devices: int, gemm_tail: float = GEMM_TAIL) -> Replay:
  """The schedule of a compiled step (GPU HLO text) for `num_devices` devices replayed with its
  compute taking `compute_s` in all; see the module's docstring."""
  return replay_program(program(hlo_text, gpu, link, num_devices), compute_s, gemm_tail)


def replay_program(prog: Program, compute_s: float, gemm_tail: float = GEMM_TAIL) -> Replay:
  """`replay` of a step already read by `program` (to replay one step at several tails)."""
  scale = compute_s / prog.roofline_s if prog.roofline_s > 0 else 0.0
  queue: list[list] = []  # [name, seconds left, kind], in start order; the first runs next
  launched = False        # whether the first has its kernel on the GPU
  behind_gemm = False     # whether the first, due as a wait ended, loses the SMs to a GEMM
  finished: set[str] = set()
  by_collective: dict[str, float] = {}
  t = alone = 0.0

  def run(t0: float, dt: float, gemm: bool) -> None:
    """The collectives' progress while the compute stream runs one op over [t0, t0 + dt]."""
    nonlocal launched, behind_gemm
    now, end = t0, t0 + dt
    lost_race, behind_gemm = behind_gemm and gemm, False
    while queue and now < end:
      if not launched:
        # A GEMM that started before the kernel could launch holds every SM until its last
        # wave (to its end where it won the race at a wait's end); one already launched when
        # the GEMM starts keeps its SMs beside it.
        if lost_race:
          return
        if gemm and now > t0:
          now = max(now, end - gemm_tail * dt)
        if now >= end:
          return
        launched = True
      if now + queue[0][1] > end:
        queue[0][1] -= end - now
        return
      now += queue[0][1]
      finished.add(queue.pop(0)[0])
      launched = False

  for event in prog.events:
    if event[0] == "start":
      queue.append([event[1], event[2], event[3]])
      by_collective[event[1]] = 0.0
      alone += event[2]
    elif event[0] == "done":
      waited = False
      while event[1] not in finished and queue:
        name, left, _ = queue.pop(0)
        by_collective[name] += left
        t += left
        finished.add(name)
        launched = False
        waited = True
      if waited:
        behind_gemm = bool(queue) and queue[0][2] in GEMM_FIRST_KINDS
    else:
      dt = event[1] * scale
      if dt > 0:
        run(t, dt, event[2])
      t += dt
  for name, left, _ in queue:  # collectives nothing waits for before the step ends
    by_collective[name] += left
    t += left
  return Replay(sum(by_collective.values()), alone, len(by_collective), t, gemm_tail,
                by_collective)


def _attention_flops(instr: dict) -> float:
  """A fused attention kernel's FLOPs from its output [batch, heads, seq, head_dim]: causal
  attention's two matmuls (4 B H S^2 D / 2) forward, 2.5 times that backward."""
  shapes = hlo.shapes(instr["type"])
  if not shapes or len(shapes[0][1]) != 4:
    return 0.0
  b, h, s, d = shapes[0][1]
  forward = 2.0 * b * h * s * s * d
  return 2.5 * forward if "Backward" in instr["attrs"] else forward
