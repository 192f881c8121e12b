"""What a compiled step sends: collectives read from its HLO, and the time a ring would take
on a named interconnect (slm_jax.hardware.INTERCONNECTS).

`bytes` of a collective is the size of the whole tensor it combines, per device: the operand
of an all-reduce or reduce-scatter, the result of an all-gather. A ring over n devices sends
2(n-1)/n of that for an all-reduce and (n-1)/n for the others; `predict_seconds` adds one
latency per ring step.
"""

from __future__ import annotations

import math
import re

import numpy as np

from slm_jax import hardware, hlo

KINDS = hlo.COLLECTIVES

# Op names as HLO prints them (async pairs by their "-start" half; "-done" is not counted).
_KIND_OF_OP = {**{k: k for k in KINDS}, **{f"{k}-start": k for k in KINDS}}


def _group_size(line: str, default: int) -> int:
  if m := re.search(r"replica_groups=\{\{([\d,]+)\}", line):
    return len(m[1].split(","))
  if m := re.search(r"replica_groups=\[\d+,(\d+)\]", line):
    return int(m[1])
  if m := re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line):
    sizes = dict(re.findall(r"'(\w+)'=(\d+)", m[1]))
    return math.prod(int(sizes[a]) for a in re.findall(r"'(\w+)'", m[2]))
  if m := re.search(r"source_target_pairs=\{([^}]*)\}", line):
    return max(2, len(re.findall(r"\{", m[1])) + 1)
  return default


def from_hlo(hlo_text: str, num_devices: int) -> dict[str, dict]:
  """{kind: {"count", "bytes", "ring_bytes"}} per device for one call of the HLO module."""
  out = {k: {"count": 0, "bytes": 0, "ring_bytes": 0.0} for k in KINDS}
  for line in hlo_text.splitlines():
    line = hlo.uncommented(line)
    instr = hlo.instruction(line)
    kind = _KIND_OF_OP.get(instr["op"]) if instr else None
    if kind is None:
      continue
    n = _group_size(line, num_devices)
    result_bytes = hlo.nbytes(instr["type"])
    if kind == "reduce-scatter":  # compiled HLO may print operands without shapes
      size = hlo.nbytes(instr["operands"]) or result_bytes * n
    else:
      size = result_bytes
    if n <= 1:
      continue  # a collective over one device moves nothing
    factor = 2 * (n - 1) / n if kind == "all-reduce" else (n - 1) / n
    if kind == "collective-permute":
      factor = 1.0
    entry = out[kind]
    entry["count"] += 1
    entry["bytes"] += size
    entry["ring_bytes"] += factor * size
    entry.setdefault("group_sizes", set()).add(n)
  for entry in out.values():
    entry["group_sizes"] = sorted(entry.get("group_sizes", ()))
  return out


def predict_seconds(collectives: dict, interconnect: str) -> float:
  """Ring time for every collective of one step, run back to back with no overlap."""
  link = hardware.interconnect(interconnect)
  total = 0.0
  for kind, entry in collectives.items():
    if not entry["count"]:
      continue
    steps_per_op = max(entry["group_sizes"] or [2]) - 1
    if kind == "all-reduce":
      steps_per_op *= 2
    total += entry["ring_bytes"] / (link.gbytes_per_s * 1e9)
    total += entry["count"] * steps_per_op * link.latency_s
  return total


def summarize(collectives: dict, interconnects=("nvlink4", "pcie4", "ib400")) -> dict:
  """The record's `collectives` field: per-kind counts and bytes, and predicted seconds."""
  kinds = {k: {"count": v["count"], "bytes": int(v["bytes"]),
               "ring_bytes": int(np.round(v["ring_bytes"])), "group_sizes": v["group_sizes"]}
           for k, v in collectives.items() if v["count"]}
  return {"per_step": kinds,
          "total_bytes": sum(v["bytes"] for v in kinds.values()),
          "predicted_s": {name: predict_seconds(collectives, name) for name in interconnects}}
