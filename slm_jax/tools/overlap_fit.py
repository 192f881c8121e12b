"""Scores values of slm_jax.overlap.GEMM_TAIL, the last part of a GEMM during which a collective
that came due while it ran can launch, on profiled multi-GPU records whose compiled steps were
kept: the best on the fit campaigns' records, and how each does on the others.

  python -m slm_jax.tools.overlap_fit --records=benchmarks/h200x2_two_gpu.jsonl \
      --schedules=benchmarks/schedules --fit_campaigns=CAMPAIGN[,CAMPAIGN]

Each record's step is replayed with the compute its slowest GPU measured (so the tail is scored
apart from the predictor's compute model) and compared with that GPU's exposed communication
(slm_jax.predict.measured_exposed_s). The best tail is the one, in steps of --step, with the
smallest mean |log(replayed / measured)| over the fit campaigns' records that measured at least
--min_exposed_ms: below that a profile's exposed time is within its repeats' spread of zero
(100M ddp at batch 256 measured 0.04-1.26 ms on two H200s) and a ratio to it says nothing.

--op_times=measured_categories times each kind of op (matmul, attention, norm/elementwise,
loss, optimizer) by what the record's profile measured for that kind, instead of one scale for
every op's roofline time: whether the replay's misses come from the roofline's balance
between GEMMs and memory-bound ops (PERF_NOTES section 30: they do not).
"""

from __future__ import annotations

import math
import sys

from absl import app, flags

from slm_jax import errors, hardware, overlap, predict

_RECORDS = flags.DEFINE_list("records", [], "Result files with profiled multi-GPU records.")
_SCHEDULES = flags.DEFINE_list("schedules", [], "Folders of <run_id>.step.hlo.txt.gz.")
_FIT = flags.DEFINE_list("fit_campaigns", [], "Campaigns to fit on (default: every record).")
_STEP = flags.DEFINE_float("step", 0.02, "Grid step of the tails tried, from 0 to 0.5.")
_MIN = flags.DEFINE_float("min_exposed_ms", 0.5, "Fit only on records exposing at least this.")
_OP_TIMES = flags.DEFINE_enum(
    "op_times", "roofline", ["roofline", "measured_categories"],
    "roofline: every op's roofline time, scaled together to the measured compute (as the "
    "predictor replays); measured_categories: each kind of op scaled to the time the record's "
    "profile measured for that kind.")


def measured_categories(prog: overlap.Program, ms: dict[str, float]) -> overlap.Program:
  """`prog` with each category's ops rescaled so that they add up to `ms` (a profile's ms per
  step by category) in proportion; ops of a category the profile has no time for keep the
  scale of the rest."""
  roofline: dict[str, float] = {}
  for e in prog.events:
    if e[0] == "op":
      roofline[e[3]] = roofline.get(e[3], 0.0) + e[1]
  scale = {c: ms[c] / 1e3 / s for c, s in roofline.items()
           if c != "collectives" and ms.get(c, 0.0) > 0 and s > 0}
  if not scale:
    return prog
  rest = sum(ms[c] / 1e3 for c in scale) / sum(roofline[c] for c in scale)
  events = [("op", e[1] * scale.get(e[3], rest), e[2], e[3]) if e[0] == "op" else e
            for e in prog.events]
  return overlap.Program(events, sum(e[1] for e in events if e[0] == "op"))


def cases(records: list[dict], folders: list[str],
          op_times: str = "roofline") -> list[tuple[dict, overlap.Program, float, float]]:
  """(record, its kept step read for replaying, the slowest GPU's compute s, its exposed s) of
  each profiled multi-GPU record with a kept step and a per-GPU breakdown."""
  out = []
  for r in predict.multi_gpu_records(records):
    b = r.get("breakdown") or {}
    if not b.get("per_device") or predict.gpu_of(r) is None:
      continue
    kept = predict.record_schedule(r, folders)
    if kept is None:
      continue
    slow = max(b["per_device"], key=lambda d: d["compute_ms"])
    # The profiled steps' compute, scaled to the timed median step as measured_exposed_s is.
    scale = r["step_time_s"]["median"] * 1e3 / b["step_ms"]
    gpu = predict.gpu_of(r)
    # Read once: every tail replays the same events.
    prog = overlap.program(kept.text, gpu, hardware.interconnect(gpu.intra_node),
                           r["num_devices"])
    if op_times == "measured_categories":
      prog = measured_categories(prog, b.get("ms") or {})
    out.append((r, prog, slow["compute_ms"] / 1e3 * scale, predict.measured_exposed_s(r)))
  return out


def replayed(case, tail: float) -> float:
  _, prog, compute_s, _ = case
  return overlap.replay_program(prog, compute_s, tail).exposed_s


def run(record_files: list[str], folders: list[str], fit_campaigns: list[str] = (),
        step: float = 0.02, min_exposed_ms: float = 0.5, op_times: str = "roofline") -> int:
  """Prints each tail's score on the fit campaigns' records and the others', the best tail,
  and every record replayed at it and at GEMM_TAIL; 2 where no record can be replayed."""
  try:
    found = cases(predict.read_records(record_files), folders, op_times)
  except predict.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if not found:
    print("error: no profiled multi-GPU record in --records has a kept compiled step in "
          "--schedules (or beside its trace)", file=sys.stderr)
    return 2
  fit = [c for c in found if not fit_campaigns or c[0].get("campaign") in fit_campaigns]
  rest = [c for c in found if c not in fit]
  usable = lambda cs: [c for c in cs if c[3] * 1e3 >= min_exposed_ms]
  tails = [round(i * step, 6) for i in range(int(round(0.5 / step)) + 1)]

  def score(cs, tail):
    logs = [abs(math.log(max(replayed(c, tail), 1e-9) / c[3])) for c in usable(cs)]
    return sum(logs) / len(logs) if logs else float("nan")

  def within(cs, tail):
    return sum(abs(replayed(c, tail) / c[3] - 1) <= 0.15 for c in usable(cs))

  print(f"{'tail':>6} {'fit: mean |log|':>16} {'within 15%':>11} {'others: mean |log|':>19} "
        f"{'within 15%':>11}")
  scores = {}
  for tail in tails:
    scores[tail] = score(fit, tail)
    print(f"{tail:>6.2f} {scores[tail]:>16.3f} {within(fit, tail):>5}/{len(usable(fit)):<5} "
          f"{score(rest, tail):>19.3f} {within(rest, tail):>5}/{len(usable(rest)):<5}")
  best = min(tails, key=lambda s: scores[s])
  print(f"\nbest tail on the {len(usable(fit))} fit records: {best:g} "
        f"(slm_jax.overlap.GEMM_TAIL is {overlap.GEMM_TAIL:g})")
  print(f"at GEMM_TAIL, op times {op_times}: {within(found, overlap.GEMM_TAIL)} of "
        f"{len(usable(found))} records exposing {min_exposed_ms:g} ms or more within 15%\n")
  print(f"{'record':<14} {'campaign':<36} {'tag':<30} {'measured ms':>11} "
        f"{'at ' + format(best, 'g'):>9} {'error':>7} {'at ' + format(overlap.GEMM_TAIL, 'g'):>9} "
        f"{'error':>7}")
  for c in sorted(found, key=lambda c: (c in rest, c[0].get("tag") or "")):
    got, now = replayed(c, best), replayed(c, overlap.GEMM_TAIL)
    print(f"{c[0]['run_id']:<14} {c[0].get('campaign', '')[:36]:<36} "
          f"{(c[0].get('tag') or '')[:30]:<30} {c[3] * 1e3:>11.2f} {got * 1e3:>9.2f} "
          f"{100 * (got / c[3] - 1):>+6.0f}% {now * 1e3:>9.2f} {100 * (now / c[3] - 1):>+6.0f}%")
  return 0


def main(argv) -> int:
  errors.reject_positional(argv)
  return run(_RECORDS.value, _SCHEDULES.value, _FIT.value, _STEP.value, _MIN.value,
             _OP_TIMES.value)


if __name__ == "__main__":
  sys.exit(app.run(main))
