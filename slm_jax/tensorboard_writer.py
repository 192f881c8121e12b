"""TensorBoard event files from the `tensorboard` package alone (no TensorFlow): per-step
scalars, the record's headline numbers, the config as typed HParams, and the summary as text.

A run is `<workdir>/tensorboard/<name>/<run_id>`: `name` is the run's tag (the sweep's point
key) or model_attention_strategy+devices_batch, so TensorBoard's run list reads as the grid;
the run_id leaf keeps repeated runs of one setting apart and ties the run to its record.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

# The settings a person compares runs by. The HParams dashboard shows five hyperparameters at
# first, those marked as differing first (alphabetically): these, or a sweep point's grid
# fields, are the ones marked.
AXES = ("attention", "model", "num_devices", "per_device_batch_size", "strategy")
# Hyperparameters from the record rather than the config (the config's num_devices may be
# 0 = all; the record's is the count used).
RECORD_HPARAMS = ("run_id", "tag", "status", "mode", "stack", "device_kind", "num_devices",
                  "global_batch", "git_commit", "campaign")


def _gib(b):
  return b / 2**30 if b else None


def _ms(record, key):
  v = (record.get("step_time_s") or {}).get(key)
  return v * 1e3 if v else None


# (tag, title, description, value from the record, format): the numbers a record answers, in
# the order a person looks for them. Summary scalars, HParams metric columns and the text table.
HEADLINE = (
    ("summary/tokens_per_s", "tokens/s", "tokens per second over every device, from the median "
     "timed step", lambda r: r.get("tokens_per_s"), ",.0f"),
    ("summary/mfu_percent", "MFU %", "model FLOPs utilisation: achieved FLOP/s per device over "
     "the GPU's dense bf16 peak", lambda r: r.get("mfu") and r["mfu"] * 100, ".1f"),
    ("summary/token_per_dollar", "tokens per USD", "tokens per US dollar at the record's price "
     "per device-hour", lambda r: r.get("token_per_dollar"), ",.0f"),
    ("summary/token_per_dollar_paper", "Token/Dollar (paper units)", "tokens/s per GPU over "
     "the paper's GPU-hour price ratio", lambda r: r.get("token_per_dollar_paper"), ",.0f"),
    ("summary/step_time_ms_median", "median step ms", "median of the timed steps (warm-up "
     "excluded)", lambda r: _ms(r, "median"), ",.2f"),
    ("summary/peak_memory_gib", "peak GiB", "the allocator's peak per device (none on a CPU)",
     lambda r: _gib(r.get("peak_memory_bytes")), ",.2f"),
    ("summary/expected_memory_gib", "XLA plan GiB", "the memory XLA plans per device for one "
     "step", lambda r: _gib(r.get("expected_memory_bytes")), ",.2f"),
    ("summary/compile_s", "compile s", "seconds to compile the step",
     lambda r: r.get("compile_s"), ",.1f"),
    ("summary/final_loss", "final loss", "the last timed (or trained) step's loss",
     lambda r: r.get("final_loss"), ".4f"),
    ("summary/final_eval_loss", "held-out loss", "training: the last held-out loss",
     lambda r: r.get("final_eval_loss"), ".4f"),
    ("summary/dollars_spent", "USD spent", "training: price x devices x loop seconds",
     lambda r: r.get("dollars_spent"), ",.4f"),
    ("summary/mfu_fp8_percent", "MFU % of FP8 peak", "with --config.fp8: achieved FLOP/s per "
     "device over the GPU's dense FP8 peak", lambda r: r.get("mfu_fp8") and r["mfu_fp8"] * 100,
     ".1f"),
)
TABLE = 6  # the first HEADLINE entries, the table at the top of the text summary


def _safe(name: str) -> str:
  name = re.sub(r"[^A-Za-z0-9_.,=+-]+", "_", name).strip("._")
  return name[:200] or "run"


def run_name(c, tag: str | None, model: str, num_devices: int) -> str:
  """The tag, else model_attention_strategy+devices_batch (train runs: _train)."""
  if tag:
    return _safe(tag)
  devices = "" if c.strategy == "single" else str(num_devices)
  mode = "_train" if c.get("mode", "benchmark") == "train" else ""
  return _safe(f"{model}_{c.attention}_{c.strategy}{devices}_b{c.per_device_batch_size}{mode}")


class Writer:
  """One run's event file under `logdir`, created at the first event, so a run that ends up
  writing nothing leaves no empty run behind."""

  def __init__(self, logdir: str | Path):
    self.logdir = Path(logdir)
    self._writer = None
    self.last_step = 0

  def _add(self, summary: summary_pb2.Summary, step: int) -> None:
    if self._writer is None:
      self.logdir.mkdir(parents=True, exist_ok=True)
      self._writer = EventFileWriter(str(self.logdir))
    self.last_step = max(self.last_step, step)
    self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

  def scalar(self, tag: str, value: float, step: int) -> None:
    self._add(summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=tag, simple_value=float(value))]), step)

  def text(self, tag: str, markdown: str, step: int = 0) -> None:
    self._add(text_summary.text_pb(tag, markdown), step)

  def hparams(self, hparams: dict, trial_id: str | None = None,
              differ: tuple[str, ...] = (), metrics: tuple = ()) -> None:
    """`hparams` values are bool, int, float or str (others are written as str). Also writes
    the experiment's layout: each hyperparameter's type, `differ` marked as differing (shown
    first), and the metric columns in the order of `metrics` ((tag, title, description))."""
    clean = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
             for k, v in hparams.items()}
    infos = [api_pb2.HParamInfo(name=k, type=_type(v), differs=k in differ)
             for k, v in clean.items()]
    experiment = api_pb2.Experiment(
        hparam_infos=infos, time_created_secs=time.time(),
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=title,
                                         description=description)
                      for tag, title, description in metrics])
    summary = summary_pb2.Summary()
    summary.value.add(tag=hparams_metadata.EXPERIMENT_TAG, tensor=hparams_metadata.NULL_TENSOR,
                      metadata=hparams_metadata.create_summary_metadata(
                          plugin_data_pb2.HParamsPluginData(experiment=experiment)))
    self._add(summary, 0)
    self._add(hparams_summary.hparams_pb(clean, trial_id=trial_id), 0)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()


def _type(value) -> int:
  if isinstance(value, bool):
    return api_pb2.DATA_TYPE_BOOL
  if isinstance(value, (int, float)):
    return api_pb2.DATA_TYPE_FLOAT64  # TensorBoard has no integer type (it prints 5 digits)
  return api_pb2.DATA_TYPE_STRING


def headline_table(record: dict) -> str:
  """The record's headline numbers as a markdown table."""
  from slm_jax.results import fmt
  rows = HEADLINE[:TABLE]
  return ("| " + " | ".join(title for _, title, _, _, _ in rows) + " |\n|" + "---|" * len(rows)
          + "\n| " + " | ".join(fmt(value(record), spec) for _, _, _, value, spec in rows)
          + " |")


def write_record(writer: Writer, record: dict, name: str) -> None:
  """What the record answers, where TensorBoard shows it first: the headline numbers as
  summary scalars (at the run's last step) and HParams metrics, the config and the record's
  settings as typed HParams, and a text summary that starts with the headline table."""
  from slm_jax.results import summary
  hp = {k: record.get(k) for k in RECORD_HPARAMS}
  hp.update({k: v for k, v in record["config"].items() if isinstance(v, (bool, int, float, str))
             and k not in hp})
  hp["num_devices"] = record["num_devices"]
  hp = {k: ("" if v is None else v) for k, v in hp.items()}
  grid = [kv.split("=", 1)[0] for kv in (record.get("tag") or "").split(",") if "=" in kv]
  differ = tuple(k for k in grid if k in hp) or AXES
  writer.hparams(hp, trial_id=name, differ=differ,
                 metrics=tuple((tag, title, desc) for tag, title, desc, _, _ in HEADLINE))
  for tag, _, _, value, _ in HEADLINE:  # one value per run: a dot at its last step
    v = value(record)
    if isinstance(v, (int, float)):
      writer.scalar(tag, v, writer.last_step)
  status = record["status"] + (f": {record['message']}" if record.get("message") else "")
  writer.text("summary", f"**{name}** — run_id `{record['run_id']}`"
              + (f", tag `{record['tag']}`" if record.get("tag") else "") + f" — {status}\n\n"
              + headline_table(record) + "\n\n```\n" + summary(record) + "\n```")
  writer.close()
