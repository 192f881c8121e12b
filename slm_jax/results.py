"""The results schema: one JSON record per run, appended to `<workdir>/results.jsonl`.

The field names are a public contract read by the sweep, the report and users' own tools
(docs/results.md, "Results schema"). Add fields freely; never rename or drop one.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import re
import socket
import subprocess
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import jax
import ml_collections

from slm_jax import config as config_lib
from slm_jax import measure, pricing
from slm_jax.model import count_params, flops_per_token

SCHEMA_VERSION = 1
STATUSES = ("ok", "oom", "error", "dry_run", "nan", "preempted")
REQUIRED = (
    "schema_version", "run_id", "timestamp", "status", "message", "stack", "versions",
    "git_commit", "device_kind", "num_devices", "num_processes", "model", "params",
    "flops_per_token", "attention", "strategy", "per_device_batch", "global_batch", "seq_len",
    "step_time_s", "tokens_per_s", "tokens_per_s_per_device", "mfu", "peak_memory_bytes",
    "compile_s", "price_per_device_hour", "token_per_dollar", "final_loss", "config")
# The record's numbers (docs/results.md): a reader blanks a value of another type there (a
# record edited by hand, or written by another tool) rather than fail on it.
NUMBERS = (
    "num_devices", "num_processes", "params", "flops_per_token", "per_device_batch",
    "global_batch", "seq_len", "tokens_per_s", "tokens_per_s_per_device",
    "achieved_tflops_per_device", "peak_tflops", "mfu", "peak_fp8_tflops", "mfu_fp8",
    "peak_memory_bytes", "expected_memory_bytes", "memory_budget_bytes", "compile_s", "warmup_s",
    "price_per_device_hour", "token_per_dollar", "token_per_dollar_paper", "final_loss",
    "param_bytes_per_device", "grad_bytes_per_device", "opt_state_bytes_per_device",
    "temp_bytes_per_device", "steps_trained", "tokens_trained", "train_s", "dollars_spent",
    "final_eval_loss", "train_tokens_per_s", "resumed_from_step")
STEP_TIME_STATS = ("median", "min", "max", "mean", "stdev")
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def git_commit() -> str:
  """HEAD of the checkout slm_jax runs from (+"-dirty" with local changes), or $SLM_JAX_COMMIT
  where the tree was copied without its .git (as onto a cloud GPU machine)."""
  if os.environ.get("SLM_JAX_COMMIT"):
    return os.environ["SLM_JAX_COMMIT"]
  root = Path(__file__).resolve().parent.parent
  try:
    head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True, timeout=10).stdout.strip()
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return head + ("-dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return "unknown"


CAMPAIGN_ENV = "SLM_JAX_CAMPAIGN"


def campaign_flag():
  """--campaign, defined once for all of slm_jax's commands (several can share a process, as in
  the tests). For a run, sweep or compare it names the campaign their records belong to; for
  the report, the campaigns to draw (comma-separated)."""
  from absl import flags

  if "campaign" not in flags.FLAGS:
    flags.DEFINE_string(
        "campaign", None, "Runs, sweeps and compares: the measurement campaign their records "
        "belong to (the record's `campaign`; default: the commit), passed on to every process "
        "they start. The report: draw figures and answer questions from these campaigns only "
        "(comma-separated; a commit's first 7+ hex digits name a record without one); default: "
        "per figure, the campaign with the most points, ties to the newest.")
  return flags.FLAGS["campaign"]


def campaign() -> str:
  """The campaign a record belongs to: records compared in one figure or ratio must share it.
  `--campaign NAME` sets it for a command and the processes it starts; by default, the commit."""
  return os.environ.get(CAMPAIGN_ENV) or git_commit()


def new_run_id() -> str:
  return uuid.uuid4().hex[:12]


def versions(device=None) -> dict:
  out = {"python": platform.python_version()}
  for name in _PACKAGES:
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      out[name] = None
  device = device or jax.devices()[0]
  out["platform_version"] = getattr(getattr(device, "client", None), "platform_version", None)
  return out


@functools.lru_cache(maxsize=1)
def gpu_identity() -> list[dict] | None:
  """The NVIDIA GPUs this process may use, by nvidia-smi's index, UUID and PCI bus; None where
  nvidia-smi does not answer. Two chips of one host can run one step at different speeds
  (benchmarks/PERF_NOTES.md section 19), and a hostname need not tell hosts apart (the two-H200
  hosts of the 2026-11-30 campaigns all reported "vm"); the UUIDs do. Indices are nvidia-smi's
  (PCI order), which CUDA shares unless CUDA_DEVICE_ORDER says otherwise."""
  cmd = ["nvidia-smi", "--query-gpu=index,uuid,pci.bus_id", "--format=csv,noheader"]
  visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
  if visible:
    cmd += ["-i", visible]
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
  except (OSError, subprocess.SubprocessError):
    return None
  if out.returncode != 0:
    return None
  rows = [[x.strip() for x in line.split(",")] for line in out.stdout.splitlines() if line.strip()]
  return [{"index": r[0], "uuid": r[1], "pci_bus_id": r[2]} for r in rows if len(r) == 3] or None


class DeviceInfo(NamedTuple):
  """What a record needs of a device, for records written where JAX does not hold it."""
  device_kind: str
  platform: str


def make_record(c: ml_collections.ConfigDict, *, status: str, message: str = "",
                measured: dict | None = None, devices=None, tag: str | None = None,
                run_id: str | None = None, stack: str = "jax") -> dict:
  """A complete record for config `c`: what was asked, what was found, what was measured.

  `tag` labels the record for the tool that asked for it (the sweep's point key); `stack` is
  the framework that ran it ("torch" for slm_jax.torch_ref, which passes DeviceInfo devices)."""
  assert status in STATUSES, status
  measured = dict(measured or {})
  devices = list(devices if devices is not None else jax.devices())
  num_devices = measured.pop("num_devices",
                             1 if c.strategy == "single" else (c.num_devices or len(devices)))
  device_kind = devices[0].device_kind
  mcfg = config_lib.model_config(c)
  fpt = flops_per_token(mcfg, c.seq_len)
  price, price_source = pricing.price_per_device_hour(device_kind, c.price_per_device_hour)
  peak = measure.peak_tflops(device_kind, c.peak_tflops)
  # FP8 runs keep `mfu` against the bf16 peak (comparable with every other record) and add
  # their MFU against the FP8 peak, which is what their GEMMs could reach.
  peak_fp8 = measure.peak_fp8_tflops(device_kind) if c.get("fp8", False) else None
  tps = measured.get("tokens_per_s")
  tps_dev = measured.get("tokens_per_s_per_device")
  achieved = tps_dev * fpt / 1e12 if tps_dev else None
  record = {
      "schema_version": SCHEMA_VERSION,
      "run_id": run_id or new_run_id(),
      "tag": tag,
      "timestamp": utc_now(),
      "status": status,
      "message": message,
      "stack": stack,
      "versions": versions(devices[0]),
      "git_commit": git_commit(),
      "campaign": campaign(),
      "hostname": socket.gethostname(),
      "gpus": gpu_identity() if devices[0].platform == "gpu" else None,
      # Process-wide XLA flags change what is measured as much as the config does.
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      # and the NCCL settings of the process (--config.nccl_options or the shell's)
      "nccl_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("NCCL_")},
      "device_kind": device_kind,
      "platform": devices[0].platform,
      "num_devices": num_devices,
      "num_processes": jax.process_count(),
      "model": config_lib.model_name(c),
      # Counted once before training where a run got that far: tracing the model again after
      # a GPU run was seen to stall for minutes (500M on an H100, cause not found).
      "params": measured.pop("params", None) or count_params(mcfg),
      "flops_per_token": fpt,
      "attention": c.attention,
      "strategy": c.strategy,
      "per_device_batch": c.per_device_batch_size,
      "global_batch": measured.pop("global_batch", c.per_device_batch_size * num_devices),
      "seq_len": c.seq_len,
      "step_time_s": None,
      "tokens_per_s": None,
      "tokens_per_s_per_device": None,
      "achieved_tflops_per_device": achieved,
      "peak_tflops": peak,
      "mfu": achieved / peak if achieved and peak else None,
      "peak_fp8_tflops": peak_fp8,
      "mfu_fp8": achieved / peak_fp8 if achieved and peak_fp8 else None,
      "peak_memory_bytes": None,
      "compile_s": None,
      "price_per_device_hour": price,
      "price_source": price_source,
      "token_per_dollar": pricing.token_per_dollar(tps, num_devices, price) if tps else None,
      "token_per_dollar_paper": (pricing.token_per_dollar_paper(tps_dev, device_kind)
                                 if tps_dev else None),
      "final_loss": None,
      "mode": c.get("mode", "benchmark"),
      "config": c.to_dict(),
  }
  record.update(measured)
  return record


def utc_now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def append(path: str | os.PathLike, record: dict) -> None:
  missing = [k for k in REQUIRED if k not in record]
  assert not missing, f"record lacks {missing}"
  append_line(path, record)


def append_line(path: str | os.PathLike, row: dict) -> None:
  """One JSON line, flushed to disk, so a crash keeps every row written before it. (For rows
  outside the results schema, such as the benchmark scripts' timings.)

  A file whose last line was cut short (a full disk, a killed writer) keeps that line as it is,
  and the row starts on a line of its own: glued onto the partial line it would be lost too."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  line = json.dumps(row, default=_jsonable) + "\n"
  with path.open("ab") as f:  # O_APPEND: each write lands at the end, after any other's
    if f.tell() and not _ends_with_newline(path):
      line = "\n" + line
    f.write(line.encode())
    f.flush()
    os.fsync(f.fileno())


def _ends_with_newline(path: Path) -> bool:
  with path.open("rb") as f:
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b"\n"


_warned: set[tuple] = set()


def read(path: str | os.PathLike) -> list[dict]:
  """The records of a results file. A line that is not a JSON object (a write cut short) is
  skipped with one warning naming the file and its line numbers; the rest are still read. A run
  record's number fields that hold something else are read as missing (null), and records of a
  newer schema are read as this version knows them: one warning per file says so."""
  out, bad = [], []
  with open(path, encoding="utf-8", errors="replace") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError:
        row = None
      if isinstance(row, dict):
        out.append(row)
      else:
        bad.append(number)
  if bad:
    lines = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    _warn_once(path, f"skipped unreadable line{'s' * (len(bad) > 1)} {lines} (not a JSON "
               "record; a write cut short?)")
  newer = sorted({v for r in out if _is_number(v := r.get("schema_version"))
                  and v > SCHEMA_VERSION})
  if newer:
    _warn_once(path, f"records of schema_version {newer[-1]}, newer than this slm_jax reads "
               f"({SCHEMA_VERSION}): read as far as it knows them; update slm_jax for the rest")
  blanked = sorted({field for r in out if "schema_version" in r for field in _blank_non_numbers(r)})
  if blanked:
    _warn_once(path, f"read as missing: {', '.join(blanked)} (not a number in some records)")
  return out


def _warn_once(path, message: str) -> None:
  """Once per file and message, however often a tool re-reads the file."""
  if (str(path), message) not in _warned:
    _warned.add((str(path), message))
    print(f"warning: {path}: {message}", file=sys.stderr, flush=True)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _blank_non_numbers(record: dict) -> list[str]:
  """Sets the record's number fields that hold anything else (null aside) to None; their names."""
  blanked = []
  for field in NUMBERS:
    if record.get(field) is not None and not _is_number(record[field]):
      record[field], blanked = None, blanked + [field]
  stats = record.get("step_time_s")
  if stats is not None and not isinstance(stats, dict):
    record["step_time_s"], blanked = None, blanked + ["step_time_s"]
  for stat in STEP_TIME_STATS if isinstance(stats, dict) else ():
    if stats.get(stat) is not None and not _is_number(stats[stat]):
      stats[stat], blanked = None, blanked + [f"step_time_s.{stat}"]
  return blanked


# A campaign named by its commit (records written before campaigns existed).
COMMIT = re.compile(r"[0-9a-f]{7,40}(-dirty)?")


def campaign_of(record: dict) -> str:
  """The record's campaign; records written before campaigns existed: their commit."""
  return record.get("campaign") or record.get("git_commit") or "unknown"


def short_commit(commit: str | None) -> str:
  if not commit:
    return "-"
  return commit[:8] + ("-dirty" if commit.endswith("-dirty") else "")


def campaign_label(campaign: str) -> str:
  return f"commit {short_commit(campaign)}" if COMMIT.fullmatch(campaign) else campaign


def _jsonable(x):
  if hasattr(x, "item"):
    return x.item()
  return str(x)


def fmt(value, spec: str = ",.0f") -> str:
  """A number as `spec` formats it; "-" for anything else (None: not measured)."""
  return format(value, spec) if isinstance(value, (int, float)) else "-"


def _reduce_note(config: dict) -> str:
  schedule = config_lib.reduce_schedule(config)
  return "" if schedule == "xla" else f" (gradients reduced {schedule})"


def summary(record: dict) -> str:
  """A few readable lines for stdout."""
  st = record.get("step_time_s") or {}
  mem = record.get("peak_memory_bytes") or record.get("expected_memory_bytes")
  rows = [
      ("status", record["status"] + (f": {record['message']}" if record["message"] else "")),
      ("model", f"{record['model']} ({record['params']:,} params, "
                f"{record['flops_per_token'] / 1e9:.3f} GFLOP/token)"),
      ("device", f"{record['num_devices']} x {record['device_kind']}"),
      ("attention / strategy", f"{record['attention']} / {record['strategy']}"
                               + _reduce_note(record.get("config") or {})),
      ("batch", f"{record['per_device_batch']}/device, {record['global_batch']} global, "
                f"seq {record['seq_len']}"),
      ("compile", f"{fmt(record.get('compile_s'), '.1f')} s"),
      ("step time", f"median {fmt(st.get('median', None) and st['median'] * 1e3, '.2f')} ms "
                    f"(min {fmt(st.get('min', None) and st['min'] * 1e3, '.2f')}, "
                    f"max {fmt(st.get('max', None) and st['max'] * 1e3, '.2f')})"),
      ("tokens/s", f"{fmt(record.get('tokens_per_s'), ',.0f')} "
                   f"({fmt(record.get('tokens_per_s_per_device'), ',.0f')} per device)"),
      ("MFU", fmt(record.get("mfu") and record["mfu"] * 100, ".1f") + " %"
              + (f" of the bf16 peak, {record['mfu_fp8'] * 100:.1f} % of the FP8 peak"
                 if record.get("mfu_fp8") else "")),
      ("memory", f"{fmt(mem and mem / 2**30, '.2f')} GiB "
                 + ("peak" if record.get("peak_memory_bytes") else "expected by XLA")),
      ("Token/Dollar", f"{fmt(record.get('token_per_dollar'), ',.0f')} tokens per USD "
                       f"({record['price_source']}); paper units "
                       f"{fmt(record.get('token_per_dollar_paper'), ',.0f')}"),
      ("final loss", fmt(record.get("final_loss"), ".4f")),
  ]
  if record.get("mode") == "train":
    rows += [
        ("trained", f"{fmt(record.get('steps_trained'), ',')} steps, "
                    f"{fmt(record.get('tokens_trained'), ',')} tokens, "
                    f"{fmt(record.get('train_s'), '.1f')} s on "
                    f"{record.get('data_source', '-')}"),
        ("Loss/Dollar", f"loss {fmt(record.get('final_loss'), '.4f')} (held-out "
                        f"{fmt(record.get('final_eval_loss'), '.4f')}) for "
                        f"${fmt(record.get('dollars_spent'), '.4f')}"),
        ("checkpoints", record.get("checkpoint_dir") or "-"),
    ]
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


TABLE_COLUMNS = (
    ("model", "model", "{}"), ("attention", "attention", "{}"), ("strategy", "strategy", "{}"),
    ("per_device_batch", "batch/dev", "{}"), ("status", "status", "{}"),
    ("step_time_s.median", "step ms (median)", "{:.1f}", 1e3),
    ("tokens_per_s", "tokens/s", "{:,.0f}"), ("tokens_per_s_per_device", "tokens/s/GPU", "{:,.0f}"),
    ("mfu", "MFU %", "{:.1f}", 100), ("peak_memory_bytes", "peak GiB", "{:.1f}", 2**-30),
    ("expected_memory_bytes", "XLA plan GiB", "{:.1f}", 2**-30),
    ("compile_s", "compile s", "{:.0f}"), ("token_per_dollar_paper", "Token/$ (paper units)",
                                            "{:,.0f}"))


def _get(record: dict, dotted: str):
  for key in dotted.split("."):
    record = record.get(key) if isinstance(record, dict) else None
  return record


def markdown_table(records: list[dict], columns=TABLE_COLUMNS) -> str:
  """One row per record, for benchmarks/README.md and quick looks."""
  lines = ["| " + " | ".join(c[1] for c in columns) + " |",
           "|" + "---|" * len(columns)]
  for r in records:
    lines.append("| " + " | ".join(table_cells(r, columns)) + " |")
  return "\n".join(lines)


def table_cells(record: dict, columns=TABLE_COLUMNS) -> list[str]:
  """The record's cells in `columns`; "-" for a missing value, or one a number column cannot
  format (a row that is not a run record, which read() leaves as it is)."""
  cells = []
  for key, _, template, *scale in columns:
    v = _get(record, key)
    if _is_number(v) and scale:
      v = v * scale[0]
    numeric = template != "{}"
    cells.append("-" if v is None or numeric and not _is_number(v) else template.format(v))
  return cells


def main(argv: list[str]) -> int:
  """`python -m slm_jax.results FILE...`: a table of each results file."""
  if not argv:
    print("usage: python -m slm_jax.results RESULTS.jsonl [...]", file=sys.stderr)
    return 2
  missing = [p for p in argv if not Path(p).is_file()]
  if missing:
    print(f"error: no such results file: {', '.join(missing)}", file=sys.stderr)
    return 2
  for path in argv:
    print(f"{path}\n\n{markdown_table(read(path))}\n")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
