"""Fits slm_jax.overlap.GEMM_SHARE, the share of its rate an NCCL collective keeps beside a
GEMM, on profiled multi-GPU records whose compiled steps were kept, and shows how each share
does on the others.

  python -m slm_jax.tools.overlap_fit --records=benchmarks/h200x2_two_gpu.jsonl \
      --schedules=benchmarks/schedules --fit_campaigns=CAMPAIGN[,CAMPAIGN]

Each record's step is replayed with the compute its slowest GPU measured (so the share is fitted
apart from the predictor's compute model) and compared with that GPU's exposed collective time.
The fitted share is the one, in steps of --step, with the smallest mean |log(replayed /
measured)| over the fit campaigns' records that measured at least --min_exposed_ms: below that a
profile's exposed time is within its repeats' spread of zero (100M ddp at batch 256 measured
0.04-1.26 ms on two H200s) and a ratio to it says nothing.
"""

from __future__ import annotations

import math
import sys

from absl import app, flags

from slm_jax import hardware, overlap, predict

_RECORDS = flags.DEFINE_list("records", [], "Result files with profiled multi-GPU records.")
_SCHEDULES = flags.DEFINE_list("schedules", [], "Folders of <run_id>.step.hlo.txt.gz.")
_FIT = flags.DEFINE_list("fit_campaigns", [], "Campaigns to fit on (default: every record).")
_STEP = flags.DEFINE_float("step", 0.05, "Grid step of the shares tried, from 0 to 1.")
_MIN = flags.DEFINE_float("min_exposed_ms", 0.5, "Fit only on records exposing at least this.")


def cases(records: list[dict], folders: list[str]) -> list[tuple[dict, overlap.Program, float,
                                                                   float]]:
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
    # Read once: every share replays the same events.
    prog = overlap.program(kept.text, gpu, hardware.interconnect(gpu.intra_node),
                           r["num_devices"])
    out.append((r, prog, slow["compute_ms"] / 1e3 * scale, predict.measured_exposed_s(r)))
  return out


def replayed(case, share: float) -> float:
  _, prog, compute_s, _ = case
  return overlap.replay_program(prog, compute_s, share).exposed_s


def run(record_files: list[str], folders: list[str], fit_campaigns: list[str] = (),
        step: float = 0.05, min_exposed_ms: float = 0.5) -> int:
  """Prints each share's score on the fit campaigns' records and the others', the best share,
  and every record replayed at it; 2 where no record can be replayed."""
  try:
    found = cases(predict.read_records(record_files), folders)
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
  shares = [round(i * step, 6) for i in range(int(round(1 / step)) + 1)]

  def score(cs, share):
    logs = [abs(math.log(max(replayed(c, share), 1e-9) / c[3])) for c in usable(cs)]
    return sum(logs) / len(logs) if logs else float("nan")

  print(f"{'share':>6} {'fit: mean |log|':>16} {'others: mean |log|':>19}")
  scores = {}
  for share in shares:
    scores[share] = score(fit, share)
    print(f"{share:>6.2f} {scores[share]:>16.3f} {score(rest, share):>19.3f}")
  best = min(shares, key=lambda s: scores[s])
  print(f"\nbest share on the {len(usable(fit))} fit records: {best:g} "
        f"(slm_jax.overlap.GEMM_SHARE is {overlap.GEMM_SHARE:g})\n")
  print(f"{'record':<14} {'campaign':<36} {'tag':<30} {'measured ms':>11} {'replayed ms':>11} "
        f"{'error':>7}")
  for c in sorted(found, key=lambda c: (c in rest, c[0].get("tag") or "")):
    got = replayed(c, best)
    print(f"{c[0]['run_id']:<14} {c[0].get('campaign', '')[:36]:<36} "
          f"{(c[0].get('tag') or '')[:30]:<30} {c[3] * 1e3:>11.2f} {got * 1e3:>11.2f} "
          f"{100 * (got / c[3] - 1):>+6.0f}%")
  return 0


def main(argv) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  return run(_RECORDS.value, _SCHEDULES.value, _FIT.value, _STEP.value, _MIN.value)


if __name__ == "__main__":
  sys.exit(app.run(main))
