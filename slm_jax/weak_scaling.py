r"""Weak scaling from one GPU to several, read from records: each multi-GPU run against one-GPU
runs of the same work on each of its own chips, in the same campaign, with the uncertainty its
timed steps give.

  python -m slm_jax.weak_scaling benchmarks/h200x2_two_gpu.jsonl

A multi-GPU step runs at its slowest chip's pace, and two chips of one host can differ by 1-2%
alone, so the ratio that prices the scheme is the one against the slower chip's one-GPU run
(each chip's runs of the campaign averaged); against the faster chip it also holds the chips'
gap. Chips are matched by the nvidia-smi UUIDs a record lists in `gpus`, and the one-GPU runs of
the multi-GPU run's own commit are preferred (a campaign may span several commands); records
without `gpus` (written before chips were recorded) are not paired, since their host is unknown.

The uncertainty is one standard error of the ratio, from each median's: the larger of the
timed steps' (1.2533 x 1.4826 x their median absolute deviation / sqrt(steps), robust to a
stack's uneven first and last steps) and the repeats' (the spread of each repeat's median /
sqrt(repeats), which catches slow stretches that steps in a row share).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
from collections import defaultdict

from absl import app

from slm_jax import hardware, predict
from slm_jax.model import PRESETS
from slm_jax.report_doc import Table, markdown
from slm_jax.results import campaign_label, campaign_of, fmt, read, short_commit

_SIZE_ORDER = {name: i for i, name in enumerate(PRESETS)}  # smallest first


def median_se(record: dict) -> float | None:
  """One standard error of the record's median step time, as a fraction of it; None without
  per-step times."""
  times = record.get("step_times_s") or []
  if len(times) < 2:
    return None
  med = statistics.median(times)
  mad = statistics.median(abs(t - med) for t in times)
  se = 1.2533 * 1.4826 * mad / math.sqrt(len(times))
  config = record.get("config") or {}
  steps, repeats = config.get("steps"), config.get("repeats")
  if steps and repeats and repeats >= 2 and steps * repeats == len(times):
    medians = [statistics.median(times[i * steps:(i + 1) * steps]) for i in range(repeats)]
    se = max(se, statistics.stdev(medians) / math.sqrt(repeats))
  return se / med


def chips(record: dict) -> tuple[str, ...]:
  return tuple(g["uuid"] for g in record.get("gpus") or [] if g.get("uuid"))


def work(record: dict) -> tuple:
  """What must match for a one-GPU run to be another run's baseline: campaign, GPU type, stack
  and the per-device step (model, attention, batch, context, FP8, width, PyTorch's setup)."""
  config = record.get("config") or {}
  return (campaign_of(record), record.get("device_kind"), record.get("stack", "jax"),
          record.get("model"), record.get("attention"), record.get("per_device_batch"),
          record.get("seq_len"), bool(config.get("fp8")), config.get("width_multiple", 1),
          record.get("torch_compile_scope"), record.get("torch_compile_mode"),
          record.get("torch_fp8"))


def _usable(record: dict) -> bool:
  return (record.get("status") == "ok" and record.get("mode", "benchmark") == "benchmark"
          and bool(record.get("tokens_per_s_per_device")) and bool(chips(record)))


@dataclasses.dataclass
class Chip:
  uuid: str
  tokens_per_s: float  # the mean of its one-GPU runs
  se: float | None  # fraction
  runs: list[dict]


@dataclasses.dataclass
class Row:
  record: dict  # the multi-GPU run
  slower: Chip
  faster: Chip

  @property
  def tokens_per_s(self) -> float:
    return self.record["tokens_per_s_per_device"]

  @property
  def against_slower(self) -> float:
    return self.tokens_per_s / self.slower.tokens_per_s

  @property
  def against_faster(self) -> float:
    return self.tokens_per_s / self.faster.tokens_per_s

  @property
  def se(self) -> float | None:
    """One standard error of `against_slower`, as a fraction of it."""
    own = median_se(self.record)
    if own is None or self.slower.se is None:
      return None
    return math.hypot(own, self.slower.se)


def _chip(uuid: str, runs: list[dict]) -> Chip:
  tokens = statistics.fmean(r["tokens_per_s_per_device"] for r in runs)
  ses = [median_se(r) for r in runs]
  se = None if None in ses else math.sqrt(sum(s * s for s in ses)) / len(ses)
  return Chip(uuid, tokens, se, runs)


def _nearest(runs: list[dict], record: dict) -> list[dict]:
  """The runs of `record`'s own commit where there are any (its command's, as a jobs file runs
  them), else all of the campaign's."""
  same = [r for r in runs if r.get("git_commit") == record.get("git_commit")]
  return same or runs


def rows(records: list[dict]) -> list[Row]:
  """A row for each multi-GPU run whose every chip ran the same work alone in its campaign;
  by GPU type and size, newest run first."""
  singles: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
  for r in records:
    if _usable(r) and r.get("num_devices") == 1:
      singles[work(r)][chips(r)[0]].append(r)
  out = []
  for r in records:
    if not _usable(r) or (r.get("num_devices") or 1) < 2:
      continue
    alone = singles.get(work(r), {})
    if not all(u in alone for u in chips(r)):
      continue
    per_chip = sorted((_chip(u, _nearest(alone[u], r)) for u in chips(r)),
                      key=lambda c: c.tokens_per_s)
    out.append(Row(r, per_chip[0], per_chip[-1]))
  out.sort(key=lambda row: row.record.get("timestamp") or "", reverse=True)
  out.sort(key=lambda row: (row.record.get("device_kind") or "",
                            _SIZE_ORDER.get(row.record.get("model"), len(_SIZE_ORDER))))
  return out


def _scheme(record: dict) -> str:
  """The scheme, with the options its step had beyond its GPU type's preset of today, and those
  of the preset it lacked (a run from before the preset gained them)."""
  if record.get("stack", "jax") != "jax":
    return f"PyTorch {record.get('strategy')}"
  missing = hardware.preset_options(predict.gpu_of(record)) - predict.options_of(record)
  options = sorted(predict.schedule_of(record)) + [f"without {o}" for o in sorted(missing)]
  return f"{record.get('strategy')}" + (f" ({', '.join(options)})" if options else "")


def _percent(ratio: float, se: float | None) -> str:
  return f"{ratio * 100:.1f}%" + (f" ± {ratio * se * 100:.1f}" if se is not None else "")


def _baseline(row: Row) -> str:
  runs = max(len(row.slower.runs), len(row.faster.runs))
  return (f"{fmt(row.slower.tokens_per_s)} / {fmt(row.faster.tokens_per_s)}"
          + (f" (mean of {runs} runs)" if runs > 1 else ""))


def table(found: list[Row]) -> Table:
  return Table(
      ["model", "GPUs", "batch/GPU", "scheme", "tokens/s per GPU", "one GPU: slower / faster chip",
       "against the slower chip (± 1 s.e.)", "against the faster", "chips", "GPU", "campaign",
       "commit", "tag"],
      [[r.record.get("model", "?").upper(), str(r.record.get("num_devices")),
        str(r.record.get("per_device_batch")), _scheme(r.record), fmt(r.tokens_per_s),
        _baseline(r),
        _percent(r.against_slower, r.se), f"{r.against_faster * 100:.1f}%",
        ", ".join(u.removeprefix("GPU-")[:8] for u in chips(r.record)),
        r.record.get("device_kind") or "?", campaign_label(campaign_of(r.record)),
        short_commit(r.record.get("git_commit")), r.record.get("tag") or "-"]
       for r in found],
      summary=f"{len(found)} multi-GPU runs paired with one-GPU runs on their own chips")


def main(argv: list[str]) -> int:
  paths = argv[1:]
  if not paths:
    print("usage: python -m slm_jax.weak_scaling RESULTS.jsonl [...]", file=sys.stderr)
    return 2
  records = []
  for path in paths:
    try:
      records += read(path)
    except OSError as e:
      print(f"error: cannot read {path}: {e.strerror}", file=sys.stderr)
      return 2
  found = rows(records)
  if not found:
    print("no multi-GPU run has one-GPU runs of the same work on its own chips in its campaign "
          "(records list their chips in `gpus`; run the one-GPU baseline on each chip in the "
          "same campaign, e.g. launch/gpu_queue.py with one job per GPU)")
    return 1
  print(markdown([table(found)]), end="")
  return 0


if __name__ == "__main__":
  app.run(lambda argv: sys.exit(main(argv)))
