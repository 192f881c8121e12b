"""Where the compiled step waits for its collectives: the work XLA's schedule places between
each asynchronous collective's start and its done.

A profile says how long a step waited; the schedule says why. XLA runs the instructions of a
compiled step's entry in the order it prints them; a collective runs from its `-start` to its
`-done`, and only the compute printed between the two can hide it. The compiled text of a
profiled run is kept beside its trace (slm_jax.profile.PROGRAM_FILE):

  python -m slm_jax.schedule <workdir>/profile/<run_id>/plugins/profile/<time>/step.hlo.txt.gz
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import statistics
import sys
from pathlib import Path

from slm_jax import hlo, profile


@dataclasses.dataclass
class Window:
  """One asynchronous collective: what it moves and what the schedule runs beside it."""
  kind: str  # all-reduce, all-gather, ...
  name: str  # its -start instruction
  bytes: int  # of its result, per device
  position: int  # of its -start among the entry's instructions
  ops: int  # instructions that run between its start and its done (fusions, GEMMs, ...)
  gemms: int  # of them, matrix multiplies
  in_flight: int  # other collectives started and not yet done when it starts


def windows(hlo_text: str) -> list[Window]:
  """Every asynchronous collective of the module's entry, in schedule order."""
  entry = hlo.computations(hlo_text).get("ENTRY", [])
  costs = profile.hlo_ops(hlo_text)
  open_at: dict[str, int] = {}
  out: dict[str, Window] = {}
  for k, instr in enumerate(entry):
    op = instr["op"]
    collective = hlo.async_collective(op)
    if collective and collective[1] == "start":
      out[instr["name"]] = Window(collective[0], instr["name"],
                                  hlo.nbytes(hlo.async_result(op, instr["type"])[0]),
                                  k, 0, 0, len(open_at))
      open_at[instr["name"]] = k
    elif collective:
      open_at.pop(hlo.started(instr), None)
    elif op not in hlo.NO_KERNEL and not op.endswith(("-start", "-done")):
      for name in open_at:
        out[name].ops += 1
        out[name].gemms += costs.get(instr["name"]) is not None and \
            costs[instr["name"]].category == "matmul"
  return list(out.values())


def summary(ws: list[Window]) -> dict[str, dict]:
  """Per kind: how many, and the spread of the instructions and GEMMs each overlaps."""
  out = {}
  for kind in sorted({w.kind for w in ws}):
    of = [w for w in ws if w.kind == kind]
    gemms = [w.gemms for w in of]
    out[kind] = {
        "count": len(of),
        "megabytes": sum(w.bytes for w in of) / 1e6,
        "ops_between_median": statistics.median(w.ops for w in of),
        "gemms_between_median": statistics.median(gemms),
        "gemms_between_min": min(gemms),
        "gemms_between_max": max(gemms),
        "with_at_most_one_gemm": sum(g <= 1 for g in gemms),
        "max_in_flight": 1 + max(w.in_flight for w in of),
    }
  return out


def read(path: Path) -> str:
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "rt") as f:
    return f.read()


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("program", type=Path, help="a compiled step's HLO text (.txt or .txt.gz)")
  ap.add_argument("--each", action="store_true", help="also list every collective")
  args = ap.parse_args(argv)
  try:
    ws = windows(read(args.program))
  except (OSError, EOFError, UnicodeDecodeError) as e:  # missing, cut short, not text
    print(f"error: cannot read {args.program}: {e}", file=sys.stderr)
    return 2
  if not ws:
    print(f"{args.program}: no asynchronous collectives (a one-device step, or not compiled "
          "HLO text)")
    return 0
  print(f"{'collective':<20} {'count':>5} {'MB':>9} {'ops between':>11} "
        f"{'GEMMs between (min/median/max)':>31} {'<=1 GEMM':>8} {'in flight':>9}")
  for kind, s in summary(ws).items():
    print(f"{kind:<20} {s['count']:>5} {s['megabytes']:>9.1f} {s['ops_between_median']:>11} "
          f"{s['gemms_between_min']:>11}/{s['gemms_between_median']}/{s['gemms_between_max']:<10}"
          f"{s['with_at_most_one_gemm']:>16} {s['max_in_flight']:>9}")
  if args.each:
    for w in ws:
      print(f"{w.position:>6} {w.name:<28} {w.bytes / 1e6:9.2f} MB  ops {w.ops:>4}  "
            f"GEMMs {w.gemms:>3}  in flight {w.in_flight}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
