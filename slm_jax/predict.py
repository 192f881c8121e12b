r"""Predicts what a config would do on hardware not at hand: tokens/s, Token/Dollar, step,
compute and communication time, and whether it fits, on 1 to 64 GPUs of any type in
slm_jax.hardware, on one node or several, without running it.

  python -m slm_jax.predict --config=configs/1b_h200.py --config.strategy=fsdp_full \
      --num_devices=1,2,4,8,16,32,64 --gpus_per_node=8 --interconnect=nvlink4,ib400 \
      --records=benchmarks/h200_grid.jsonl [--gpu=A100-80GB] [--json]
  python -m slm_jax.predict --check --records=runs/2gpu/results.jsonl   # against measurements
  python -m slm_jax.predict --check --schedules=benchmarks/schedules --records=...

The model, per point of N devices on nodes of G GPUs:
- compute: the median step of the matching one-GPU record (same model, attention, per-device
  batch, sequence length and GPU type; the fastest if several), less the part of the optimizer
  update a sharded optimizer state no longer does on each device. For a GPU type without such a
  record, a profiled record of another type is projected category by category from its
  `breakdown`: matmuls and flash attention by the dense bf16 peaks (the same fraction of peak
  on both GPUs), norms/elementwise, the loss, the optimizer and vanilla (materialised)
  attention by HBM bandwidth, host/idle time unchanged.
- communication: every collective of the step's HLO compiled for the N-device mesh on fake CPU
  devices (collectives.ops). CPU XLA keeps a gradient all-reduce where GPU XLA makes a
  reduce-scatter of the same bytes, so under strategies that shard gradients an all-reduce of
  at least 64 KiB over a gradient's shard group counts as a reduce-scatter. A collective over n
  devices spanning m nodes (k = n/m on each) is hierarchical: a ring inside each node over the
  intra-node link, then one across nodes over the network between the GPUs of the same local
  rank (reduce-scatter: (k-1)/k x S / B_intra + (m-1)/m x S/k / B_inter, plus a latency per ring
  step; all-gather the same; all-reduce twice that). On one node this is collectives'
  ring model.
- overlap: step = compute + s x communication, where the step fraction s is calibrated on a
  measured multi-GPU record: its step time less the predicted compute, over the predicted
  communication. That growth is more than the collectives' exposed time (when no compute runs):
  compute running beside a collective runs slower (NCCL's kernels take SMs and HBM bandwidth).
  The exposed communication reported is not proportional to the communication (the schedule
  hides short steps' collectives whole and longer ones' in part), so where two or more profiled
  records of the same strategy, per-device batch, GPU type, device count and XLA schedule
  options are given it is a + b x communication (clipped to [0, all of it]), b >= 0 fitted by
  least squares on their exposed collective time. With fewer it is e x communication, e from
  one record's profile (its exposed collective time), else e = s (at most 1). Without a
  measured multi-GPU record, s = e = 1 (nothing hidden: the conservative bound). --check never
  calibrates a run on its own model's records (leave one model out). Where a measured run of the
  same point kept its compiled GPU step (--schedules, or beside its trace), the exposed time is
  that step's schedule replayed instead (slm_jax.overlap: ops by FLOPs and bytes scaled to the
  predicted compute, collectives at the link's measured cost, one that comes due during a GEMM
  launched at its last wave).
- slowest chip: a step waits at its collectives for its slowest GPU, and chips of one type
  differ in compute speed (the type's `chip_spread` in slm_jax.hardware, a relative standard
  deviation measured over hosts by measure_chip_spread). The slowest of N chips sits
  E[max of N standard normals] standard deviations above the mean one (0.56 at 2, 1.42 at 8,
  2.34 at 64); the calibration record's own slowest chip is already in its step fraction, so
  compute grows by sigma x (E_N - E_k) for a calibration on k GPUs (E_1 = 0 without one).
- memory: the one-GPU record's XLA plan (`expected_memory_bytes`, GPU) with its parameters and
  optimizer state laid out as the mesh shards them (exact, from the shardings) and its
  temporaries unchanged (activations are per device; XLA's CPU plans of 2 and 8 devices differ by
  under 0.1 GiB between ddp, fsdp_full and fsdp_grad_op at 100M), against the GPU type's memory.
  Without such a plan, XLA's CPU plan for the mesh (an overestimate: CPU XLA materialises the
  attention scores).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import glob
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import ml_collections

from slm_jax import collectives, errors, hardware, overlap, results
from slm_jax import profile as profile_lib
from slm_jax import schedule as schedule_lib
from slm_jax import config as config_lib
from slm_jax.errors import UserError
from slm_jax.model import count_params

# Strategies whose gradients and optimizer state are sharded over the `fsdp` mesh axis.
SHARDED = ("fsdp_full", "fsdp_grad_op", "hsdp")
# Below this, an all-reduce is a scalar or a replicated norm scale's gradient (a few KiB), which
# stays an all-reduce on a GPU too.
REDUCE_SCATTER_MIN_BYTES = 64 * 1024
# AdamW on fp32 master weights reads parameters, gradients and both moments and writes
# parameters and moments: 7 x 4 bytes a parameter, at HBM speed. Used where no profile says
# what the update costs.
OPTIMIZER_BYTES_PER_PARAM = 28
PEAK_BOUND = ("matmul", "attention")
DEFAULT_INTER_NODE = "ib400"
# The checkout whose git history says how far apart two records' commits are.
ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- records


def read_records(paths) -> list[dict]:
  """The records of every file (globs allowed), each with `_file` naming where it came from."""
  out = []
  for pattern in paths:
    files = sorted(glob.glob(pattern)) or [pattern]
    for f in files:
      if not Path(f).is_file():
        raise UserError(f"--records: no file {f!r}")
      out += [dict(r, _file=f) for r in results.read(f)]
  return out


LinkCosts = dict[tuple[str, ...], hardware.CollectiveCosts]


def read_link_costs(paths) -> LinkCosts:
  """Each measured host's collective costs in the files of benchmarks/link_bandwidth.py
  (`--out`), by its GPUs' UUIDs (hardware.link_costs)."""
  hosts: LinkCosts = {}
  for pattern in paths:
    for f in sorted(glob.glob(pattern)) or [pattern]:
      if not Path(f).is_file():
        raise UserError(f"--link_costs: no file {f!r} (lines written by "
                        "benchmarks/link_bandwidth.py --out)")
      hosts.update(hardware.link_costs(list(results.read(f)), f))
  if not hosts:
    raise UserError(f"--link_costs: {', '.join(paths)} hold no bf16 timings of both an "
                    "all-reduce and a reduce-scatter + all-gather (benchmarks/link_bandwidth.py "
                    "--out writes them)")
  return hosts


def one_link(hosts: LinkCosts) -> hardware.CollectiveCosts:
  """The one host's costs a prediction replays with."""
  if len(hosts) != 1:
    raise UserError(f"--link_costs: the files hold the link timings of {len(hosts)} hosts "
                    f"({'; '.join(' / '.join(h) for h in hosts)}); keep one host's lines to "
                    "predict with (--check takes each run's own host)")
  return next(iter(hosts.values()))


def gpu_of(record: dict) -> hardware.GPU | None:
  return hardware.from_device_kind(record.get("device_kind") or "")


def schedule_of(record: dict) -> frozenset[str]:
  """The XLA options, NCCL settings and gradient-reduction schedule a record's step ran with
  beyond its GPU type's preset (empty: the preset's schedule)."""
  config = record.get("config") or {}
  return hardware.options_beyond_preset(config.get("xla_options") or "", gpu_of(record),
                                        config.get("nccl_options") or "") | _reduce(config)


def schedule_of_config(c: ml_collections.ConfigDict, gpu: hardware.GPU | None) -> frozenset[str]:
  """`schedule_of` for a config about to run on `gpu`."""
  return hardware.options_beyond_preset(c.xla_options, gpu, c.get("nccl_options", "")) | _reduce(c)


def _reduce(config) -> frozenset[str]:
  """A reduction schedule other than XLA's, as an option (--config.reduce_schedule)."""
  schedule = config_lib.reduce_schedule(config)
  return frozenset() if schedule == "xla" else frozenset({f"reduce_schedule={schedule}"})


def _option_set(config) -> frozenset[str]:
  return frozenset(f"{config.get('xla_options') or ''} "
                   f"{config.get('nccl_options') or ''}".split()) | _reduce(config)


def options_of(record: dict) -> frozenset[str]:
  """Every XLA option, NCCL setting and reduction schedule a record's step ran with, its
  preset's included: two runs of one preset schedule still differ here when the preset gained an
  option between them."""
  return _option_set(record.get("config") or {})


def options_of_config(c: ml_collections.ConfigDict) -> frozenset[str]:
  return _option_set(c)


def _ok(record: dict) -> bool:
  return (record.get("status") == "ok" and record.get("stack", "jax") == "jax"
          and record.get("mode", "benchmark") == "benchmark"
          and (record.get("step_time_s") or {}).get("median"))


def _same_work(record: dict, c: ml_collections.ConfigDict) -> bool:
  return (record.get("model") == config_lib.model_name(c) and record.get("attention") == c.attention
          and record.get("per_device_batch") == c.per_device_batch_size
          and record.get("seq_len") == c.seq_len
          and bool((record.get("config") or {}).get("fp8")) == bool(c.get("fp8", False)))


def one_gpu_records(records: list[dict], c: ml_collections.ConfigDict) -> list[dict]:
  return [r for r in records if _ok(r) and r.get("num_devices") == 1 and _same_work(r, c)
          and gpu_of(r) is not None]


def make_record_command(c: ml_collections.ConfigDict, gpu: hardware.GPU, profile: bool) -> str:
  model = c.model if c.model in ("100m", "500m", "1b", "2b") else None
  cfg = f"configs/{model}_{gpu.key}.py" if model else "<your config>"
  extra = " --config.profile_steps=3" if profile else ""
  return (f"on one {gpu.name}, python -m slm_jax.main --config={cfg} "
          f"--config.attention={c.attention} --config.per_device_batch_size="
          f"{c.per_device_batch_size} --config.seq_len={c.seq_len}{extra} "
          "--workdir=runs/predict_inputs")


def _label(record: dict) -> str:
  return f"{record.get('run_id')} ({record.get('_file', '?')})"


# ----------------------------------------------------------------------------- commits


def commit_gap(a: str, b: str) -> tuple[bool, int] | None:
  """(whether slm_jax/ holds the same code at commits `a` and `b`, how many commits lie
  between them) from the git history of ROOT; None where git does not know both. A commit
  marked -dirty ran uncommitted code: never the same code as another."""
  return _commit_gap(a, b, ROOT)


@functools.lru_cache(maxsize=None)
def _commit_gap(a: str, b: str, root: Path) -> tuple[bool, int] | None:
  if not a or not b:
    return None
  dirty = a.endswith("-dirty") or b.endswith("-dirty")
  a, b = a.removesuffix("-dirty"), b.removesuffix("-dirty")
  if a == b:
    return not dirty, 0

  def git(*args):
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=60)
  try:
    count = git("rev-list", "--count", f"{a}...{b}")
    if count.returncode:
      return None
    same = not dirty and git("diff", "--quiet", a, b, "--", "slm_jax").returncode == 0
  except (OSError, subprocess.SubprocessError):
    return None
  return same, int(count.stdout.strip())


def _seconds_apart(a: dict, b: dict) -> float:
  try:
    ta = datetime.datetime.fromisoformat(a.get("timestamp") or "")
    tb = datetime.datetime.fromisoformat(b.get("timestamp") or "")
    return abs((ta - tb).total_seconds())
  except (TypeError, ValueError):
    return math.inf


SAME_TIME_S = 600  # runs this close count as one time: a queue's side-by-side runs


def nearest(candidates: list[dict], near: dict) -> dict:
  """The candidate whose code is closest to the code `near` ran: the same commit, else a commit
  with the same slm_jax/ code, else the fewest commits away in git's history, then the nearest
  in time (within SAME_TIME_S alike); the slower on a tie. One-GPU runs of one commit made side
  by side, one on each chip of a host, differ by the chips' speed (1.5% on one H200 host,
  benchmarks/PERF_NOTES.md section 19), and a step over several GPUs runs at the slowest's
  pace."""
  def key(r):
    gap = commit_gap(r.get("git_commit") or "", near.get("git_commit") or "")
    return (not (gap and gap[0]), gap is None, gap[1] if gap else 0,
            _seconds_apart(r, near) // SAME_TIME_S, -r["step_time_s"]["median"])
  return min(candidates, key=key)


def relation(record: dict, near: dict | None) -> str:
  """How `record`'s code relates to `near`'s, in words."""
  mine = (record.get("git_commit") or "?")[:7]
  if near is None:
    return f"commit {mine}"
  theirs = (near.get("git_commit") or "?")[:7]
  gap = commit_gap(record.get("git_commit") or "", near.get("git_commit") or "")
  if gap is None:
    return f"commit {mine}, not in this checkout's history beside {theirs}: nearest in time"
  same, n = gap
  if n == 0 and same:
    return f"commit {mine}, the same commit"
  return (f"commit {mine}, {n} commit{'s' * (n != 1)} from {theirs}, "
          + ("the same slm_jax/ code" if same else "slm_jax/ differs"))


# ----------------------------------------------------------------------------- compute


@dataclasses.dataclass
class Compute:
  """One GPU's step without communication, on the target GPU type."""
  seconds: float
  optimizer_s: float   # of which the optimizer update
  record: dict         # the record the step time is from
  source_gpu: str      # its GPU type
  notes: list[str]
  relation: str = ""   # how the record's code relates to the run predicted (check mode)


def category_factors(attention: str, src: hardware.GPU, dst: hardware.GPU) -> dict[str, float]:
  """How much longer each profile category takes on `dst` than on `src`."""
  peak = src.peak_bf16_tflops / dst.peak_bf16_tflops
  hbm = src.hbm_gbytes_per_s / dst.hbm_gbytes_per_s
  return {"matmul": peak, "attention": hbm if attention == "xla" else peak,
          "norm/elementwise": hbm, "loss": hbm, "optimizer": hbm, "collectives": 0.0,
          "idle/host": 1.0}


def shares(breakdown: dict) -> dict[str, float]:
  """Each category's fraction of the profiled step (categories add up to the step)."""
  ms = {k: v for k, v in (breakdown.get("ms") or {}).items() if v is not None}
  total = sum(ms.values())
  if not total:
    raise UserError("a record's breakdown has no time per category")
  return {k: v / total for k, v in ms.items()}


def project(step_s: float, breakdown: dict, attention: str, src: hardware.GPU,
            dst: hardware.GPU) -> tuple[float, float]:
  """(step, optimizer update) seconds on `dst` of a `src` step with this profile."""
  factors = category_factors(attention, src, dst)
  part = shares(breakdown)
  unknown = set(part) - set(factors)
  if unknown:
    raise UserError(f"a record's breakdown has categories {sorted(unknown)} this model "
                    "cannot project")
  seconds = step_s * sum(part[k] * factors[k] for k in part)
  return seconds, step_s * part.get("optimizer", 0.0) * factors["optimizer"]


def _fastest(records: list[dict]) -> dict:
  return min(records, key=lambda r: r["step_time_s"]["median"])


def _pick(records: list[dict], near: dict | None) -> dict:
  """The fastest record, or, to predict the measured run `near`, the one nearest its code."""
  return _fastest(records) if near is None else nearest(records, near)


def _profiled(records: list[dict]) -> list[dict]:
  return [r for r in records if (r.get("breakdown") or {}).get("ms")]


def compute_time(c: ml_collections.ConfigDict, records: list[dict],
                 target: hardware.GPU, near: dict | None = None) -> Compute:
  """The target GPU's one-device step for `c`, from the records (UserError if none serves): the
  fastest matching record, or with `near` (a measured run to predict) the matching record
  nearest its code (same commit, same slm_jax/ code, fewest commits away)."""
  matches = one_gpu_records(records, c)
  same = [r for r in matches if gpu_of(r) is target]
  what = (f"{config_lib.model_name(c)}, attention {c.attention}, batch "
          f"{c.per_device_batch_size}/device, seq {c.seq_len}")
  if same:
    best = _pick(same, near)
    step = best["step_time_s"]["median"]
    profiled = _profiled(same)
    if profiled:
      prof = _pick(profiled, near)
      opt = step * shares(prof["breakdown"]).get("optimizer", 0.0)
      how = f"its profile ({prof['run_id']})"
    else:
      opt = OPTIMIZER_BYTES_PER_PARAM * best["params"] / (target.hbm_gbytes_per_s * 1e9)
      how = f"{OPTIMIZER_BYTES_PER_PARAM} bytes/parameter at HBM speed"
    rel = relation(best, near)
    return Compute(step, opt, best, target.name,
                   [f"compute: measured on one {target.name}, record {_label(best)} ({rel}); "
                    f"optimizer update {opt * 1e3:.1f} ms from {how}"], rel)
  profiled = _profiled(matches)
  if not profiled:
    have = sorted({gpu_of(r).name for r in matches})
    raise UserError(
        f"no one-GPU record of {what} on {target.name} in --records"
        + (f", and those on {', '.join(have)} have no profile to project from" if have else "")
        + f"; make one with: {make_record_command(c, target, profile=False)}"
        + (f", or profile one: {make_record_command(c, gpu_of(matches[0]), True)}"
           if have else ""))
  # The config's own GPU type first, else the type with the fastest profiled record.
  own = [r for r in profiled if gpu_of(r).key == c.gpu]
  prof = _pick(own or profiled, near)
  src = gpu_of(prof)
  best = _pick([r for r in matches if gpu_of(r) is src], near)
  step, opt = project(best["step_time_s"]["median"], prof["breakdown"], c.attention, src, target)
  f = category_factors(c.attention, src, target)
  rel = relation(best, near)
  return Compute(step, opt, best, src.name, [
      f"compute: projected from one {src.name} (record {_label(best)}, {rel}, "
      f"{best['step_time_s']['median'] * 1e3:.1f} ms) "
      f"by the category shares of profile {prof['run_id']}: matmuls"
      f"{' and attention' if c.attention != 'xla' else ''} x{f['matmul']:.3f} (dense bf16 peaks "
      f"{src.peak_bf16_tflops:g} / {target.peak_bf16_tflops:g} TFLOP/s, the same fraction of "
      f"peak assumed), memory-bound ops{' and vanilla attention' if c.attention == 'xla' else ''} "
      f"x{f['loss']:.3f} (HBM {src.hbm_gbytes_per_s:g} / {target.hbm_gbytes_per_s:g} GB/s), "
      "host/idle time unchanged"], rel)


def optimizer_shards(strategy: str, num_devices: int, per_node: int) -> int:
  if strategy in ("fsdp_full", "fsdp_grad_op"):
    return num_devices
  if strategy == "hsdp":
    return per_node
  return 1


# ----------------------------------------------------------------------------- the mesh's plan


def layout(num_devices: int, gpus_per_node: int) -> tuple[int, int]:
  """(nodes, GPUs on each) for N devices filling nodes of `gpus_per_node`."""
  if num_devices <= gpus_per_node:
    return 1, num_devices
  if num_devices % gpus_per_node:
    raise UserError(f"--num_devices={num_devices} does not fill nodes of --gpus_per_node="
                    f"{gpus_per_node}; use a multiple of {gpus_per_node} past one node")
  return num_devices // gpus_per_node, gpus_per_node


def check_count(strategy: str, num_devices: int, gpus_per_node: int) -> None:
  if num_devices < 1:
    raise UserError(f"--num_devices={num_devices}: a device count is at least 1")
  if strategy == "single" and num_devices > 1:
    raise UserError(f"--config.strategy=single runs on one device, not {num_devices}; choose "
                    "ddp, fsdp_full, fsdp_grad_op or hsdp")
  layout(num_devices, gpus_per_node)


def cpu_config(c: ml_collections.ConfigDict, num_devices: int) -> ml_collections.ConfigDict:
  """`c` as it compiles on CPU: GPU-only attention kernels become XLA's (the collectives do not
  depend on the kernel), no GPU compile options."""
  c = ml_collections.ConfigDict(c.to_dict())
  if c.attention != "xla":
    c.attention = "xla"
  c.xla_options = ""
  c.num_devices = num_devices
  return c


def plan(c: ml_collections.ConfigDict, num_devices: int, gpus_per_node: int) -> dict:
  """The step for the N-device mesh on this process's (fake CPU) devices: the bytes of state
  (parameters and optimizer state) each device holds, and for N > 1 the step's collectives (as
  dicts of collectives.Op) and XLA's CPU memory plan per device, from compiling it."""
  from slm_jax import measure, sharding, train  # jax: imported once the device count is set
  nodes, _ = layout(num_devices, gpus_per_node)
  cc = cpu_config(c, num_devices)
  program = train.build(cc, hosts=nodes if c.strategy == "hsdp" else None)
  params, opt_state = program.abstract_state.params, program.abstract_state.opt_state
  out = {"num_devices": num_devices, "ops": [], "expected_memory_bytes": None,
         "state_bytes": (sharding.bytes_per_device(params, program.state_shardings.params)
                         + sharding.bytes_per_device(opt_state,
                                                     program.state_shardings.opt_state))}
  if num_devices > 1:
    compiled, _ = train.compile_step(cc, program)
    out["ops"] = [dataclasses.asdict(o) for o in collectives.ops(compiled.as_text(), num_devices)]
    out["expected_memory_bytes"] = measure.expected_memory(compiled)
  return out


def plans(c: ml_collections.ConfigDict, counts: list[int], gpus_per_node: int) -> dict[int, dict]:
  """plan() for every count and for one device: in this process where it has the devices,
  else in a child process with as many fake CPU devices."""
  import jax
  want = sorted(set(counts) | {1})
  if jax.device_count() >= max(want):
    return {n: plan(c, n, gpus_per_node) for n in want}
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={max(want)}")
  job = json.dumps({"config": c.to_dict(), "counts": want, "gpus_per_node": gpus_per_node})
  child = "from slm_jax import predict; predict._plan_child()"
  done = subprocess.run([sys.executable, "-c", child], input=job, capture_output=True, text=True,
                        env=env)
  if done.returncode:
    lines = done.stderr.strip().splitlines()
    raise RuntimeError(f"compiling the meshes on CPU failed: {lines[-1] if lines else '?'}")
  return {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def _plan_child() -> None:
  job = json.loads(sys.stdin.read())
  c = ml_collections.ConfigDict(job["config"])
  print(json.dumps(plans(c, job["counts"], job["gpus_per_node"])))


def gpu_ops(ops: list[dict], strategy: str, num_devices: int, gpus_per_node: int) -> list[dict]:
  """The collectives as a GPU compiles them: a large all-reduce over a gradient's shard group
  (all devices, or one node's under hsdp) is a reduce-scatter of the same bytes."""
  if strategy not in SHARDED:
    return ops
  nodes, per_node = layout(num_devices, gpus_per_node)
  shard = num_devices if strategy != "hsdp" else per_node
  out = []
  for op in ops:
    groups = op["groups"]
    in_node = groups is None or len({i // per_node for i in groups[0]}) == 1
    is_shard_group = op["group_size"] == shard and (strategy != "hsdp" or in_node)
    if (op["kind"] == "all-reduce" and is_shard_group
        and op["bytes"] >= REDUCE_SCATTER_MIN_BYTES):
      op = dict(op, kind="reduce-scatter")
    out.append(op)
  return out


def summary(ops: list[dict]) -> dict:
  """{kind: {count, bytes}} of a list of ops."""
  out = {}
  for op in ops:
    e = out.setdefault(op["kind"], {"count": 0, "bytes": 0})
    e["count"] += 1
    e["bytes"] += op["bytes"]
  return out


# ----------------------------------------------------------------------------- communication


def op_seconds(op: dict, per_node: int, intra: hardware.Interconnect,
               inter: hardware.Interconnect) -> float:
  """Hierarchical ring time of one collective (see the module docstring)."""
  n, groups = op["group_size"], op["groups"]
  nodes = len({i // per_node for i in groups[0]}) if groups else math.ceil(n / per_node)
  return collectives.ring_seconds(op["kind"], op["bytes"], n, nodes, intra, inter)


def comm_seconds(ops: list[dict], per_node: int, intra, inter) -> float:
  return sum(op_seconds(op, per_node, intra, inter) for op in ops)


# ----------------------------------------------------------------------------- overlap


@dataclasses.dataclass
class ExposedModel:
  """The exposed (un-overlapped) collective seconds of a step as a + b x its predicted
  communication, at most all of it: "affine" where fitted on several profiled records,
  "fraction" (a = 0) where one record, the median of one point's repeats or a bound given by
  hand sets it."""
  form: str
  a_s: float
  b: float
  records: list[str]   # the run_ids it was calibrated on

  def seconds(self, comm: float) -> float:
    return min(comm, max(0.0, self.a_s + self.b * comm)) if comm > 0 else 0.0

  def as_dict(self) -> dict:
    return {"form": self.form, "a_s": self.a_s, "b": self.b, "records": list(self.records)}


@dataclasses.dataclass
class Calibration:
  """How much of the predicted communication the step pays: `exposed_fraction` of it runs with
  no compute beside it (or `exposed_model`'s a + b x it, where several records were fitted); the
  step grows by `step_fraction` of it (the exposed part and the slowdown of the compute it
  overlaps; the exposed fraction where not given)."""
  exposed_fraction: float
  note: str
  record: dict | None = None
  compute: Compute | None = None  # the one-GPU step the record's was compared with
  step_fraction: float | None = None
  exposed_model: ExposedModel | None = None
  comm_s: float | None = None  # the communication predicted for the record's own config

  @property
  def step(self) -> float:
    return self.exposed_fraction if self.step_fraction is None else self.step_fraction

  @property
  def exposed(self) -> ExposedModel:
    """The exposed-communication model: the fitted one, else the fraction."""
    return self.exposed_model or ExposedModel(
        "fraction", 0.0, self.exposed_fraction,
        [self.record.get("run_id")] if self.record else [])


NO_OVERLAP = Calibration(1.0, "overlap: none assumed (exposed fraction 1: every collective "
                         "waits; the conservative bound), no measured multi-GPU record given")


def _slowest_gpu(breakdown: dict) -> dict | None:
  devices = breakdown.get("per_device")
  return max(devices, key=lambda d: d["compute_ms"]) if devices else None


def measured_exposed_s(record: dict) -> float | None:
  """Exposed communication of a median step from the record's profile, scaled from the profiled
  step to the timed one; None without a profile that says. Where the profile has every GPU
  (`per_device`), the slowest GPU's exposed collective time less its own wait for another GPU
  (`collectives_waiting_ms`, where recorded): a faster GPU's exposed time holds its wait for the
  slowest at each collective (`compute_skew_ms`), and the slowest still arrives first at some
  collectives of a step, so waits are no property of the communication. Left in, they are what
  repeats of one point disagree on most (two H200s: 1B fsdp_grad_op at 64 exposed 6.0 and 8.0
  ms, 5.0 and 5.4 without its waits; benchmarks/PERF_NOTES.md section 27)."""
  b = record.get("breakdown") or {}
  if not b.get("step_ms"):
    return None
  if slow := _slowest_gpu(b):
    exposed = slow["collectives_exposed_ms"] - slow.get("collectives_waiting_ms", 0.0)
  elif b.get("collectives_exposed_ms") is not None:
    exposed = b["collectives_exposed_ms"]
  elif b.get("collectives_busy_ms") is not None and b.get("collectives_overlapped_ms") is not None:
    exposed = b["collectives_busy_ms"] - b["collectives_overlapped_ms"]
  else:
    return None
  return exposed / b["step_ms"] * record["step_time_s"]["median"]


def measured_waiting_s(record: dict) -> float | None:
  """The slowest GPU's exposed wait for another GPU in a median step, which measured_exposed_s
  leaves out; None where the profile does not separate it."""
  b = record.get("breakdown") or {}
  slow = _slowest_gpu(b) if b.get("step_ms") else None
  if slow is None or slow.get("collectives_waiting_ms") is None:
    return None
  return slow["collectives_waiting_ms"] / b["step_ms"] * record["step_time_s"]["median"]


@functools.cache
def expected_slowest(n: int) -> float:
  """How many standard deviations the slowest of n chips sits above the mean chip, their speeds
  drawn from one normal distribution: E[max of n standard normals] (0.564 for two, 1.42 for
  eight, 2.34 for 64), by the trapezoid rule."""
  if n <= 1:
    return 0.0
  dx = 1e-3
  total = 0.0
  for i in range(-9000, 9001):
    x = i * dx
    below = 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))
    total += x * n * math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi) * below ** (n - 1)
  return total * dx


def measure_chip_spread(records: list[dict], gpu: hardware.GPU) -> tuple[float, int, int] | None:
  """(sigma, hosts, records): how much `gpu`'s chips differ in compute speed, from its profiled
  multi-GPU records that name their GPUs (`gpus`): in each, the relative standard deviation of
  the GPUs' compute time in the profiled step (`breakdown.per_device`); per host (its set of GPU
  UUIDs) the median over its records, which keeps one odd step from counting; sigma the root
  mean square over hosts. The profile's own noise counts as spread, so sigma errs high. None
  without such a record."""
  by_host: dict[frozenset, list[float]] = {}
  for r in records:
    devices = (r.get("breakdown") or {}).get("per_device") or []
    uuids = frozenset(g.get("uuid") for g in r.get("gpus") or [])
    if (not _ok(r) or len(devices) < 2 or gpu_of(r) != gpu or None in uuids
        or len(uuids) != len(devices)):
      continue
    compute = [d["compute_ms"] for d in devices]
    mean = statistics.fmean(compute)
    by_host.setdefault(uuids, []).append(statistics.stdev([t / mean for t in compute]))
  if not by_host:
    return None
  per_host = [statistics.median(v) for v in by_host.values()]
  return (math.sqrt(statistics.fmean([x * x for x in per_host])), len(by_host),
          sum(map(len, by_host.values())))


def slowest_chip(target: hardware.GPU, num_devices: int, calibrated_on: int) -> dict:
  """A point's `slowest_chip`: the fraction by which N chips' step outlasts one chip's compute,
  the spread it comes from and the type that spread was measured on. A calibration on a run of
  k GPUs holds its slowest-of-k wait in its step fraction, so only the slowest of N beyond the
  slowest of k is added."""
  sigma, measured_on = hardware.chip_spread(target)
  extra = expected_slowest(num_devices) - expected_slowest(calibrated_on)
  return {"fraction": sigma * max(0.0, extra), "chip_spread": sigma, "measured_on": measured_on,
          "calibrated_on_devices": calibrated_on}


def record_config(record: dict) -> ml_collections.ConfigDict:
  """The config a record ran, on today's field set."""
  c = config_lib.base_config()
  known = {k: v for k, v in (record.get("config") or {}).items() if k in c}
  c.update(known)
  return c


def _links(gpu: hardware.GPU, interconnects: list[str]) -> tuple:
  intra = hardware.interconnect(interconnects[0] if interconnects else gpu.intra_node)
  inter = hardware.interconnect(interconnects[1] if len(interconnects) > 1 else DEFAULT_INTER_NODE)
  return intra, inter


def _record_comm(record: dict, gpus_per_node: int, interconnects: list[str], plan_fn=None):
  """(its config, GPU type, per-node GPUs, predicted communication seconds) of a measured
  multi-GPU record."""
  rc = record_config(record)
  gpu = gpu_of(record)
  if gpu is None:
    raise UserError(f"record {_label(record)} ran on {record.get('device_kind')!r}, not a GPU "
                    "type in slm_jax.hardware")
  n = record["num_devices"]
  _, per_node = layout(n, gpus_per_node)
  p = (plan_fn or plans)(rc, [n], gpus_per_node)[n]
  intra, inter = _links(gpu, interconnects)
  ops = gpu_ops(p["ops"], rc.strategy, n, gpus_per_node)
  return rc, gpu, per_node, comm_seconds(ops, per_node, intra, inter)


def calibrate_on(record: dict, records: list[dict], gpus_per_node: int,
                 interconnects: list[str], plan_fn=None) -> Calibration:
  """The calibration of `record` (a measured multi-GPU run) over the communication this model
  predicts for its config: the step fraction (its step less the predicted compute, from the
  one-GPU record nearest its code) and the exposed fraction (its profile's exposed collective
  time; without a profile, the step fraction up to 1)."""
  rc, gpu, per_node, comm = _record_comm(record, gpus_per_node, list(interconnects), plan_fn)
  n = record["num_devices"]
  compute = compute_time(rc, records, gpu, near=record)
  compute_n = compute.seconds - compute.optimizer_s * (
      1 - 1 / optimizer_shards(rc.strategy, n, per_node))
  growth = record["step_time_s"]["median"] - compute_n
  s = max(0.0, growth / comm) if comm > 0 else 1.0
  exposed = measured_exposed_s(record)
  if exposed is None:
    e, how = min(1.0, s), "none profiled: the step's growth"
  else:
    e = min(1.0, max(0.0, exposed / comm)) if comm > 0 else 1.0
    how = f"{exposed * 1e3:.2f} ms in its profile"
  return Calibration(e, f"overlap: calibrated on record {_label(record)} ({record['model']}, "
                     f"{rc.strategy}, {n} x {gpu.name}): its step is "
                     f"{growth * 1e3:.2f} ms longer than the predicted compute (one GPU: record "
                     f"{compute.record.get('run_id')}, {compute.relation}), step fraction "
                     f"{s:.2f} of the {comm * 1e3:.2f} ms predicted communication; exposed "
                     f"collectives ({how}) fraction {e:.2f}", record, compute, s, comm_s=comm)


def fit_affine(points: list[tuple[float, float]]) -> tuple[float, float] | None:
  """(a, b), b >= 0, of the least-squares line y = a + b x through (x, y) points; None where
  the points do not determine a line (fewer than two distinct x). `a` may be negative: on two
  H200s, 100M-1B fsdp_full at batch 16 expose 0.58 x communication - 0.5 ms (the schedule hides
  short steps' collectives whole), a line that crosses zero above zero communication;
  ExposedModel clips at 0."""
  if len({x for x, _ in points}) < 2:
    return None
  import numpy as np
  xs = np.array([x for x, _ in points])
  ys = np.array([y for _, y in points])
  b, a = np.polyfit(xs, ys, 1)
  if b < 0:  # more bytes never hide better: the flat line through the mean instead
    return float(ys.mean()), 0.0
  return float(a), float(b)


def _config_gpu(c: ml_collections.ConfigDict) -> hardware.GPU | None:
  try:
    return hardware.gpu(c.gpu) if c.get("gpu") else None
  except UserError:  # a config naming no GPU type the table knows
    return None


def exposed_records(c: ml_collections.ConfigDict, gpu: hardware.GPU, num_devices: int,
                    records: list[dict], exclude_model: str | None = None) -> list[dict]:
  """The profiled multi-GPU records an exposed-communication line is fitted on: `c`'s strategy
  and per-device batch (the compute there is to hide collectives behind) on `num_devices` GPUs
  of type `gpu`, compiled with the same schedule options (a preset's, or `c`'s own), none of
  model `exclude_model`; only those compiled with exactly `c`'s options where two or more were
  (a preset that gained an option, such as more collectives in flight, changes what is hidden)."""
  want = schedule_of_config(c, gpu)
  out = [r for r in multi_gpu_records(records)
         if r.get("strategy") == c.strategy and gpu_of(r) is gpu
         and r["num_devices"] == num_devices and r.get("model") != exclude_model
         and r.get("per_device_batch") == c.per_device_batch_size
         and schedule_of(r) == want
         and measured_exposed_s(r) is not None]
  exact = [r for r in out if options_of(r) == options_of_config(c)]
  return exact if len(exact) >= 2 else out


def fit_exposed(cal: Calibration, c: ml_collections.ConfigDict, target: hardware.GPU,
                records: list[dict], gpus_per_node: int, interconnects: list[str],
                plan_fn=None, exclude_model: str | None = None) -> Calibration:
  """`cal` with its exposed communication fitted as a + b x the predicted communication (b >= 0,
  least squares) over exposed_records (none of `exclude_model`) on as many `target` GPUs as
  `cal`'s record ran on, where two or more at different predicted communication are given;
  else `cal`'s fraction, and the note says why."""
  if cal.record is None:
    return cal
  n = cal.record["num_devices"]
  group = exposed_records(c, target, n, records, exclude_model)
  where = (f"profiled {c.strategy} record{'s' * (len(group) != 1)} at per-device batch "
           f"{c.per_device_batch_size} on {n} x {target.name} with the same XLA options"
           + (f" of a model other than {exclude_model}" if exclude_model else ""))
  fit = None
  if len(group) >= 2:
    points = [(_record_comm(r, gpus_per_node, list(interconnects), plan_fn)[3],
               measured_exposed_s(r)) for r in group]
    fit = fit_affine(points)
  if fit is None:
    return _median_of_repeats(dataclasses.replace(cal, note=(
        f"{cal.note}; exposed collectives: that record's fraction ({len(group)} {where}; a line "
        "a + b x communication needs two at different communication)")), records)
  a, b = fit
  ids = [r.get("run_id") for r in group]
  return dataclasses.replace(
      cal, exposed_model=ExposedModel("affine", a, b, ids),
      note=(f"{cal.note}; exposed collectives: {a * 1e3:.2f} ms + {b:.3f} x the predicted "
            f"communication (at most all of it), least squares with b >= 0, clipped at 0, over the "
            f"{len(group)} {where} ({', '.join(ids)}); fitted at {n} devices"))


def repeats(record: dict, records: list[dict]) -> list[dict]:
  """The profiled runs of `record`'s point (model, scheme, per-device batch, devices, GPU type
  and every option), itself included: the same step measured on other hosts and commits."""
  return [r for r in multi_gpu_records(records)
          if (r.get("model"), r.get("strategy"), r.get("per_device_batch"), r["num_devices"])
          == (record.get("model"), record.get("strategy"), record.get("per_device_batch"),
              record["num_devices"])
          and gpu_of(r) is gpu_of(record) and options_of(r) == options_of(record)
          and measured_exposed_s(r) is not None]


def _median_of_repeats(cal: Calibration, records: list[dict]) -> Calibration:
  """`cal` with the median exposed fraction of its record's repeats where it has two or more:
  one profile's exposed time varies by a factor of two or more between hosts (1B ddp at batch
  64 on two H200s: 0.3 to 7.5 ms on the slowest GPU), so one run is a poor fraction to carry."""
  same = repeats(cal.record, records)
  if len(same) < 2 or not cal.comm_s:
    return cal
  fraction = min(1.0, statistics.median(measured_exposed_s(r) for r in same) / cal.comm_s)
  ids = [r.get("run_id") for r in same]
  return dataclasses.replace(
      cal, exposed_fraction=fraction, exposed_model=ExposedModel("fraction", 0.0, fraction, ids),
      note=f"{cal.note}, the median of its point's {len(same)} profiled runs "
           f"({', '.join(ids)}): {fraction:.2f}")


def calibrate(c: ml_collections.ConfigDict, target: hardware.GPU, records: list[dict],
              gpus_per_node: int, interconnects: list[str], plan_fn=None,
              exclude_model: str | None = None, commit: str | None = None) -> Calibration | None:
  """The calibration for `c` on `target`: the step fraction from pick_calibration's record, the
  exposed communication fitted by fit_exposed; None without a multi-GPU record to use."""
  chosen = pick_calibration(c, records, exclude_model=exclude_model, commit=commit)
  if chosen is None:
    return None
  cal = calibrate_on(chosen, records, gpus_per_node, list(interconnects), plan_fn)
  return fit_exposed(cal, c, target, records, gpus_per_node, interconnects, plan_fn,
                     exclude_model)


def multi_gpu_records(records: list[dict]) -> list[dict]:
  return [r for r in records if _ok(r) and (r.get("num_devices") or 1) > 1]


def pick_calibration(c: ml_collections.ConfigDict, records: list[dict],
                     exclude_model: str | None = None, commit: str | None = None) -> dict | None:
  """The measured multi-GPU record to calibrate on: the same strategy first (the overlap is a
  property of the scheme's schedule), then one compiled with the same schedule options (each
  GPU type's preset, or the same `xla_options` and `nccl_options`), failing that the preset's
  rather than another variant's (an A/B arm is further from any run than the preset is), then
  one with exactly the config's options (of two preset runs, the one from before the preset
  gained an option is the other schedule), then one whose profile measured the exposed
  collective time (else it is inferred from the step time, which carries every other
  difference from one GPU), then the nearest per-device batch, by ratio
  (the compute there is to hide collectives behind), then one with a one-GPU record of its own
  commit (its step fraction is its step's growth over that record, and two hosts of one GPU
  type differ by a few percent, as much as the growth), then the same model, then the nearest
  in parameters (a step fraction carries, beside the collectives, what grows with the model:
  from 100M's 1 ms of all-reduce to 2B's 18 ms it is extrapolated furthest), then the most
  devices, then one of commit `commit` (a checked run's own code: an A/B's arm run from an older
  checkout is newer than the records of its code), then the newest; none of model
  `exclude_model`."""
  multi = [r for r in multi_gpu_records(records) if r.get("model") != exclude_model]
  if not multi:
    return None
  model = config_lib.model_name(c)
  want = schedule_of_config(c, _config_gpu(c))

  def own_one_gpu(r: dict) -> bool:
    return any(o.get("git_commit") == r.get("git_commit") and gpu_of(o) == gpu_of(r)
               for o in one_gpu_records(records, record_config(r)))

  params = count_params(config_lib.model_config(c))

  def batch_gap(r: dict) -> float:
    return (abs(math.log(r["per_device_batch"] / c.per_device_batch_size))
            if r.get("per_device_batch") else math.inf)

  def size_gap(r: dict) -> float:
    return abs(math.log(r["params"] / params)) if r.get("params") else math.inf

  options = options_of_config(c)
  return max(multi, key=lambda r: (r.get("strategy") == c.strategy, schedule_of(r) == want,
                                   not schedule_of(r), options_of(r) == options,
                                   measured_exposed_s(r) is not None,
                                   -batch_gap(r), own_one_gpu(r), r.get("model") == model,
                                   -size_gap(r), r["num_devices"],
                                   commit is not None and r.get("git_commit") == commit,
                                   r.get("timestamp") or ""))


# ----------------------------------------------------------------------------- schedules


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A measured run's compiled GPU step (HLO text), which slm_jax.overlap replays."""
  run_id: str
  path: Path
  text: str
  num_devices: int


SCHEDULE_SUFFIX = ".step.hlo.txt.gz"


def record_schedule(record: dict, folders: list[str] = ()) -> Schedule | None:
  """`record`'s compiled step: `<run_id>.step.hlo.txt.gz` in one of `folders`, else the one its
  profile kept beside its trace (slm_jax.profile.PROGRAM_FILE); None where neither exists."""
  run_id = record.get("run_id") or ""
  trace = (record.get("breakdown") or {}).get("trace")
  paths = [Path(f) / f"{run_id}{SCHEDULE_SUFFIX}" for f in folders if run_id]
  if trace:
    paths.append(Path(trace).parent / profile_lib.PROGRAM_FILE)
  for path in paths:
    if path.is_file():
      try:
        text = schedule_lib.read(path)
      except (OSError, EOFError) as e:
        raise UserError(f"cannot read the compiled step {path}: {e}")
      return Schedule(run_id, path, text, record["num_devices"])
  return None


def point_schedule(c: ml_collections.ConfigDict, gpu: hardware.GPU, num_devices: int,
                   records: list[dict], folders: list[str] = ()) -> Schedule | None:
  """A compiled step of `c`'s point on `num_devices` GPUs: of the newest measured record with
  the same model, scheme, attention, per-device batch, sequence length and options beyond its
  GPU type's preset whose step was kept. It was compiled for the GPU type it ran on; replayed
  for another, its ops and collectives are timed for that one."""
  want = schedule_of_config(c, gpu)
  same = [r for r in multi_gpu_records(records)
          if r["num_devices"] == num_devices and r.get("strategy") == c.strategy
          and _same_work(r, c) and schedule_of(r) == want]
  for r in sorted(same, key=lambda r: r.get("timestamp") or "", reverse=True):
    if kept := record_schedule(r, folders):
      return kept
  return None


# ----------------------------------------------------------------------------- prediction


def point(c: ml_collections.ConfigDict, num_devices: int, gpus_per_node: int,
          target: hardware.GPU, compute: Compute, plan_n: dict, plan_1: dict,
          calibration: Calibration, intra, inter, schedule: Schedule | None = None) -> dict:
  """One predicted point (the prediction's record). With `schedule` (the point's compiled GPU
  step, on one node), the exposed communication is its replay's (slm_jax.overlap)."""
  nodes, per_node = layout(num_devices, gpus_per_node)
  ops = gpu_ops(plan_n["ops"], c.strategy, num_devices, gpus_per_node)
  comm = comm_seconds(ops, per_node, intra, inter)
  calibrated_on = (calibration.record or {}).get("num_devices") or 1
  slowest = slowest_chip(target, num_devices, calibrated_on)
  compute_s = (compute.seconds - compute.optimizer_s * (
      1 - 1 / optimizer_shards(c.strategy, num_devices, per_node))) * (1 + slowest["fraction"])
  exposed = calibration.exposed.seconds(comm)
  exposed_model = calibration.exposed.as_dict()
  if schedule is not None and nodes == 1:
    replayed = overlap.replay(schedule.text, compute_s, target, intra, num_devices)
    exposed = replayed.exposed_s
    exposed_model = {"form": "replay", "schedule": str(schedule.path),
                     "schedule_record": schedule.run_id, "gemm_tail": replayed.gemm_tail,
                     "gemm_first": list(overlap.GEMM_FIRST_KINDS),
                     "collectives": replayed.collectives,
                     "collectives_alone_s": replayed.collectives_s,
                     "link_costs": intra.costs.source if intra.costs else None}
  cost = calibration.step * comm
  step = compute_s + cost
  tps = num_devices * c.per_device_batch_size * c.seq_len / step
  price = c.price_per_device_hour if c.price_per_device_hour > 0 else target.usd_per_hour
  base = compute.record.get("expected_memory_bytes")
  if base is not None:  # the GPU's plan, its state re-laid out over the mesh
    memory = base - plan_1["state_bytes"] + plan_n["state_bytes"]
  else:
    memory = plan_n["expected_memory_bytes"]
  budget = int(target.memory_gb * 2**30)
  return {
      "prediction": True, "model": config_lib.model_name(c), "gpu": target.name,
      "strategy": c.strategy, "attention": c.attention,
      "per_device_batch": c.per_device_batch_size, "seq_len": c.seq_len,
      "num_devices": num_devices, "num_nodes": nodes, "gpus_per_node": per_node,
      "interconnect": [intra.key, inter.key] if nodes > 1 else [intra.key],
      "tokens_per_s": tps, "tokens_per_s_per_device": tps / num_devices,
      "token_per_dollar": tps / (price * num_devices / 3600.0),
      "token_per_dollar_paper": (tps / num_devices / target.paper_price_ratio
                                 if target.paper_price_ratio else None),
      "step_s": step, "compute_s": compute_s, "comm_s": comm, "exposed_comm_s": exposed,
      "exposed_fraction": exposed / comm if comm > 0 else calibration.exposed_fraction,
      "comm_cost_s": cost, "exposed_model": exposed_model,
      "step_fraction": calibration.step,
      "slowest_chip": slowest,
      "fits": None if memory is None else memory <= budget, "expected_memory_bytes": memory,
      "memory_budget_bytes": budget, "price_per_device_hour": price,
      "collectives": summary(ops),
      "record": compute.record.get("run_id"), "record_file": compute.record.get("_file"),
      "record_commit": compute.record.get("git_commit"), "record_relation": compute.relation,
      "compute_from": compute.source_gpu,
      "calibration_record": (calibration.record or {}).get("run_id"),
  }


def predict(c: ml_collections.ConfigDict, counts: list[int], *, records: list[dict],
            gpu: str = "", gpus_per_node: int = 8, interconnects: list[str] = (),
            calibration: Calibration | None = None, plan_fn=None,
            near: dict | None = None, schedules: list[str] = (),
            schedule: Schedule | None = None,
            find_schedules: bool = True,
            link_costs: LinkCosts | None = None) -> tuple[list[dict], list[str]]:
  """(points, assumptions) for `c` on each device count of `counts`; `near`: the measured run
  being predicted (check mode), whose code the one-GPU record is chosen nearest to. The exposed
  communication at a count is replayed from a compiled step of the same point (`schedule`, else,
  with `find_schedules`, one kept for a record of the point in `schedules` or beside its trace)
  where there is one, its collectives timed by `link_costs` (one host's measured costs) where
  given, else by the link's built-in table."""
  config_lib.validate(c)
  target = hardware.gpu(gpu or c.gpu) if (gpu or c.gpu != "cpu") else None
  if target is None:
    raise UserError("--config.gpu=cpu: say which GPU type to predict with --gpu "
                    f"({', '.join(g.name for g in hardware.GPUS.values())})")
  if gpus_per_node < 1:
    raise UserError(f"--gpus_per_node={gpus_per_node}: at least 1")
  if len(interconnects) > 2:
    raise UserError("--interconnect takes at most two: inside a node, across nodes")
  intra, inter = _links(target, list(interconnects))
  if link_costs:
    intra = dataclasses.replace(intra, costs=one_link(link_costs))
  for n in counts:
    check_count(c.strategy, n, gpus_per_node)
  compute = compute_time(c, records, target, near=near)
  plan_fn = _memo(plan_fn)
  if calibration is None:
    calibration = (calibrate(c, target, records, gpus_per_node, list(interconnects), plan_fn)
                   or NO_OVERLAP)
  p = plan_fn(c, list(counts), gpus_per_node)
  kept = {n: schedule if schedule is not None and n == schedule.num_devices
          else point_schedule(c, target, n, records, schedules)
          if find_schedules and schedule is None else None for n in counts}
  points = [point(c, n, gpus_per_node, target, compute, p[n], p[1], calibration, intra, inter,
                  kept[n]) for n in counts]
  replayed = [f"{n} GPUs: the compiled step of record {k.run_id} ({k.path})"
              for n, k in kept.items() if k is not None and layout(n, gpus_per_node)[0] == 1]
  notes = compute.notes + [
      calibration.note + (f"; exposed collectives replayed from the schedule (slm_jax.overlap, "
                          f"a collective that comes due during a GEMM launched at its last "
                          f"{overlap.GEMM_TAIL:g} of it, a "
                          f"{' or '.join(overlap.GEMM_FIRST_KINDS)} due as a wait ends at "
                          f"the end of the GEMM after the wait, "
                          f"{intra.key} collectives at "
                          + (f"their measured cost, {intra.costs.source}" if intra.costs else
                             "the ring model's time") + ") at " + "; ".join(replayed)
                          if replayed else ""),
      _slowest_chip_note(target, points),
      f"communication: hierarchical rings, inside a node over {intra.name} "
      f"({intra.latency_s * 1e6:g} us a step), across nodes over {inter.name} "
      f"({inter.latency_s * 1e6:g} us a step), collectives from the step's HLO compiled for each "
      "mesh on CPU (large gradient all-reduces under sharded strategies counted as the "
      "reduce-scatters GPU XLA makes of them)",
      f"memory: the record's XLA plan on one GPU, its parameters and optimizer state sharded "
      f"as each mesh shards them, temporaries as on one GPU; against {target.memory_gb:g} GiB",
      f"price: ${points[0]['price_per_device_hour']:.2f} per {target.name} hour"]
  return points, notes


def _slowest_chip_note(target: hardware.GPU, points: list[dict]) -> str:
  widest = max(points, key=lambda p: p["num_devices"])
  chip = widest["slowest_chip"]
  sigma, measured_on = chip["chip_spread"], chip["measured_on"]
  where = ("" if measured_on == target.name else
           f", measured on {measured_on}s and assumed for the {target.name}")
  k = chip["calibrated_on_devices"]
  return (f"slowest chip: a step waits for its slowest GPU, and {target.name} chips' compute "
          f"times differ by a standard deviation of {sigma:.2%}{where}; the slowest of N sits "
          f"E[max of N standard normals] of that above the mean chip, and "
          + (f"the calibration's {k} GPUs carry their own in its step fraction, so compute "
             f"grows by the rest" if k > 1 else "compute grows by that")
          + f": +{chip['fraction']:.2%} at {widest['num_devices']} GPUs")


# ----------------------------------------------------------------------------- checking


def _memo(plan_fn):
  """plan_fn, remembering each config's plans: check compiles a calibration record's mesh
  once, not once per record it calibrates."""
  seen = {}

  def cached(c, counts, gpus_per_node):
    key = (json.dumps(c.to_dict(), sort_keys=True, default=str), tuple(sorted(set(counts))),
           gpus_per_node)
    if key not in seen:
      seen[key] = (plan_fn or plans)(c, counts, gpus_per_node)
    return seen[key]
  return cached


def _own_host(record: dict, link_costs: LinkCosts | None) -> LinkCosts | None:
  """The costs measured on the host `record` ran on, where `link_costs` has them."""
  host = hardware.host_key(record.get("gpus"))
  return {host: link_costs[host]} if link_costs and host in link_costs else None


def _percent(predicted, measured):
  return None if predicted is None or not measured else 100 * (predicted / measured - 1)


def check(records: list[dict], gpus_per_node: int = 8, interconnects: list[str] = (),
          plan_fn=None, schedules: list[str] = (),
          link_costs: LinkCosts | None = None) -> list[dict]:
  """Predicts every measured multi-GPU record, calibrated on a record of another model (the
  same strategy first), each from the one-GPU record nearest its code, and says how far each
  prediction is from the measurement: tokens/s and, where the record was profiled, the exposed
  collective time: replayed from the record's own compiled step where it was kept (in
  `schedules` or beside its trace), with the collective costs measured on its own host where
  `link_costs` has them, else from the calibration."""
  plan_fn = _memo(plan_fn)
  rows = []
  todo = multi_gpu_records(records)
  for k, r in enumerate(todo):
    if sys.stderr.isatty():  # each record compiles steps on CPU: minutes for a whole folder
      print(f"\rchecking {k + 1}/{len(todo)} ({r.get('run_id')})", end="", file=sys.stderr,
            flush=True)
    rc = record_config(r)
    row = {"run_id": r.get("run_id"), "record_file": r.get("_file"), "model": r.get("model"),
           "strategy": r.get("strategy"), "attention": r.get("attention"),
           "per_device_batch": r.get("per_device_batch"), "num_devices": r["num_devices"],
           "device_kind": r.get("device_kind"), "record_commit": r.get("git_commit"),
           "record_timestamp": r.get("timestamp"), "measured_tokens_per_s": r["tokens_per_s"],
           "measured_step_s": r["step_time_s"]["median"],
           "measured_exposed_comm_s": measured_exposed_s(r),
           "measured_waiting_s": measured_waiting_s(r),
           "schedule": " ".join(sorted(schedule_of(r)))}
    if gpu_of(r) is None:
      rows.append(dict(row, error=f"ran on {r.get('device_kind')!r}, not a known GPU type"))
      continue
    try:
      # Leave one model out: nothing of the checked run's model calibrates its prediction.
      cal = calibrate(rc, gpu_of(r), records, gpus_per_node, list(interconnects), plan_fn,
                      exclude_model=r.get("model"), commit=r.get("git_commit"))
      if cal is None:
        rows.append(dict(row, error="no multi-GPU record of another model to calibrate on"))
        continue
      [p], _ = predict(rc, [r["num_devices"]], records=records, gpu=gpu_of(r).key,
                       gpus_per_node=gpus_per_node, interconnects=interconnects,
                       calibration=cal, plan_fn=plan_fn, near=r,
                       schedule=record_schedule(r, schedules), find_schedules=False,
                       link_costs=_own_host(r, link_costs))
    except UserError as e:
      rows.append(dict(row, error=str(e)))
      continue
    measured_comm = (r.get("collectives") or {}).get("per_step")
    rows.append(dict(
        row, predicted_tokens_per_s=p["tokens_per_s"],
        error_percent=_percent(p["tokens_per_s"], r["tokens_per_s"]),
        predicted_step_s=p["step_s"], predicted_compute_s=p["compute_s"],
        predicted_comm_s=p["comm_s"], predicted_exposed_comm_s=p["exposed_comm_s"],
        exposed_error_percent=_percent(p["exposed_comm_s"], row["measured_exposed_comm_s"]),
        exposed_error_ms=(None if row["measured_exposed_comm_s"] is None else
                          1e3 * (p["exposed_comm_s"] - row["measured_exposed_comm_s"])),
        compute_record=p["record"], compute_record_file=p["record_file"],
        compute_record_commit=p["record_commit"], compute_relation=p["record_relation"],
        calibrated_on=cal.record.get("run_id"), calibrated_model=cal.record.get("model"),
        calibrated_strategy=cal.record.get("strategy"), calibration_file=cal.record.get("_file"),
        calibration_commit=cal.record.get("git_commit"),
        calibration_compute_record=cal.compute.record.get("run_id"),
        calibration_compute_relation=cal.compute.relation,
        exposed_fraction=p["exposed_fraction"], step_fraction=cal.step,
        exposed_model=p["exposed_model"], calibration_note=cal.note,
        predicted_collectives=p["collectives"],
        measured_collectives={k: {"count": v["count"], "bytes": v["bytes"]}
                              for k, v in (measured_comm or {}).items()}))
  if todo and sys.stderr.isatty():
    print(file=sys.stderr)
  return rows


def provenance() -> dict:
  """The date, commit and versions a check runs at (taken as it starts: the code it runs)."""
  return {"timestamp": results.utc_now(), "git_commit": results.git_commit(),
          "versions": results.versions()}


def stamped(rows: list[dict], made: dict | None = None) -> list[dict]:
  """Check rows as committed files keep them: with the date, commit and versions they were
  computed at."""
  made = made or provenance()
  return [dict(made, **row) for row in rows]


# ----------------------------------------------------------------------------- output

COLUMNS = (
    ("num_devices", "GPUs", "{}"), ("num_nodes", "nodes", "{}"),
    ("tokens_per_s", "tokens/s", "{:,.0f}"), ("tokens_per_s_per_device", "tokens/s/GPU", "{:,.0f}"),
    ("token_per_dollar", "Token/$", "{:,.0f}"),
    ("token_per_dollar_paper", "paper Token/$", "{:,.0f}"),
    ("step_s", "step ms", "{:.1f}", 1e3), ("compute_s", "compute ms", "{:.1f}", 1e3),
    ("comm_s", "comm ms", "{:.2f}", 1e3), ("exposed_comm_s", "exposed ms", "{:.2f}", 1e3),
    ("expected_memory_bytes", "memory GiB", "{:.1f}", 2**-30), ("fits", "fits", "{}"))

CHECK_COLUMNS = (
    ("run_id", "record", "{}"), ("model", "model", "{}"), ("strategy", "strategy", "{}"),
    ("schedule", "beyond the preset", "{}"), ("num_devices", "GPUs", "{}"),
    ("measured_tokens_per_s", "measured tokens/s", "{:,.0f}"),
    ("predicted_tokens_per_s", "predicted tokens/s", "{:,.0f}"),
    ("error_percent", "error %", "{:+.1f}"),
    ("measured_exposed_comm_s", "measured exposed ms", "{:.2f}", 1e3),
    ("predicted_exposed_comm_s", "predicted exposed ms", "{:.2f}", 1e3),
    ("exposed_error_percent", "exposed error %", "{:+.1f}"),
    ("calibrated_on", "calibrated on", "{}"), ("calibrated_model", "its model", "{}"),
    ("compute_record", "one-GPU record", "{}"), ("compute_relation", "its code", "{}"),
    ("error", "not checked because", "{}"))


def table(points: list[dict]) -> str:
  return results.markdown_table(points, COLUMNS)


# ----------------------------------------------------------------------------- command line

def _flags():
  from absl import flags
  f = {
      "num_devices": flags.DEFINE_list("num_devices", ["1", "2", "4", "8"],
                                       "Device counts to predict, e.g. 1,2,4,8,16,32,64."),
      "gpus_per_node": flags.DEFINE_integer("gpus_per_node", 8, "GPUs in one node."),
      "interconnect": flags.DEFINE_list(
          "interconnect", [], f"Inside a node[,across nodes], from {list(hardware.INTERCONNECTS)}; "
          f"default: the GPU type's own NVLink and {DEFAULT_INTER_NODE}."),
      "records": flags.DEFINE_list("records", [], "Result files (globs allowed) with the one-GPU "
                                   "records to start from and any multi-GPU records to calibrate "
                                   "the overlap on."),
      "gpu": flags.DEFINE_string("gpu", "", "GPU type to predict, e.g. A100-80GB (default: the "
                                 "config's)."),
      "json": flags.DEFINE_bool("json", False, "One JSON object per point instead of a table."),
      "check": flags.DEFINE_bool("check", False, "Predict every measured multi-GPU record in "
                                 "--records, calibrated on another model's, and print the error."),
      "schedules": flags.DEFINE_list(
          "schedules", [], "Folders of compiled GPU steps named <run_id>.step.hlo.txt.gz (as "
          "benchmarks/schedules/): a point with one of its records' steps there, or beside the "
          "record's trace, has its exposed communication replayed from it (slm_jax.overlap)."),
      "link_costs": flags.DEFINE_list(
          "link_costs", [], "Files of collective timings from benchmarks/link_bandwidth.py --out "
          "(globs allowed): a replay times collectives with them instead of the link's built-in "
          "table; a prediction takes the files' one host, --check each run's own host where "
          "measured."),
  }
  return f


def _counts(values: list[str]) -> list[int]:
  try:
    return [int(v) for v in values]
  except ValueError:
    raise UserError(f"--num_devices={','.join(values)}: say device counts, e.g. 1,2,4,8")


def _use_fake_devices(count: int) -> None:
  """Compiles happen in this process on `count` fake CPU devices (set before JAX starts)."""
  flag = f"--xla_force_host_platform_device_count={count}"
  os.environ["XLA_FLAGS"] = " ".join(
      [f for f in os.environ.get("XLA_FLAGS", "").split()
       if not f.startswith("--xla_force_host_platform_device_count")] + [flag])
  import jax
  jax.config.update("jax_platforms", "cpu")


def main(argv, flag) -> int:
  errors.reject_positional(argv)
  if not flag["records"].value:
    raise UserError("--records is required: result files with one-GPU records, e.g. "
                    "--records=benchmarks/h200_grid.jsonl")
  records = read_records(flag["records"].value)
  for folder in flag["schedules"].value:
    if not Path(folder).is_dir():
      raise UserError(f"--schedules: no folder {folder!r} (a folder of compiled steps named "
                      f"<run_id>{SCHEDULE_SUFFIX}, e.g. benchmarks/schedules)")
  hosts = read_link_costs(flag["link_costs"].value) if flag["link_costs"].value else None
  per_node = flag["gpus_per_node"].value
  links = flag["interconnect"].value
  if flag["check"].value:
    multi = multi_gpu_records(records)
    _use_fake_devices(max([r["num_devices"] for r in multi] or [1]))
    made = provenance()
    rows = check(records, per_node, links, schedules=flag["schedules"].value, link_costs=hosts)
    if flag["json"].value:
      for row in stamped(rows, made):
        print(json.dumps(row))
    else:
      print(results.markdown_table(rows, CHECK_COLUMNS))
    return 0
  if _CONFIG.value is None:
    raise UserError("--config is required, e.g. --config=configs/1b_h200.py")
  c = _CONFIG.value
  counts = _counts(flag["num_devices"].value)
  _use_fake_devices(max(counts + [1]))
  points, notes = predict(c, counts, records=records, gpu=flag["gpu"].value,
                          gpus_per_node=per_node, interconnects=links,
                          schedules=flag["schedules"].value, link_costs=hosts)
  if flag["json"].value:
    for p in points:
      print(json.dumps(p))
    return 0
  p = points[0]
  print(f"Predicted (not measured): {p['model']}, {c.strategy}, attention {c.attention}, "
        f"batch {c.per_device_batch_size}/device, seq {c.seq_len}, on {p['gpu']} "
        f"({per_node} a node)\n")
  print(table(points))
  print("\n" + "\n".join(f"- {n}" for n in notes))
  return 0


_CONFIG = None


def _main(argv):
  try:
    sys.exit(main(argv, _FLAGS))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  from absl import app
  from slm_jax import main as jax_main  # --config's loader and one-line flag errors
  _CONFIG = jax_main.define_config_flag(None)
  _FLAGS = _flags()
  app.run(_main, flags_parser=jax_main._parse_flags)


# ----------------------------------------------------------------------------- the report's figure

_STRATEGY_SERIES = {"ddp": "DDP", "fsdp_full": "FSDP-Full", "fsdp_grad_op": "FSDP-Grad+Optimizer"}
# The paper's Figure 3 counts nodes of 8 GPUs; a prediction is on it where it fills its nodes.
PAPER_GPUS_PER_NODE = 8


def calibration_label(p: dict) -> str:
  """How a predicted point's overlap was set, in a legend's words."""
  if p.get("calibration_record"):
    return f"calibrated on run {p['calibration_record']}"
  e = p.get("exposed_fraction")
  return {1.0: "nothing hidden", 0.0: "all hidden"}.get(e, f"exposed fraction {e:g}")


def predicted_curves(predicted: list[dict], fig_id: str) -> list[dict]:
  """Predicted points (slm_jax.predict --json lines) as curves on one of the paper's figures, in
  Token/Dollar of the paper's unit: "Fig2" by GPU count, one series per GPU type (the paper's
  label); "Fig3" by node count for full nodes of 8, one series per scheme. Each point is the
  best prediction at its x over everything not on the figure (as the paper's are), one curve per
  size, series, GPU type and calibration; points that do not fit are left out. Each curve:
  {model, series, gpu, calibration, label, points: [(x, value)]}, its label naming it a
  prediction."""
  best = {}
  for p in predicted:
    if not p.get("prediction") or p.get("fits") is False or not p.get("token_per_dollar_paper"):
      continue
    gpu = hardware.gpu(p["gpu"])
    if fig_id == "Fig2":
      x, series = p["num_devices"], gpu.paper_label
    elif fig_id == "Fig3":
      if (p["num_devices"] < PAPER_GPUS_PER_NODE or p.get("gpus_per_node") != PAPER_GPUS_PER_NODE
          or p.get("strategy") not in _STRATEGY_SERIES):
        continue
      x, series = p["num_nodes"], _STRATEGY_SERIES[p["strategy"]]
    else:
      raise ValueError(f"predictions are drawn on Fig2 and Fig3, not {fig_id}")
    points = best.setdefault((p["model"], series, gpu.name, calibration_label(p)), {})
    if x not in points or p["token_per_dollar_paper"] > points[x]:
      points[x] = p["token_per_dollar_paper"]
  return [{"model": model, "series": series, "gpu": gpu, "calibration": cal,
           "label": f"predicted ({gpu}, {cal})" + (f": {series}" if series != gpu else ""),
           "points": sorted(points.items())}
          for (model, series, gpu, cal), points in sorted(best.items())]


def plot_predictions(predicted: list[dict], paper: list[dict], out_dir: Path) -> Path | None:
  """Predicted points (slm_jax.predict's records, e.g. benchmarks/predict_paper_*.jsonl) beside
  the paper's Figures 2 (by GPU count, per GPU type) and 3 (A100-80GB, by node count, per
  scheme), in Token/Dollar of the paper's unit. A prediction is drawn as the band between its
  overlap bounds (exposed fraction 0 and 1) where both are given, dotted, and labelled
  "predicted"; points that do not fit are left out. `paper`: report.read_paper()'s rows."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  figs = {f: predicted_curves(predicted, f) for f in ("Fig2", "Fig3")}
  if not figs["Fig2"] and not figs["Fig3"]:
    return None
  models = [m for m in ("100m", "500m", "1b", "2b")
            if any(c["model"] == m for cs in figs.values() for c in cs)]
  fig, axes = plt.subplots(2, len(models), figsize=(4.5 * len(models), 8), squeeze=False)
  for col, model in enumerate(models):
    name = model.upper()
    for row, (fig_id, xfield) in enumerate((("Fig2", "num_devices"), ("Fig3", "num_nodes"))):
      ax = axes[row][col]
      # The paper's Figure 3 is of the A100-80GB: its predictions only.
      mine = [c for c in figs[fig_id] if c["model"] == model
              and (fig_id == "Fig2" or c["gpu"] == "A100-80GB")]
      for i, s in enumerate(sorted({c["series"] for c in mine})):
        color = plt.cm.tab10(i)
        ps = sorted((q for q in paper if q["figure"] == fig_id and q["model"] == name
                     and q["series"] == s and not q.get("oom")), key=lambda q: q["x"])
        if ps:
          ax.plot([q["x"] for q in ps], [q["token_per_dollar"] for q in ps], "-o", color=color,
                  label=f"paper (PyTorch, measured): {s}")
        # The band between the calibrations (the overlap bounds) at each x.
        values = {}
        for c in mine:
          if c["series"] == s:
            for x, v in c["points"]:
              values.setdefault(x, []).append(v)
        xs = sorted(values)
        if xs:
          hi, lo = [max(values[x]) for x in xs], [min(values[x]) for x in xs]
          ax.plot(xs, hi, ":", color=color, label=f"predicted (slm_jax): {s}")
          ax.fill_between(xs, lo, hi, color=color, alpha=0.15)
      ax.set_xscale("log", base=2)
      ax.set_title(f"{fig_id} {name}" + (" (A100-80GB)" if fig_id == "Fig3" else ""))
      ax.set_xlabel(xfield.replace("_", " "))
      ax.grid(alpha=0.3)
      if ax.get_legend_handles_labels()[0]:  # a panel with neither the paper's nor our points
        ax.legend(fontsize=6)
  axes[0][0].set_ylabel("Token/Dollar (paper units)")
  axes[1][0].set_ylabel("Token/Dollar (paper units)")
  fig.suptitle("Predicted, not measured: slm_jax (JAX)\nbeside the paper's PyTorch "
               "measurements;\nbands: no overlap to full overlap", fontsize=9)
  fig.tight_layout(rect=(0, 0, 1, 0.93))
  path = Path(out_dir) / "predicted_fig2_fig3.png"
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
