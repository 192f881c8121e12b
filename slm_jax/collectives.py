"""What a compiled step sends: collectives read from its HLO, and the time a ring would take
on a named interconnect (slm_jax.hardware.INTERCONNECTS).

`bytes` of a collective is the size of the whole tensor it combines, per device: the operand
of an all-reduce or reduce-scatter, the result of an all-gather. A ring over n devices sends
2(n-1)/n of that for an all-reduce and (n-1)/n for the others; `predict_seconds` adds one
latency per ring step.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from slm_jax import hardware, hlo

KINDS = hlo.COLLECTIVES

# Op names as HLO prints them (async pairs by their "-start" half; "-done" is not counted).
_KIND_OF_OP = {**{k: k for k in KINDS}, **{f"{k}-start": k for k in KINDS}}


_MESH_GROUPS = re.compile(r"replica_groups=mesh\[(?P<axes>[^\]]*)\]"
                          r"(?:,\s*device_ids=\(\[(?P<ids>[\d,]+)\](?:T\((?P<perm>[\d,]+)\))?\))?"
                          r"\s*\{(?P<over>[^}]*)\}")


def _groups(line: str, num_devices: int) -> list[list[int]] | None:
  """The device groups a collective combines over, as device indices (the positions in the
  step's device assignment); None where the HLO does not say which devices they are."""
  if m := re.search(r"replica_groups=\{(\{[\d,{} ]*\})\}", line):
    return [[int(i) for i in g.split(",") if i.strip()] for g in re.findall(r"\{([\d, ]*)\}",
                                                                          m[1])]
  if m := re.search(r"replica_groups=\[(\d+),(\d+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", line):
    ids = np.arange(math.prod(int(d) for d in m[3].split(","))).reshape(
        [int(d) for d in m[3].split(",")])
    if m[4]:
      ids = ids.transpose([int(d) for d in m[4].split(",")])
    return ids.reshape(int(m[1]), int(m[2])).tolist()
  if m := _MESH_GROUPS.search(line):
    # The mesh's axes over the device ids (an iota, or one reshaped and transposed as
    # device_ids says); each group runs along the named axes.
    axes = re.findall(r"'(\w+)'=(\d+)", m["axes"])
    names, shape = [a for a, _ in axes], [int(s) for _, s in axes]
    ids = np.arange(math.prod(shape))
    if m["ids"]:
      ids = ids.reshape([int(d) for d in m["ids"].split(",")])
      if m["perm"]:
        ids = ids.transpose([int(d) for d in m["perm"].split(",")])
    ids = ids.reshape(shape)
    inner = [names.index(a) for a in re.findall(r"'(\w+)'", m["over"])]
    outer = [i for i in range(len(names)) if i not in inner]
    size = math.prod(shape[i] for i in inner)
    return ids.transpose(outer + inner).reshape(-1, size).tolist()
  if m := re.search(r"source_target_pairs=\{([^}]*)\}", line):
    pairs = re.findall(r"\{(\d+),(\d+)\}", m[1])
    return [sorted({int(i) for pair in pairs for i in pair})] if pairs else None
  if "replica_groups={}" in line:
    return [list(range(num_devices))]
  return None


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


@dataclasses.dataclass(frozen=True)
class Op:
  """One collective of a step: its kind, the bytes of the whole tensor it combines per device
  (see the module's docstring), how many devices it spans and, where the HLO says, which."""
  kind: str
  bytes: int
  group_size: int
  groups: list[list[int]] | None


def op(line: str, num_devices: int) -> Op | None:
  """The collective an HLO line runs (its `-start` where asynchronous), None for any other
  line and for a collective over one device, which moves nothing."""
  instr = hlo.instruction(hlo.uncommented(line))
  return op_of(instr, num_devices) if instr else None


def op_of(instr: dict, num_devices: int) -> Op | None:
  """`op` of an instruction already parsed (slm_jax.hlo.instruction, .computations)."""
  kind = _KIND_OF_OP.get(instr["op"])
  if kind is None:
    return None
  attrs = instr["attrs"]  # the device groups are attributes
  groups = _groups(attrs, num_devices)
  n = len(groups[0]) if groups and kind != "collective-permute" else _group_size(attrs,
                                                                                num_devices)
  result, operand = hlo.async_result(instr["op"], hlo.uncommented(instr["type"]))
  result_bytes = hlo.nbytes(result)
  if kind == "reduce-scatter":  # compiled HLO may print operands without shapes
    size = hlo.nbytes(operand or hlo.uncommented(instr["operands"])) or result_bytes * n
  else:
    size = result_bytes
  return Op(kind, size, n, groups) if n > 1 else None


def ops(hlo_text: str, num_devices: int) -> list[Op]:
  """Every collective of one call of the HLO module over more than one device, in order."""
  return [o for line in hlo_text.splitlines() if (o := op(line, num_devices)) is not None]


def from_hlo(hlo_text: str, num_devices: int) -> dict[str, dict]:
  """{kind: {"count", "bytes", "ring_bytes"}} per device for one call of the HLO module."""
  out = {k: {"count": 0, "bytes": 0, "ring_bytes": 0.0} for k in KINDS}
  for op in ops(hlo_text, num_devices):
    n = op.group_size
    factor = 2 * (n - 1) / n if op.kind == "all-reduce" else (n - 1) / n
    if op.kind == "collective-permute":
      factor = 1.0
    entry = out[op.kind]
    entry["count"] += 1
    entry["bytes"] += op.bytes
    entry["ring_bytes"] += factor * op.bytes
    entry.setdefault("group_sizes", set()).add(n)
  for entry in out.values():
    entry["group_sizes"] = sorted(entry.get("group_sizes", ()))
  return out


def ring_seconds(kind: str, nbytes: float, group: int, nodes: int, intra: hardware.Interconnect,
                 inter: hardware.Interconnect) -> float:
  """One collective over `group` devices spread evenly over `nodes` nodes, as hierarchical
  rings: inside each node over `intra`, then across the nodes over `inter`, one latency per
  ring step. An all-reduce is a reduce-scatter and an all-gather."""
  k = group // nodes
  bi, bo = intra.gbytes_per_s * 1e9, inter.gbytes_per_s * 1e9
  steps = (k - 1) * intra.latency_s + (nodes - 1) * inter.latency_s
  if kind in ("all-gather", "reduce-scatter", "all-reduce"):
    t = (k - 1) / k * nbytes / bi + (nodes - 1) / nodes * nbytes / k / bo + steps
    return 2 * t if kind == "all-reduce" else t
  if kind == "all-to-all":
    return (k - 1) / group * nbytes / bi + (group - k) / group * nbytes / bo + steps
  return nbytes / (bo if nodes > 1 else bi) + steps  # collective-permute


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
