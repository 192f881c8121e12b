r"""Redraws the paper's Figures 1-4 from our records, with the paper's points beside them, gives
a verdict on each of the paper's findings, and draws the Loss/Dollar the paper defines but never
measured, from training runs (--config.mode=train).

  python -m slm_jax.report runs/grid/results.jsonl benchmarks/*.jsonl --out report/
  python -m slm_jax.report runs/train/results.jsonl --reprice=H100,A100-80GB --target_loss=3.5

Each plotted point is, as in the paper, the best record over everything not on the plot's axes
(a grid search, then a max), but only over records of one GPU type and one campaign (a
`--campaign` name given to slm_jax.main, .sweep, .compare or .torch_ref.main; records without
one belong to the campaign named by their commit): a curve, and any ratio the report quotes,
never mixes GPU types or code versions. Where several campaigns could draw a figure, the one with
the most points is drawn (ties: the newest; for the scheme figures, first the most points that
two or more schemes measured at one batch on one host); `--campaign` restricts the choice. A
one-GPU run has no distribution scheme: the scheme curves (Figures 3 and 4) come from runs on 2
or more GPUs.

Token/Dollar is in the paper's normalised unit (tokens/s per GPU over the GPU-hour price ratio:
A100-40GB 1.00, A100-80GB 1.46, H100 2.53; H200 3.37, derived); the tables add tokens per US
dollar from the dated price table in slm_jax/hardware.py. Writes PNGs, report.md and index.html
(the same content: the questions, each with its figure and table, and the verdicts).
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from slm_jax import hardware, predict, pricing, results, weak_scaling  # noqa: E402
from slm_jax.errors import UserError  # noqa: E402
from slm_jax.results import (COMMIT, campaign_label, campaign_of, fmt,  # noqa: E402
                             short_commit)
from slm_jax.report_doc import Heading, Image, Items, Para, Table  # noqa: E402
from slm_jax import report_doc  # noqa: E402

PAPER_CSV = Path(__file__).resolve().parent.parent / "third_party/ashkboos24/ashkboos24_figures.csv"
MODELS = ("100m", "500m", "1b", "2b")
# The CPU demo's model (configs/sweeps/tiny.py) gets a panel of its own, after the paper's.
SIZES = MODELS + ("tiny",)
PAPER_MODEL = {"100m": "100M", "500m": "500M", "1b": "1B", "2b": "2B", "tiny": "tiny"}
# A device without a price (a CPU) has no Token/Dollar; its points are tokens/s per device.
UNPRICED_UNIT = "tokens/s per device (no price)"
# Every other attention is a flash kernel (cudnn, pallas; torch sdpa).
ATTENTION_SERIES = {"xla": "vanilla_attention", "eager": "vanilla_attention"}
# Schemes of runs on 2 or more devices. A one-GPU run has none, whatever its `strategy` says:
# every scheme does the same work on one device.
STRATEGY_SERIES = {"ddp": "DDP", "fsdp_full": "FSDP-Full", "fsdp_grad_op": "FSDP-Grad+Optimizer",
                   "hsdp": "HSDP"}
ONE_GPU = "1 GPU"  # the series of one-GPU runs in Figure 4
GPUS_PER_NODE = 8
# A point's speed is the median of at least this many timed steps: shorter runs (the 80 GB
# fit's 3 steps) answer "does it fit", and a short median is a noisier maximum.
MIN_TIMED_STEPS = 10
# A last batch doubling that gains less than this is flat: repeated runs of one point differ by
# about 1%, so a smaller gain is not a rise.
SATURATED = 1.03
# Schemes within this ratio of each other "do not differ much" (the paper's finding 6).
SCHEMES_ALIKE = 1.10
# Two schemes within this ratio are tied for a finding that names a winner: one run each on one
# machine does not separate them (two-GPU runs of one command spread by about 1%).
SCHEME_TIE = 1.01


# ---- records ----------------------------------------------------------------------------

def is_run_record(row) -> bool:
  """A results.jsonl record (benchmark or training), not a row of another benchmark script
  (attention kernels, weight-gradient GEMMs...) that shares a benchmarks/*.jsonl folder."""
  return isinstance(row, dict) and all(
      k in row for k in ("schema_version", "status", "model", "device_kind", "num_devices"))


def load(paths: list[str]) -> tuple[list[dict], dict[str, int]]:
  """(run records, {path: rows skipped because they are not run records})."""
  records, skipped = [], {}
  for path in paths:
    for row in results.read(path):  # it skips a line cut short, with a warning naming it
      if is_run_record(row):
        records.append(row)
      else:
        skipped[path] = skipped.get(path, 0) + 1
  return records, skipped


def in_campaigns(campaign: str, campaigns: tuple[str, ...]) -> bool:
  """Whether `campaign` is one of `campaigns` (all when empty); a campaign named by its commit
  also answers to that commit's first 7 or more hex digits, as `git log` prints it."""
  return not campaigns or any(
      campaign == c or (COMMIT.fullmatch(campaign) and len(c) >= 7 and campaign.startswith(c))
      for c in campaigns)


def gpu_of(record: dict) -> str:
  gpu = hardware.from_device_kind(record.get("device_kind") or "")
  return gpu.paper_label if gpu else (record.get("device_kind") or "?")


def old_torch(record: dict) -> bool:
  """A PyTorch record from before `torch_compile_scope` was recorded: HF's masked SDPA under
  torch.compile (no causal flash kernel) and the loss outside the compiled region. Kept in its
  file; left out of every table and figure."""
  return record.get("stack") == "torch" and "torch_compile_scope" not in record


def schedule_variant(record: dict) -> bool:
  """A run with an XLA option or NCCL setting its GPU type's preset does not have: same model,
  another schedule (predict.schedule_of)."""
  return bool(predict.schedule_of(record))


def variant_of(model: str) -> str | None:
  """The paper size an aligned-width variant ("2b-w128", --config.width_multiple) widens."""
  size, sep, multiple = model.partition("-w")
  return size if sep and size in MODELS and multiple.isdigit() else None


def prepare(records: list[dict], stack: str = "jax", variants: bool = False,
            oom: bool = False) -> list[dict]:
  """ok records (and, with `oom`, out-of-memory ones, whose value is None) of one stack and the
  paper's sizes (or, with `variants`, their aligned-width variants, which change the model)
  timed over MIN_TIMED_STEPS steps or more, with the paper's series labels and axes, the GPU
  type and the campaign."""
  out = []
  for r in records:
    if (r.get("stack") or "jax") != stack or old_torch(r):
      continue
    model = r.get("model") or ""
    wanted = variant_of(model) is not None if variants else model in SIZES
    if r.get("status") not in (("ok", "oom") if oom else ("ok",)) or not wanted:
      continue
    if r.get("mode", "benchmark") != "benchmark":  # training runs have their own figure
      continue
    config = r.get("config") or {}
    if config.get("steps", MIN_TIMED_STEPS) * config.get("repeats", 1) < MIN_TIMED_STEPS:
      continue
    if config.get("fp8"):  # the paper's questions are about bf16 training: FP8 stays apart
      continue
    if schedule_variant(r):  # an A/B of XLA/NCCL options answers its own question, not the paper's
      continue
    value = None
    if r["status"] == "ok":
      # Paper units from the current ratio table, so records written before a GPU had a ratio
      # (H200) still land on the paper's axes.
      value = (pricing.token_per_dollar_paper(r["tokens_per_s_per_device"],
                                              r.get("device_kind", ""))
               if r.get("tokens_per_s_per_device") else None)
      if value is None and unpriced(r):
        value = r.get("tokens_per_s_per_device")
      if value is None:
        continue
    devices = r.get("num_devices") or 1
    scheme = STRATEGY_SERIES.get(r["strategy"], r["strategy"]) if devices > 1 else None
    out.append(dict(
        r, attention_series=ATTENTION_SERIES.get(r["attention"], "flash_attention"),
        gpu_series=gpu_of(r), scheme=scheme, strategy_series=scheme or ONE_GPU,
        num_nodes=max(1, devices // GPUS_PER_NODE) if scheme else None,
        campaign=campaign_of(r), token_per_dollar_paper=None if unpriced(r) else value,
        value=value, value_unit=UNPRICED_UNIT if unpriced(r) else "Token/Dollar (paper units)"))
  return out


def unpriced(record: dict) -> bool:
  """A device no price is known for (a CPU): drawn in tokens/s per device, labelled so."""
  return hardware.from_device_kind(record.get("device_kind") or "") is None


def value_text(record: dict | None, value) -> str:
  """A point's value for a table headed Token/Dollar: a device without a price has its tokens/s
  per device there instead, so the cell says so."""
  text = fmt(value)
  if record is not None and value is not None and unpriced(record):
    return f"{text} tokens/s (no price)"
  return text


def point_text(point: Point) -> str:
  return value_text(point.record, point.value)


def sizes_of(figure) -> list[str]:
  """The paper's sizes, and the demo's where it has points."""
  return [m for m in SIZES if m in MODELS or any(c.model == m for c in figure.curves)]


def best(records: list[dict], keys: tuple[str, ...], value: str = "value") -> dict:
  """{key values: the record with the largest `value`} over everything not in `keys`."""
  out = {}
  for r in records:
    if r.get(value) is None:
      continue
    k = tuple(r[key] for key in keys)
    if k not in out or r[value] > out[k][value]:
      out[k] = r
  return out


def read_paper(path: Path = PAPER_CSV) -> list[dict]:
  """The paper's plotted points; OOM points (drawn at 0 in the paper) have no value."""
  def num(s):
    return float(s) if s not in ("", None) else None
  with open(path) as f:
    return [dict(r, x=int(r["x"]), oom=r["oom"] == "1",
                 token_per_dollar=None if r["oom"] == "1" else num(r["token_per_dollar"]),
                 err_low=num(r["err_low"]), err_high=num(r["err_high"]))
            for r in csv.DictReader(f)]


def paper_best(paper: list[dict], figure: str, model: str, series: str | None = None):
  return max((p["token_per_dollar"] for p in paper if p["figure"] == figure
              and p["model"] == PAPER_MODEL[model] and p["token_per_dollar"] is not None
              and (series is None or p["series"] == series)), default=None)


# ---- one GPU type, one campaign ---------------------------------------------------------

@dataclasses.dataclass
class Selection:
  """The records (ok and oom) of one GPU type and one campaign."""
  gpu: str
  campaign: str
  records: list[dict]

  def label(self) -> str:
    return f"{self.gpu}, {campaign_label(self.campaign)}"


def choose(records: list[dict], key: tuple[str, ...], campaigns: tuple[str, ...] = (),
           prefer: Callable[[str, str], bool] | None = None,
           compared: str | None = None) -> Selection | None:
  """The GPU type and campaign to draw from: of those `prefer`(gpu, campaign) likes, the one
  with the most measured points (distinct `key` values; a point that ran out of memory was
  measured too), then the newest; only `campaigns` when given. With `compared` (the key field
  that tells the curves apart, e.g. the scheme), first the most points that two or more curves
  measured at one global batch on one host (the GPUs' UUIDs, where recorded): a campaign that
  ran each scheme at other batches, or on another machine, compares nothing of the schemes,
  however many points it has."""
  groups = defaultdict(list)
  for r in records:
    if in_campaigns(r["campaign"], campaigns):
      groups[(r["gpu_series"], r["campaign"])].append(r)
  if not groups:
    return None

  def score(item):
    (gpu, campaign), rs = item
    points = {tuple(r[k] for k in key) for r in rs}
    shared = 0
    if compared is not None:
      rest = [k for k in key if k != compared]
      series = defaultdict(set)
      for r in rs:
        host = hardware.host_key(r.get("gpus"))
        series[tuple(r[k] for k in rest) + (r.get("global_batch"), host)].add(r[compared])
      shared = sum(len(s) > 1 for s in series.values())
    return (bool(prefer and prefer(gpu, campaign)), shared, len(points),
            max(r.get("timestamp") or "" for r in rs))

  (gpu, campaign), rs = max(groups.items(), key=score)
  return Selection(gpu, campaign, rs)


@dataclasses.dataclass
class Point:
  x: int
  value: float
  low: float | None   # error bar: Token/Dollar at the slower quartile step time
  high: float | None  # ... and at the faster one
  runs: int           # the value is the best of this many runs
  record: dict


@dataclasses.dataclass
class Curve:
  model: str
  series: str
  selection: Selection
  points: list[Point]
  oom: list[int]  # x values where every run ran out of memory

  def top(self) -> Point | None:
    return max(self.points, key=lambda p: p.value, default=None)

  def runs(self) -> int:
    return sum(p.runs for p in self.points)


def spread(record: dict, value: float) -> tuple[float | None, float | None]:
  """Token/Dollar at the 75th and 25th percentile of the run's timed step times (the middle
  half of its steps; a stray slow or fast step does not stretch the bar); the value itself is
  from the median step time."""
  times = record.get("step_times_s") or []
  median = (record.get("step_time_s") or {}).get("median")
  if len(times) < 4 or not median:
    return None, None
  q25, q75 = np.percentile(times, [25, 75])
  return value * median / q75, value * median / q25


def curves_of(selection: Selection | None, xfield: str, sfield: str) -> list[Curve]:
  if selection is None:
    return []
  by = defaultdict(list)
  for r in selection.records:
    by[(r["model"], r[sfield])].append(r)
  out = []
  for (model, series), rs in sorted(by.items(), key=lambda kv: (SIZES.index(kv[0][0]),
                                                                 str(kv[0][1]))):
    ok, oom = defaultdict(list), set()
    for r in rs:
      if r["value"] is None:
        oom.add(r[xfield])
      else:
        ok[r[xfield]].append(r)
    points = []
    for x, candidates in sorted(ok.items()):
      top = max(candidates, key=lambda r: r["value"])
      points.append(Point(x, top["value"], *spread(top, top["value"]), len(candidates), top))
    out.append(Curve(model, series, selection, points, sorted(oom - set(ok))))
  return out


# ---- figures: one function each; draw() turns any of them into a PNG ----------------------

@dataclasses.dataclass
class Figure:
  id: str                                # "Fig1": the file fig1.png, the paper's figure drawn
  title: str
  xlabel: str
  curves: list[Curve]
  selections: list[tuple[str, Selection]]  # (what it draws, from which GPU type and campaign)
  paper: list[dict]                        # the paper's points of this figure
  empty: str = "slm_jax: not measured"     # written on a panel without a point of ours
  missing: list[str] = dataclasses.field(default_factory=list)  # curves not measured, why
  # Predicted curves (slm_jax.predict.predicted_curves), drawn apart and never in a ratio.
  predicted: list[dict] = dataclasses.field(default_factory=list)
  # The other campaigns on the drawn GPU type, with their curves: named in the text, each on
  # its own (a ratio stays within one campaign); never drawn, never in a verdict.
  others: list[tuple[Selection, list[Curve]]] = dataclasses.field(default_factory=list)

  def runs_note(self) -> str:
    counts = [p.runs for c in self.curves for p in c.points]
    if not counts:
      return ""
    lo, hi = min(counts), max(counts)
    return f"each point the best of {lo} run{'s' * (hi > 1)}" if lo == hi else \
        f"each point the best of {lo}-{hi} runs"


def _paper_points(paper: list[dict], fig_id: str) -> list[dict]:
  return [p for p in paper if p["figure"] == fig_id]


def fig1_attention(ours: list[dict], paper: list[dict], campaigns=()) -> Figure:
  """Best over everything, by global batch, vanilla vs flash attention."""
  sel = choose(ours, ("model", "attention_series", "global_batch"), campaigns)
  return Figure("Fig1", "best over everything, by global batch", "global batch",
                curves_of(sel, "global_batch", "attention_series"),
                [("", sel)] if sel else [], _paper_points(paper, "Fig1"))


def fig2_gpu_types(ours: list[dict], paper: list[dict], campaigns=()) -> Figure:
  """Flash attention by GPU count, one curve per GPU type; GPU types share a campaign where
  one campaign measured several (else each curve names its own)."""
  flash = [r for r in ours if r["attention_series"] == "flash_attention"]
  shared = shared_campaign(flash, campaigns)
  sels = []
  for gpu in sorted({r["gpu_series"] for r in flash}):
    sel = choose([r for r in flash if r["gpu_series"] == gpu], ("model", "num_devices"),
                 campaigns, prefer=lambda g, c: c == shared)
    if sel:
      sels.append(("", sel))
  return Figure("Fig2", "flash attention, by GPU count, per GPU type", "GPUs",
                [c for _, s in sels for c in curves_of(s, "num_devices", "gpu_series")], sels,
                _paper_points(paper, "Fig2"))


def shared_campaign(records: list[dict], campaigns=()) -> str | None:
  """The campaign that measured the most GPU types (2 or more; ties: the most records, then
  the newest), or None."""
  gpus, count, newest = defaultdict(set), defaultdict(int), defaultdict(str)
  for r in records:
    if in_campaigns(r["campaign"], campaigns):
      gpus[r["campaign"]].add(r["gpu_series"])
      count[r["campaign"]] += 1
      newest[r["campaign"]] = max(newest[r["campaign"]], r.get("timestamp") or "")
  shared = [c for c in gpus if len(gpus[c]) > 1]
  return max(shared, key=lambda c: (len(gpus[c]), count[c], newest[c]), default=None)


def fig3_nodes(ours: list[dict], paper: list[dict], campaigns=()) -> Figure:
  """By node count (1 node = the best of 2-8 GPUs), one curve per scheme: runs on 2 or more
  GPUs only. The paper's is on the A100-80GB, so that GPU type is drawn where measured."""
  sel = choose([r for r in ours if r["scheme"]], ("model", "scheme", "num_nodes"), campaigns,
               prefer=lambda g, c: g == "A100-80GB", compared="scheme")
  return Figure("Fig3", "by node count (1 node = best of 2-8 GPUs), per scheme (paper: "
                "A100-80GB)", "nodes",
                curves_of(sel, "num_nodes", "scheme"), [("schemes", sel)] if sel else [],
                _paper_points(paper, "Fig3"), empty="slm_jax: not measured (no multi-GPU runs)",
                missing=[] if sel else [NO_SCHEMES])


def fig4_schemes(ours: list[dict], paper: list[dict], campaigns=()) -> Figure:
  """By global batch, one curve per scheme (runs on 2 or more GPUs), and the one-GPU runs as
  a curve of their own (no scheme)."""
  schemes = [r for r in ours if r["scheme"]]
  multi = choose(schemes, ("model", "scheme", "global_batch"), campaigns, compared="scheme")
  one = choose([r for r in ours if not r["scheme"]], ("model", "global_batch"), campaigns,
               prefer=lambda g, c: multi is not None and g == multi.gpu)
  sels = [(what, s) for what, s in (("schemes", multi), (ONE_GPU, one)) if s]
  others = []
  if multi is not None:
    rest = defaultdict(list)
    for r in schemes:
      if (r["gpu_series"] == multi.gpu and r["campaign"] != multi.campaign
          and in_campaigns(r["campaign"], campaigns)):
        rest[r["campaign"]].append(r)
    for campaign, rs in sorted(rest.items()):
      sel = Selection(multi.gpu, campaign, rs)
      others.append((sel, curves_of(sel, "global_batch", "scheme")))
  return Figure("Fig4", "by global batch, per scheme", "global batch",
                curves_of(multi, "global_batch", "scheme")
                + curves_of(one, "global_batch", "strategy_series"), sels,
                _paper_points(paper, "Fig4"), missing=[] if multi else [NO_SCHEMES],
                others=others)


NO_SCHEMES = "slm_jax schemes: not measured (no runs on 2 or more GPUs)"
FIGURES = (fig1_attention, fig2_gpu_types, fig3_nodes, fig4_schemes)

PLOT_STYLE = {"font.size": 13, "axes.titlesize": 15, "axes.labelsize": 13, "xtick.labelsize": 12,
              "ytick.labelsize": 12, "legend.fontsize": 12, "figure.titlesize": 15}


def _label(series: str) -> str:
  return series.replace("_", " ")


def draw(figure: Figure, out_dir: Path) -> Path:
  """Four panels (one per size), the paper's points dashed and hollow, ours solid, with error
  bars; out-of-memory points as crosses on the panel's floor, never as zeros. Sized so the
  text stays readable on a 1200 px wide page."""
  with plt.rc_context(PLOT_STYLE):
    panels = sizes_of(figure)
    cols = 3 if len(panels) > 4 else 2
    fig, axes = plt.subplots(2, cols, figsize=(6 * cols, 10), layout="constrained")
    for ax in axes.flat[len(panels):]:
      ax.set_visible(False)
    # The paper's series first, in its order, so a scheme keeps its colour from figure to figure.
    series = list(dict.fromkeys([p["series"] for p in figure.paper]
                                + sorted({c.series for c in figure.curves}, key=str)
                                + sorted({c["series"] for c in figure.predicted})))
    colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(series)}
    for ax, model in zip(axes.flat, panels):
      xs = set()
      for s in series:
        ps = sorted((p for p in figure.paper if p["model"] == PAPER_MODEL[model]
                     and p["series"] == s), key=lambda p: p["x"])
        ok = [p for p in ps if p["token_per_dollar"] is not None]
        if ok:
          err = [[max(0.0, p["token_per_dollar"] - (p["err_low"] or p["token_per_dollar"]))
                  for p in ok],
                 [max(0.0, (p["err_high"] or p["token_per_dollar"]) - p["token_per_dollar"])
                  for p in ok]]
          ax.errorbar([p["x"] for p in ok], [p["token_per_dollar"] for p in ok], yerr=err,
                      fmt="--o", color=colors[s], mfc="none", alpha=0.7, capsize=3,
                      label=f"paper: {_label(s)}")
        _oom(ax, [p["x"] for p in ps if p["oom"]], colors[s], "x")
        xs |= {p["x"] for p in ps}
      mine = [c for c in figure.curves if c.model == model]
      for c in mine:
        if c.points:
          ax.errorbar([p.x for p in c.points], [p.value for p in c.points],
                      yerr=[[max(0.0, p.value - (p.low or p.value)) for p in c.points],
                            [max(0.0, (p.high or p.value) - p.value) for p in c.points]],
                      fmt="-s", color=colors[c.series], capsize=3,
                      label=f"slm_jax: {_label(c.series)}")
        _oom(ax, c.oom, colors[c.series], "X")
        xs |= {p.x for p in c.points} | set(c.oom)
      for c in figure.predicted:
        if c["model"] == model:  # dotted and hollow: a prediction, not a measurement
          ax.plot([x for x, _ in c["points"]], [v for _, v in c["points"]], ":D",
                  color=colors[c["series"]], mfc="none", markersize=7,
                  alpha=0.4 if c["calibration"] == "all hidden" else 0.9,
                  label=c["label"])
          xs |= {x for x, _ in c["points"]}
      if model in unmeasured_panels(figure):
        ax.text(0.5, 0.5, figure.empty, transform=ax.transAxes, ha="center", va="center",
                color="dimgray", fontsize=14, bbox=dict(fc="white", ec="lightgray"))
      ax.set_xscale("log", base=2)
      if xs:
        ticks = sorted(xs)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
      ax.set_ylim(bottom=0)
      ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
      ax.set_title(PAPER_MODEL[model])
      ax.set_xlabel(figure.xlabel)
      units = {p.record["value_unit"] for c in mine for p in c.points}
      if units and units != {"Token/Dollar (paper units)"}:
        ax.set_ylabel(", ".join(sorted(units)))
      ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
      if not ax.get_ylabel():
        ax.set_ylabel("Token/Dollar (paper units)")
    handles = {h.get_label(): h for ax in axes.flat
               for h in ax.get_legend_handles_labels()[0]}
    handles.update({"out of memory (paper: thin x)": plt.Line2D(
        [], [], ls="", marker="X", color="gray", markersize=9)})
    # Predictions' labels are long (GPU type, calibration, scheme): two columns keep them on
    # the page.
    fig.legend(handles.values(), handles.keys(), loc="outside lower center",
               ncol=2 if figure.predicted else 3, frameon=False)
    sources = [f"slm_jax{' ' + what if what else ''}: {s.label()}" for what, s in figure.selections]
    sources = "; ".join(filter(None, sources + figure.missing + [figure.runs_note()]) if sources
                        else figure.missing or ["slm_jax: not measured"])
    if figure.predicted:
      sources += "; dotted, hollow diamonds: predicted by slm_jax.predict, not measured"
    fig.suptitle(f"{figure.id}: {figure.title}\n" + textwrap.fill(sources, 100))
    path = out_dir / f"{figure.id.lower()}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
  return path


def unmeasured_panels(figure: Figure) -> list[str]:
  """The sizes without a point of ours (measured or out of memory): their panels say so."""
  return [m for m in MODELS if not any(c.points or c.oom for c in figure.curves if c.model == m)]


def _oom(ax, xs: list[int], color, marker: str) -> None:
  if xs:  # x in data, y on the panel's floor (axes coordinates)
    ax.plot(xs, [0.03] * len(xs), ls="", marker=marker, color=color, markersize=11,
            transform=ax.get_xaxis_transform(), clip_on=False)


def plot_breakdown(ours: list[dict], out_dir: Path, campaigns=()) -> tuple[Path, Selection] | None:
  """Stacked bars of where the best profiled step of each size and attention spends its time,
  from one GPU type and campaign."""
  profiled = [r for r in ours if (r.get("breakdown") or {}).get("ms")]
  sel = choose(profiled, ("model", "attention"), campaigns)
  if sel is None:
    return None
  rows = sorted(best(sel.records, ("model", "attention")).values(),
                key=lambda r: (SIZES.index(r["model"]), r["attention"]))
  categories = sorted({c for r in rows for c in r["breakdown"]["ms"]})
  with plt.rc_context(PLOT_STYLE):
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(rows) + 3), 6))
    bottoms = [0.0] * len(rows)
    for i, cat in enumerate(categories):
      vals = [r["breakdown"]["ms"].get(cat, 0.0) for r in rows]
      ax.bar(range(len(rows)), vals, bottom=bottoms, label=cat, color=plt.cm.tab20(i % 20))
      bottoms = [b + v for b, v in zip(bottoms, vals)]
    ax.set_xticks(range(len(rows)),
                  [f"{PAPER_MODEL[r['model']]}\n{r['attention']}\nb{r['per_device_batch']}"
                   for r in rows])
    ax.set_ylabel("ms per step")
    ax.set_title(f"Where the step goes (best profiled point per size and attention)\n"
                 f"{sel.label()}")
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1))
    path = out_dir / "breakdown.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")  # the legend sits outside the axes
    plt.close(fig)
  return path, sel


# ---- training runs: Loss/Dollar -----------------------------------------------------------

def train_curves(records: list[dict], reprice: tuple[str, ...] = (),
                 runs: tuple[str, ...] = ()) -> list[dict]:
  """Loss against dollars of every finished training run (of those whose tag matches one of
  the shell patterns `runs`, when given), and of each re-priced at the hourly price of the
  GPU types in `reprice` (same seconds, another price: labelled so)."""
  out = []
  for r in records:
    if r.get("status") != "ok" or r.get("mode") != "train" or not r.get("loss_vs_dollars"):
      continue
    if runs and not any(fnmatch.fnmatchcase(r.get("tag") or "", p) for p in runs):
      continue
    known = hardware.from_device_kind(r.get("device_kind", ""))
    gpu = known.name if known else r.get("device_kind", "?")
    config = r.get("config") or {}
    label = (f"{PAPER_MODEL.get(r['model'], r['model'])} on {r['num_devices']} x {gpu}"
             + (f", fp8 {config.get('fp8_scaling')}" if config.get("fp8") else "")
             + (f" [{r['tag']}]" if r.get("tag") else ""))
    prices = [(label, 1.0)] + [
        (f"{label} at {g} price (re-priced)",
         hardware.gpu(g).usd_per_hour / r["price_per_device_hour"])
        for g in reprice if g != gpu and r.get("price_per_device_hour")]
    for name, scale in prices:
      out.append({"label": name, "record": r, "repriced": scale != 1.0,
                  "price": r.get("price_per_device_hour") and r["price_per_device_hour"] * scale,
                  "dollars": [d * scale for d, _ in r["loss_vs_dollars"]],
                  # The whole run's, evaluations and checkpoints after the last step included.
                  "spent": (r["dollars_spent"] * scale
                            if isinstance(r.get("dollars_spent"), (int, float)) else None),
                  "loss": smooth([l for _, l in r["loss_vs_dollars"]]),
                  "eval": [(d * scale, l) for _, d, l in r.get("eval_losses") or []
                           if d is not None]})
  return out


def smooth(losses: list[float]) -> list[float]:
  """Trailing mean over 2% of the run: one batch's loss is too noisy to read a target off."""
  w = max(1, len(losses) // 50)
  total, out = 0.0, []
  for i, x in enumerate(losses):
    total += x - (losses[i - w] if i >= w else 0.0)
    out.append(total / min(i + 1, w))
  return out


def dollars_to(curve: dict, target: float) -> float | None:
  """Dollars spent when the (smoothed) training loss first reaches `target`."""
  return next((d for d, l in zip(curve["dollars"], curve["loss"]) if l <= target), None)


def common_target(curves: list[dict]) -> float | None:
  """The lowest loss every run reaches: the largest of their smoothed minima."""
  return max((min(c["loss"]) for c in curves), default=None)


def eval_dollars_to(curve: dict, target: float) -> float | None:
  """Dollars spent at the first held-out evaluation at or below `target`."""
  return next((d for d, l in curve["eval"] if l <= target), None)


def common_eval_target(curves: list[dict]) -> float | None:
  """The lowest held-out loss every evaluated run reaches. Training loss alone misleads once
  a run repeats its corpus: it keeps falling while the held-out loss stops."""
  return max((min(l for _, l in c["eval"]) for c in curves if c["eval"]), default=None)


def loss_targets(curves: list[dict], target_loss: float | None) -> tuple[str, float | None]:
  """("held-out" or "training", the loss the table is ordered by): a held-out loss wherever a
  run was evaluated (`target_loss`, else the lowest every evaluated run reaches), the training
  loss only where none was."""
  held = any(c["eval"] for c in curves)
  if target_loss is not None:
    return ("held-out" if held else "training"), target_loss
  return ("held-out", common_eval_target(curves)) if held else ("training",
                                                                common_target(curves))


def plot_loss_vs_dollars(curves: list[dict], out_dir: Path, target: float | None,
                         kind: str = "held-out") -> Path | None:
  if not curves:
    return None
  with plt.rc_context(PLOT_STYLE):
    names = [f"{c['label']}, {campaign_label(campaign_of(c['record']))}" for c in curves]
    # Two legend columns fit the figure's width only for short labels; long ones would be cut.
    ncol = 2 if max(map(len, names)) <= 55 else 1
    fig, ax = plt.subplots(figsize=(12, 7 + 0.3 * (len(curves) + 3) / ncol),
                           layout="constrained")
    for i, (c, name) in enumerate(zip(curves, names)):
      color = plt.cm.tab10(i % 10)
      ax.plot(c["dollars"], c["loss"], "--" if c["repriced"] else "-", color=color, label=name)
      if c["eval"]:
        ax.plot(*zip(*c["eval"]), "o", color=color, mfc="none")
    ax.plot([], [], "-", color="black", label="line: training loss (smoothed)")
    ax.plot([], [], "o", color="black", mfc="none", label="circles: held-out loss")
    if target is not None:
      ax.axhline(target, color="gray", lw=1, ls=":", label=f"target {kind} loss {target:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("US dollars spent (price per GPU-hour x GPUs x training time)")
    ax.set_ylabel("loss")
    ax.set_title("Loss/Dollar")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=ncol, fontsize=11, frameon=False)
    path = out_dir / "loss_vs_dollars.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
  return path


def loss_dollar_table(curves: list[dict], target: float, kind: str = "held-out") -> Table:
  """Dollars each run needed to reach `target` (a `kind` loss), ordered by them, beside the
  dollars to the lowest training loss every run reaches."""
  train_target = common_target(curves)
  headers = ["run", "GPU", "campaign", "commit", "price/GPU-hour", "steps", "tokens/s",
             f"USD to {kind} loss {target:.3f}"]
  if kind == "held-out":
    headers.append(f"USD to training loss {train_target:.3f}")
  headers += ["final loss", "held-out loss (best)", "USD spent"]

  def to_target(c):
    return eval_dollars_to(c, target) if kind == "held-out" else dollars_to(c, target)

  rows = []
  for c in sorted(curves, key=lambda c: to_target(c) or float("inf")):
    r = c["record"]
    best_eval = min((l for _, l in c["eval"]), default=None)
    row = [c["label"], gpu_of(r), campaign_label(campaign_of(r)), short_commit(r.get("git_commit")),
           fmt(c["price"], ".2f"), fmt(r.get("steps_trained"), ","), fmt(r.get("tokens_per_s")),
           fmt(to_target(c), ".4f")]
    if kind == "held-out":
      row.append(fmt(dollars_to(c, train_target), ".4f"))
    row += [fmt(r.get("final_loss"), ".3f"),
            f"{fmt(r.get('final_eval_loss'), '.3f')} ({fmt(best_eval, '.3f')})",
            fmt(c["spent"], ".4f")]
    rows.append(row)
  return Table(headers, rows)


# ---- tables ---------------------------------------------------------------------------

def _mfu(record: dict) -> str:
  return f"{fmt(record['mfu'] and record['mfu'] * 100, '.1f')}%"


PROVENANCE = ["GPU", "stack", "commit", "campaign", "tag"]


def provenance(r: dict) -> list[str]:
  return [gpu_of(r), r.get("stack") or "jax", short_commit(r.get("git_commit")),
          campaign_label(campaign_of(r)), r.get("tag") or "-"]


def best_table(ours: list[dict]) -> Table:
  """The fastest run of each size per GPU type, over every campaign (one run per row: no
  ratios)."""
  rows = []
  groups = defaultdict(list)
  for r in ours:
    groups[(r["model"], r["gpu_series"])].append(r)
  for (model, gpu), r in sorted(best(ours, ("model", "gpu_series")).items(),
                                key=lambda kv: (SIZES.index(kv[0][0]), kv[0][1])):
    rows.append([PAPER_MODEL[model], str(r["num_devices"]), r["attention"], r["strategy"],
                 str(r["per_device_batch"]), fmt(r["tokens_per_s_per_device"]), _mfu(r),
                 value_text(r, r["value"]), fmt(r["token_per_dollar"]),
                 r.get("price_source") or "-", str(len(groups[(model, gpu)]))] + provenance(r))
  return Table(["model", "GPUs", "attention", "strategy", "batch/GPU", "tokens/s/GPU", "MFU",
                "Token/$ (paper units)", "tokens per USD", "price", "best of (runs)"]
               + PROVENANCE, rows)


def variants_table(variants: list[dict], ours: list[dict]) -> Table:
  """Each aligned-width variant's best beside its paper model's best of the same GPU type and
  campaign (the newest campaign that measured both; else the variant's newest, unpaired)."""
  rows = []
  for model, gpu in sorted({(r["model"], r["gpu_series"]) for r in variants},
                           key=lambda k: (MODELS.index(variant_of(k[0])), k)):
    mine = [r for r in variants if r["model"] == model and r["gpu_series"] == gpu]
    paper_model = [r for r in ours if r["model"] == variant_of(model) and r["gpu_series"] == gpu]
    paired = {r["campaign"] for r in paper_model}
    newest = {}
    for r in mine:
      newest[r["campaign"]] = max(newest.get(r["campaign"], ""), r.get("timestamp") or "")
    campaign = max(newest, key=lambda c: (c in paired, newest[c]))
    r = max((r for r in mine if r["campaign"] == campaign), key=lambda r: r["value"])
    p = max((q for q in paper_model if q["campaign"] == campaign), key=lambda q: q["value"],
            default=None)
    rows.append([model, fmt(r["params"]), str(r["per_device_batch"]),
                 fmt(r["tokens_per_s_per_device"]), _mfu(r),
                 (f"{fmt(p['params'])}, {fmt(p['tokens_per_s_per_device'])}, {_mfu(p)}"
                  if p else "not measured in this campaign"),
                 fmt(p and r["tokens_per_s_per_device"] / p["tokens_per_s_per_device"], ".3f")]
                + provenance(r))
  return Table(["variant", "params", "batch/GPU", "tokens/s/GPU", "MFU",
                "paper model, same campaign: params, tokens/s/GPU, MFU", "variant / paper model"]
               + PROVENANCE, rows)


def _torch_label(record: dict) -> str:
  return (record["attention"]
          + (f" ({record['torch_sdpa_backend']})" if record.get("torch_sdpa_backend")
             not in (None, "none") else "")
          + (f", compiled {record['torch_compile_scope']}"
             if record.get("torch_compile_scope") not in (None, "none") else ", eager"))


def _on_chips(ours: list[dict], key: tuple[str, ...], k: tuple, chips: tuple[str, ...]):
  """slm_jax's best run of group `k` on exactly `chips`, or None."""
  same = [r for r in ours if tuple(r[f] for f in key) == k
          and weak_scaling.chips(r) == chips and r["value"] is not None]
  return max(same, key=lambda r: r["value"]) if same else None


def stacks_table(ours: list[dict], torch: list[dict], paper: list[dict]) -> Table:
  """slm_jax against PyTorch: each stack's best of one size, GPU type, campaign (a
  slm_jax.compare command's records share one) and GPU count, beside the paper's best on any
  GPU. On several GPUs each stack's best is over its schemes, and the row names the winners.
  Where the records name their chips, slm_jax's best on PyTorch's chips is taken (a campaign
  may span hosts), and the row says whether the two ran on the same chips."""
  key = ("model", "gpu_series", "campaign", "num_devices")
  jb, tb = best(ours, key), best(torch, key)
  count = defaultdict(int)
  for r in ours + torch:
    count[(r.get("stack") or "jax",) + tuple(r[k] for k in key)] += 1

  def scheme(r):
    return f"{r['strategy']}, " if (r.get("num_devices") or 1) > 1 else ""

  rows = []
  pairs = sorted(set(jb) & set(tb), reverse=True,  # newest campaign first, within a size
                 key=lambda k: max(jb[k].get("timestamp") or "", tb[k].get("timestamp") or ""))
  for k in sorted(pairs, key=lambda k: (SIZES.index(k[0]), k[1], k[3])):
    t = tb[k]
    chips = weak_scaling.chips(t)
    j = (_on_chips(ours, key, k, chips) if chips else None) or jb[k]
    ours_chips = weak_scaling.chips(j)
    machine = ("-" if not chips or not ours_chips else
               "same chips" if ours_chips == chips else "other chips")
    rows.append([PAPER_MODEL[k[0]], k[1], str(k[3]), campaign_label(k[2]),
                 fmt(paper_best(paper, "Fig1", k[0]) if paper else None),
                 f"{value_text(t, t['value'])} ({scheme(t)}{_torch_label(t)}, "
                 f"b{t['per_device_batch']})",
                 f"{value_text(j, j['value'])} ({scheme(j)}{j['attention']}, "
                 f"b{j['per_device_batch']})",
                 fmt(j["value"] / t["value"], ".2f"),
                 f"{count[('jax',) + k]} / {count[('torch',) + k]}",
                 " / ".join(sorted({short_commit(j.get("git_commit")),
                                    short_commit(t.get("git_commit"))})),
                 f"{j.get('tag') or '-'} / {t.get('tag') or '-'}", machine])
  return Table(["model", "GPU", "GPUs", "campaign", "paper best (any GPU)", "PyTorch",
                "slm_jax", "slm_jax / PyTorch", "best of (runs: slm_jax / PyTorch)", "commit",
                "tags", "chips (records' gpus)"], rows)


def curve_table(curves: list[Curve], extra: tuple[str, dict] | None = None) -> Table:
  """The best point of each curve, with where it came from."""
  headers = ["model", "series", "Token/$ (paper units)", "tokens/s/GPU", "GPUs", "batch/GPU",
             "best of (runs)", "out of memory at"]
  if extra:
    headers.append(extra[0])
  # Runs on several GPUs profiled with collectives timed: the part of them the step waits for.
  exposed = any("collectives_exposed_ms" in (p.record.get("breakdown") or {})
                for c in curves for p in c.points)
  if exposed:
    headers.append("exposed collectives ms/step")
  # The spread of the GPUs' compute: the part of the faster GPUs' exposed time that is waiting
  # for the slowest, not communication (profile.per_device).
  skew = any("compute_skew_ms" in (p.record.get("breakdown") or {})
             for c in curves for p in c.points)
  if skew:
    headers.append("GPU compute skew ms/step")
  headers += PROVENANCE
  rows = []
  for c in curves:
    top = c.top()
    if top is None and not c.oom:
      continue
    r = top.record if top else None
    row = [PAPER_MODEL[c.model], _label(str(c.series)), value_text(r, top and top.value),
           fmt(r and r["tokens_per_s_per_device"]), str(r["num_devices"]) if r else "-",
           str(r["per_device_batch"]) if r else "-", str(c.runs()),
           ", ".join(map(str, c.oom)) or "-"]
    if extra:
      row.append(extra[1].get((c.model, c.series), "-"))
    if exposed:
      row.append(fmt(r and (r.get("breakdown") or {}).get("collectives_exposed_ms"), ".1f"))
    if skew:
      row.append(fmt(r and (r.get("breakdown") or {}).get("compute_skew_ms"), ".1f"))
    rows.append(row + (provenance(r) if r else [c.selection.gpu, "jax", "-",
                                                 campaign_label(c.selection.campaign), "-"]))
  return Table(headers, rows)


def records_table(records: list[dict]) -> Table:
  """Every run record, as results.markdown_table lists them, with where each came from."""
  columns = results.TABLE_COLUMNS
  rows = []
  for r in records:
    rows.append(results.table_cells(r, columns) + provenance(r))
  return Table([c[1] for c in columns] + PROVENANCE, rows,
               summary=f"{len(records)} run records (click to show)")


# ---- questions and verdicts -------------------------------------------------------------

QUESTIONS = {
    "Fig1": ("Q1. How much does FlashAttention raise Token/Dollar, and for which sizes?",
             "FlashAttention raises Token/Dollar far more for small models (2.7x at 100M, "
             "1.55x at 2B, best vs best), and lets 1B/2B train at batches where vanilla "
             "attention runs out of memory."),
    "Fig2": ("Q2. Which GPU is the most cost-effective?",
             "H100 and A100-80GB are not cost-effective for small models; the A100-40GB suits "
             "small models, the A100-80GB larger ones on many GPUs."),
    "Fig3": ("Q3. Which distribution scheme, as nodes are added?",
             "DDP is best for small models (less traffic); FSDP wins at 2B because it allows "
             "larger batches; FSDP grad_op beats FSDP full (less communication)."),
    "Fig4": ("Q4. How do the schemes and the batch size trade off?",
             "At small batches the schemes differ little; cost-efficiency saturates before GPU "
             "memory is full, so filling the memory is not cost-optimal."),
}

FINDINGS = (
    "FlashAttention raises Token/Dollar far more for small models (2.7x at 100M, 1.55x at 2B).",
    "FlashAttention lets 1B/2B train at global batches where vanilla attention runs out of "
    "memory.",
    "H100 and A100-80GB are not cost-effective for small models; A100-40GB suits small models, "
    "A100-80GB larger ones on many GPUs.",
    "DDP is best for small models; FSDP wins at 2B because it allows larger batches.",
    "FSDP grad_op beats FSDP full (less communication).",
    "At small batch sizes the schemes do not differ much.",
    "Cost-efficiency saturates before GPU memory is full: maximising memory use is not "
    "cost-optimal.",
)


def _curves(figure: Figure, model: str, series=None) -> list[Curve]:
  return [c for c in figure.curves if c.model == model and (series is None or c.series == series)]


def _top(figure: Figure, model: str, series) -> Point | None:
  return max((c.top() for c in _curves(figure, model, series) if c.top()),
             key=lambda p: p.value, default=None)


def _on(sel: Selection, figure: Figure) -> str:
  return f"On {sel.label()} ({figure.runs_note()})"


def attention_ratios(fig1: Figure, sizes=MODELS) -> dict[str, float]:
  out = {}
  for m in sizes:
    f, v = _top(fig1, m, "flash_attention"), _top(fig1, m, "vanilla_attention")
    if f and v:
      out[m] = f.value / v.value
  return out


def q1(fig1: Figure, paper: list[dict]) -> tuple[str, Table | None]:
  if not fig1.selections:
    return "not measured: no slm_jax records.", None
  sel = fig1.selections[0][1]
  ratios, parts = attention_ratios(fig1, sizes_of(fig1)), []
  for m in sizes_of(fig1):
    pf, pv = (paper_best(paper, "Fig1", m, s) for s in ("flash_attention", "vanilla_attention"))
    paper_ratio = f"paper {pf / pv:.2f}x" if pf and pv else "paper -"
    if m in ratios:
      parts.append(f"{PAPER_MODEL[m]} flash / vanilla = {ratios[m]:.2f}x ({paper_ratio})")
    else:
      have = [s for s in ("flash_attention", "vanilla_attention") if _top(fig1, m, s)]
      parts.append(f"{PAPER_MODEL[m]} " + (f"only {_label(have[0])} measured" if have
                                            else "not measured"))
  blocked = vanilla_blocked(fig1)
  text = f"{_on(sel, fig1)}, best vs best: " + "; ".join(parts) + "."
  if blocked:
    text += " Vanilla attention ran out of memory where flash ran: " + "; ".join(
        f"{PAPER_MODEL[m]} at global batch {', '.join(map(str, xs))}"
        for m, xs in blocked.items()) + "."
  extra = {(m, "flash_attention"): f"{r:.2f}x" for m, r in ratios.items()}
  return text, curve_table(fig1.curves, ("flash / vanilla", extra))


def vanilla_blocked(fig1: Figure) -> dict[str, list[int]]:
  """{size: global batches where vanilla attention ran out of memory and flash ran}."""
  out = {}
  for m in MODELS:
    flash = {p.x for c in _curves(fig1, m, "flash_attention") for p in c.points}
    xs = sorted({x for c in _curves(fig1, m, "vanilla_attention") for x in c.oom} & flash)
    if xs:
      out[m] = xs
  return out


def gpu_comparison(fig2: Figure) -> tuple[str | None, dict[str, dict[str, Point]]]:
  """(the campaign two or more GPU types share in Fig 2, {size: {GPU type: best point}})."""
  by_campaign = defaultdict(list)
  for _, sel in fig2.selections:
    by_campaign[sel.campaign].append(sel.gpu)
  shared = [c for c, gpus in by_campaign.items() if len(gpus) > 1]
  if not shared:
    return None, {}
  campaign = max(shared, key=lambda c: len(by_campaign[c]))
  out = defaultdict(dict)
  for c in fig2.curves:
    if c.selection.campaign == campaign and c.top():
      out[c.model][c.series] = c.top()
  return campaign, out


def q2(fig2: Figure) -> tuple[str, Table | None]:
  if not fig2.selections:
    return "not measured: no slm_jax records with flash attention.", None
  campaign, by_model = gpu_comparison(fig2)
  table = curve_table(fig2.curves)
  if campaign is None:
    which = "; ".join(f"{s.gpu}: {campaign_label(s.campaign)}" for _, s in fig2.selections)
    return (f"not measured: no campaign measured two GPU types ({which}); GPU types are "
            "compared only within one campaign.", table)
  parts = []
  for m in MODELS:
    gpus = by_model.get(m, {})
    if len(gpus) > 1:
      order = sorted(gpus, key=lambda g: -gpus[g].value)
      parts.append(f"{PAPER_MODEL[m]} " + " > ".join(f"{g} ({point_text(gpus[g])})"
                                                      for g in order))
  return (f"In {campaign_label(campaign)}, best Token/Dollar (paper units) per GPU type: "
          + ("; ".join(parts) or "no size measured on two GPU types") + ".", table)


def q3(fig3: Figure) -> tuple[str, Table | None]:
  if not fig3.selections:
    return ("not measured: no runs on 2 or more GPUs (a one-GPU run has no scheme; every "
            "scheme does the same work there).", None)
  sel = fig3.selections[0][1]
  parts = []
  for m in sizes_of(fig3):
    tops = {c.series: c.top() for c in _curves(fig3, m) if c.top()}
    if tops:
      order = sorted(tops, key=lambda s: -tops[s].value)
      parts.append(f"{PAPER_MODEL[m]} " + " > ".join(
          f"{s} ({point_text(tops[s])} at {tops[s].x} node{'s' * (tops[s].x > 1)}, "
          f"{tops[s].record['num_devices']} GPUs)" for s in order))
  return f"{_on(sel, fig3)}: " + ("; ".join(parts) or "no point measured") + ".", \
      curve_table(fig3.curves)


def saturation(fig4: Figure) -> dict[str, dict]:
  """Per size, from Fig 4's one-GPU curve: the best batch, the largest that fit, the gain of
  the last doubling up to it, and where memory ran out."""
  out = {}
  for c in fig4.curves:
    if c.series != ONE_GPU or len(c.points) < 2:
      continue
    top, largest = c.top(), c.points[-1]
    half = next((p for p in c.points if p.x * 2 == largest.x), c.points[-2])
    out[c.model] = dict(best=top, largest=largest, gain=largest.value / half.value,
                        half=half, oom=[x for x in c.oom if x > largest.x], curve=c)
  return out


def _gib(point: Point) -> str:
  b = point.record.get("peak_memory_bytes")
  return f", {b / 2**30:.1f} GiB" if b else ""


def q4(fig4: Figure) -> tuple[str, Table | None]:
  if not fig4.selections:
    return "not measured: no slm_jax records.", None
  multi = dict(fig4.selections).get("schemes")
  if multi is None:
    text = "Schemes: not measured (no runs on 2 or more GPUs)."
  else:
    parts = [f"{PAPER_MODEL[m]}: {_spread_text(d)}" for m, d in scheme_spread(fig4).items()]
    text = (f"Schemes, on {multi.label()}: smallest global batch measured with two or more "
            "schemes, best / worst: " + ("; ".join(parts) or "no batch with two schemes") + ".")
    for sel, curves in fig4.others:
      spreads = scheme_spread(dataclasses.replace(fig4, curves=curves))
      if spreads:
        text += (f" Also, on {sel.label()} (not drawn): " + "; ".join(
            f"{PAPER_MODEL[m]}: {_spread_text(d)}" for m, d in spreads.items()) + ".")
  sat = saturation(fig4)
  one = dict(fig4.selections).get(ONE_GPU)
  if one is not None:
    parts = []
    for m, s in sat.items():
      parts.append(
          f"{PAPER_MODEL[m]} best at batch {s['best'].x}{_gib(s['best'])}; largest that fit "
          f"{s['largest'].x}{_gib(s['largest'])}, {s['gain']:.3f}x batch {s['half'].x}'s"
          + (f"; out of memory at {', '.join(map(str, s['oom']))}" if s["oom"] else
             "; nothing larger measured"))
    text += (f" Batch size on one GPU ({one.label()}): " + ("; ".join(parts) or
                                                            "fewer than two batches measured")
             + ".")
  else:
    text += " Batch size on one GPU: not measured."
  extra = {(m, ONE_GPU): f"batch {s['largest'].x}: {s['gain']:.3f}x batch {s['half'].x}"
           for m, s in sat.items()}
  return text, curve_table(fig4.curves, ("last doubling (one GPU)", extra))


def scheme_spread(fig: Figure) -> dict[str, tuple[float, int, str, str, str]]:
  """Per size, at the smallest global batch two or more schemes measured: (best / worst, that
  batch, the best scheme, the worst, `commits_note` of the two runs)."""
  out = {}
  for m in sizes_of(fig):
    at = defaultdict(dict)
    for c in _curves(fig, m):
      if c.series != ONE_GPU:
        for p in c.points:
          at[p.x][c.series] = p
    xs = sorted(x for x in at if len(at[x]) > 1)
    if xs:
      pts = at[xs[0]]
      hi = max(pts, key=lambda k: pts[k].value)
      lo = min(pts, key=lambda k: pts[k].value)
      out[m] = (pts[hi].value / pts[lo].value, xs[0], hi, lo,
                commits_note(pts[hi].record, pts[lo].record))
  return out


def _spread_text(spread: tuple[float, int, str, str, str]) -> str:
  ratio, x, hi, lo, commits = spread
  return f"{ratio:.2f}x at global batch {x} ({hi} over {lo}{commits})"


def commits_note(*records: dict) -> str:
  """', commits a / b' where a ratio's runs ran at different commits (a campaign can span
  several), else ''."""
  commits = [(r.get("git_commit") or "?")[:7] for r in records]
  return "" if len(set(commits)) == 1 else ", commits " + " / ".join(commits)


def verdicts(figs: dict[str, Figure], paper: list[dict]) -> list[tuple[str, str, str]]:
  """(finding, "agrees" / "disagrees" / "not measured", how: from which numbers) for each of
  the paper's findings."""
  fig1, fig2, fig3, fig4 = (figs[k] for k in ("Fig1", "Fig2", "Fig3", "Fig4"))
  out = []

  def where(fig, what=None):
    sels = dict(fig.selections)
    s = sels.get(what) if what else (fig.selections[0][1] if fig.selections else None)
    return f" ({s.label()})" if s else ""

  # 1. flash's gain shrinks with size
  ratios = attention_ratios(fig1)
  if len(ratios) >= 2:
    first, last = next(iter(ratios)), list(ratios)[-1]
    seq = ", ".join(f"{PAPER_MODEL[m]} {r:.2f}x" for m, r in ratios.items())
    pf = {m: paper_best(paper, "Fig1", m, "flash_attention") for m in (first, last)}
    pv = {m: paper_best(paper, "Fig1", m, "vanilla_attention") for m in (first, last)}
    paper_seq = ", ".join(f"{PAPER_MODEL[m]} {pf[m] / pv[m]:.2f}x" for m in (first, last)
                          if pf[m] and pv[m])
    v = "agrees" if ratios[first] > ratios[last] else "disagrees"
    how = ("flash / vanilla falls with size: " if v == "agrees" else
           "flash / vanilla does not fall with size: ") + seq
    out.append((v, f"{how} (paper: {paper_seq}){where(fig1)}"))
  else:
    out.append(("not measured", "no campaign measured both attentions at two sizes"))
  # 2. flash fits where vanilla does not
  blocked = {m: xs for m, xs in vanilla_blocked(fig1).items() if m in ("1b", "2b")}
  measured = [m for m in ("1b", "2b") if _top(fig1, m, "vanilla_attention")
              and _top(fig1, m, "flash_attention")]
  if blocked:
    out.append(("agrees", "vanilla attention ran out of memory where flash ran: " + "; ".join(
        f"{PAPER_MODEL[m]} at global batch {', '.join(map(str, xs))}" for m, xs in blocked.items())
        + where(fig1)))
  elif measured:
    out.append(("disagrees", "vanilla attention fit every global batch flash was measured at "
                f"({', '.join(PAPER_MODEL[m] for m in measured)}){where(fig1)}"))
  else:
    out.append(("not measured", "1B/2B not measured with both attentions"))
  # 3. GPU types
  campaign, by_model = gpu_comparison(fig2)
  compared = {m: g for m, g in by_model.items() if len(g) > 1}
  a100 = {"A100-40GB", "A100-80GB"}
  if not compared:
    out.append(("not measured", "no campaign measured two GPU types"))
  elif not any(a100 & set(g) for g in compared.values()):
    out.append(("not measured", f"{campaign_label(campaign)} compares "
                f"{', '.join(sorted({x for g in compared.values() for x in g}))}: no A100"))
  else:
    parts, wins = [], []
    for m, g in compared.items():
      top = max(g, key=lambda k: g[k].value)
      wins.append(top in a100)
      parts.append(f"{PAPER_MODEL[m]} best on {top}")
    v = "agrees" if all(wins) else "disagrees"
    out.append((v, "; ".join(parts) + f" ({campaign_label(campaign)})"))
  # 4. DDP for small models, FSDP at 2B; 5. grad_op vs full; 6. schemes alike at small batches
  tops = {m: {c.series: c.top() for c in _curves(fig3, m) if c.top()} for m in MODELS}
  tops = {m: s for m, s in tops.items() if len(s) > 1}
  if tops:
    parts, ok = [], []
    for m, s in tops.items():
      win = max(s, key=lambda k: s[k].value)
      tied = {k for k in s if s[k].value * SCHEME_TIE >= s[win].value}
      parts.append(f"{PAPER_MODEL[m]} best {win}" + "".join(
          f", {s[win].value / s[k].value:.3f}x {k}{commits_note(s[win].record, s[k].record)}"
          for k in sorted(s) if k != win))
      ok.append("DDP" in tied if m != "2b" else any(k.startswith("FSDP") for k in tied))
    out.append(("agrees" if all(ok) else "disagrees", "; ".join(parts) + where(fig3)))
  else:
    out.append(("not measured", "no campaign measured two schemes on 2 or more GPUs"))
  pairs = {m: (s["FSDP-Grad+Optimizer"], s["FSDP-Full"]) for m, s in tops.items()
           if "FSDP-Grad+Optimizer" in s and "FSDP-Full" in s}
  if pairs:
    out.append(("agrees" if all(g.value >= f.value for g, f in pairs.values()) else "disagrees",
                "; ".join(f"{PAPER_MODEL[m]} grad_op / full = {g.value / f.value:.2f}x"
                          + commits_note(g.record, f.record)
                          for m, (g, f) in pairs.items()) + where(fig3)))
  else:
    # Within the campaign Fig 3 draws: another campaign may hold both (`--campaign` picks it).
    out.append(("not measured", "FSDP grad_op and full not both measured on 2 or more GPUs"
                + (f" in the campaign drawn{where(fig3)}" if fig3.selections else "")))
  # The paper's findings are about its sizes: the CPU demo's model gives no verdict.
  spreads = {m: d for m, d in scheme_spread(fig4).items() if m in MODELS}
  if spreads:
    alike = all(d[0] <= SCHEMES_ALIKE for d in spreads.values())
    out.append(("agrees" if alike else "disagrees",
                "best / worst scheme: " + "; ".join(f"{PAPER_MODEL[m]} {_spread_text(d)}"
                                                    for m, d in spreads.items())
                + where(fig4, "schemes")))
  else:
    out.append(("not measured", "no global batch measured with two schemes on 2 or more GPUs"))
  # 7. saturation before memory is full
  sat = {m: s for m, s in saturation(fig4).items() if m in MODELS}
  if sat:
    rising = {m: s for m, s in sat.items()
              if s["best"].x == s["largest"].x and s["gain"] >= SATURATED}
    detail = "; ".join(
        f"{PAPER_MODEL[m]} best at batch {s['best'].x}, last doubling to {s['largest'].x} "
        f"{s['gain']:.3f}x" + (f", OOM at {s['oom'][0]}" if s["oom"] else
                               ", nothing larger measured")
        for m, s in sat.items())
    flat = f"flattens (last doubling < {SATURATED:.2f}x) or peaks before the largest batch " \
        "that ran"
    gpu = next(iter(sat.values()))["curve"].selection.gpu
    if not rising:
      out.append(("agrees", f"on one {gpu}, Token/Dollar {flat} at every size: {detail}"
                  + where(fig4, ONE_GPU)))
    else:
      scope = ("at every size" if len(rising) == len(sat) else
               "at " + ", ".join(PAPER_MODEL[m] for m in rising) + f" (and {flat} at "
               + ", ".join(PAPER_MODEL[m] for m in sat if m not in rising) + ")")
      out.append(("disagrees", f"on one {gpu}, Token/Dollar keeps rising up to the largest "
                  f"batch that ran {scope}: {detail}" + where(fig4, ONE_GPU)))
  else:
    out.append(("not measured", "fewer than two batch sizes on one GPU"))
  return [(f, v, how) for f, (v, how) in zip(FINDINGS, out)]


# ---- the report ---------------------------------------------------------------------------

# The paper's figures that predictions are drawn on (by GPU count; by node count).
PREDICTED_FIGURES = ("Fig2", "Fig3")


def _check_row(row) -> bool:
  """A line of `slm_jax.predict --check --json`: one measured record and its prediction."""
  return isinstance(row, dict) and "measured_tokens_per_s" in row and "error_percent" in row


def load_predictions(paths: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
  """(predicted points, check rows) of slm_jax.predict --json and --check --json files
  (UserError: a missing file, or one with neither)."""
  points, checks = [], []
  for path in paths:
    if not Path(path).is_file():
      raise UserError(f"--predictions: no such file {path!r}")
    rows = results.read(path)
    new_points = [r for r in rows if isinstance(r, dict) and r.get("prediction")]
    new_checks = [dict(r, check_file=Path(path).name) for r in rows if _check_row(r)]
    if not new_points and not new_checks:
      raise UserError(f"--predictions: {path} holds no predicted points or checks (the lines "
                      "`python -m slm_jax.predict --json` or `--check --json` prints)")
    points += new_points
    checks += new_checks
  return points, checks


def _exposed_line(model: dict | None) -> str:
  """Where a check's exposed time came from a line fitted on several runs, a + b x comm, or from
  its own compiled step replayed."""
  if model and model.get("form") == "replay":
    # Checks written before the GEMM-tail replay (slm_jax.overlap) carry a GEMM share.
    knob = ("GEMM tail", model["gemm_tail"]) if "gemm_tail" in model else (
        "GEMM share", model.get("gemm_share"))
    first = model.get("gemm_first")  # absent from checks written before the race was modelled
    race = f", {' and '.join(first)} behind the GEMM after a wait" if first else ""
    return f"; exposed replayed from its compiled step ({knob[0]} {knob[1]:g}{race})"
  if not model or model.get("form") != "affine":
    return ""
  return (f"; exposed {model['a_s'] * 1e3:.2f} ms + {model['b']:.3f} x comm, fitted on "
          f"{len(model.get('records') or [])} runs")


def check_table(checks: list[dict]) -> Table:
  """Each measured multi-GPU record beside the prediction made for it from another record."""
  def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"

  def pct(value):
    return "-" if value is None else f"{value:+.1f}%"

  rows = []
  for c in sorted(checks, key=lambda c: (SIZES.index(c["model"]) if c.get("model") in SIZES
                                         else len(SIZES), c.get("strategy") or "")):
    rows.append([
        PAPER_MODEL.get(c.get("model"), str(c.get("model"))),
        str(c.get("strategy")) + (f" ({c['schedule']})" if c.get("schedule") else ""),
        str(c.get("num_devices")), str(c.get("per_device_batch")),
        f"{c['measured_tokens_per_s']:,.0f}",
        "-" if c.get("predicted_tokens_per_s") is None else f"{c['predicted_tokens_per_s']:,.0f}",
        pct(c.get("error_percent")), ms(c.get("measured_exposed_comm_s")),
        ms(c.get("predicted_exposed_comm_s")), pct(c.get("exposed_error_percent")),
        f"{c.get('calibrated_model', '-')} {c.get('calibrated_strategy', '')}".strip()
        + _exposed_line(c.get("exposed_model")),
        str(c.get("compute_relation") or c.get("compute_record_commit") or "-"),
        str(c.get("record_commit") or "")[:8]])
  return Table(["model", "strategy", "GPUs", "batch/GPU", "tokens/s measured", "predicted",
                "error", "exposed ms measured", "predicted", "error", "calibrated on",
                "one-GPU record used", "commit"], rows)


def predicted_note(figure: Figure, paths: tuple[str, ...]) -> str:
  calibrations = sorted({f"{c['gpu']}, {c['calibration']}" for c in figure.predicted})
  return (f"Dotted lines with hollow diamonds are predictions (`slm_jax.predict`, from "
          f"{', '.join(Path(p).name for p in paths)}: {'; '.join(calibrations)}), not "
          "measurements; no ratio, table or verdict above uses them.")


def write_report(paths: list[str], out_dir: Path, paper_csv: Path = PAPER_CSV,
                 target_loss: float | None = None, reprice: tuple[str, ...] = (),
                 runs: tuple[str, ...] = (), campaigns: tuple[str, ...] = (),
                 predictions: tuple[str, ...] = ()) -> Path:
  predicted, checks = load_predictions(predictions)  # first: a bad file costs no drawing
  out_dir.mkdir(parents=True, exist_ok=True)
  records, skipped = load(paths)
  ours = prepare(records, oom=True)
  ours_ok = [r for r in ours if r["value"] is not None]
  torch = prepare(records, stack="torch")
  variants = prepare(records, variants=True)
  old = sum(old_torch(r) for r in records)
  paper = read_paper(paper_csv)
  figs = {f.id: f for f in (make(ours, paper, campaigns) for make in FIGURES)}
  for fig_id in PREDICTED_FIGURES:
    figs[fig_id].predicted = [c for c in predict.predicted_curves(predicted, fig_id)
                              if c["model"] in SIZES]
  for f in figs.values():
    draw(f, out_dir)
  breakdown = plot_breakdown(ours_ok, out_dir, campaigns)
  curves = train_curves(records, reprice, runs)
  kind, target = loss_targets(curves, target_loss)
  loss_dollars = plot_loss_vs_dollars(curves, out_dir, target, kind)

  status = defaultdict(int)
  for r in records:
    status[str(r.get("status"))] += 1
  doc = [Heading("slm_jax report", 1),
         Para(f"{len(records)} run records"
              + (f" ({', '.join(f'{n} {s}' for s, n in sorted(status.items()))})" if status else "")
              + f" from {', '.join(paths)}.")]
  if skipped:
    doc.append(Para("Skipped rows that are not run records (other benchmarks' timings): "
                    + ", ".join(f"{Path(p).name} ({n})" for p, n in skipped.items()) + "."))
  if old:
    doc.append(Para(f"{old} PyTorch records from before `torch_compile_scope` was recorded (HF's "
                    "masked attention under torch.compile, the loss outside the compiled region) "
                    "stay in their files but are left out of every table and figure."))
  doc += [
      Para("Token/Dollar (paper units) = tokens/s per GPU / the paper's GPU-hour price ratio; "
           f"tokens per USD use {hardware.PRICE_TABLE_SOURCE} "
           f"(dated {hardware.PRICE_TABLE_DATE})."),
      Para(f"Speeds are medians of at least {MIN_TIMED_STEPS} timed steps (shorter runs, such as "
           "memory-fit checks, are left out). Every curve and every ratio comes from records of "
           "one GPU type and one campaign (a `--campaign` name; records without one: their "
           "commit); each figure's title names them and how many runs each point is the best "
           "of. Where several campaigns could draw a figure, the one with the most points is "
           "drawn (ties: the newest; for the scheme figures, first the one with the most points "
           "two or more schemes measured at one batch on one host)"
           + (f"; chosen among {', '.join(campaigns)} (--campaign)"
              if campaigns else "; `--campaign` chooses") + "."),
      Para("Error bars: ours, Token/Dollar at the 25th and 75th percentile step time of the "
           "plotted run's timed steps; the paper's, its plotted error bars (err_low/err_high). "
           "Crosses on a panel's floor are points that ran out of memory."),
      Heading("The paper's findings against our numbers"),
      Table(["#", "the paper's finding", "verdict", "from our numbers"],
            [[str(i + 1), f, v, how] for i, (f, v, how) in enumerate(verdicts(figs, paper))]),
      Heading("Best configuration per size and GPU (slm_jax)"),
      Para("The fastest run of each size on each GPU type, over every campaign (one run per "
           "row; no ratio is taken across rows)."),
      best_table(ours_ok) if ours_ok else Para("not measured: no slm_jax benchmark records."),
      Heading("slm_jax against PyTorch, same GPU type and campaign"),
      Para("Each stack's best run of one size in one campaign on one GPU type and GPU count (a "
           "`slm_jax.compare` command's records share a campaign); on several GPUs the best "
           "over each stack's schemes, named; Token/Dollar in paper units. Where the records "
           "name their chips (`gpus`), slm_jax's best on PyTorch's chips, and the last column "
           "says whether the two shared them (a campaign may span hosts; '-': not recorded)."),
  ]
  stacks = stacks_table(ours_ok, torch, paper)
  doc.append(stacks if stacks.rows else
             Para("not measured: no campaign holds both slm_jax and PyTorch records of one size "
                  "on one GPU type."))
  scaling = weak_scaling.rows(records)
  if scaling:
    doc += [Heading("Weak scaling from one GPU, on the same chips"),
            Para("Each multi-GPU run's tokens/s per GPU over the one-GPU runs of the same work on "
                 "each of its own chips (matched by the UUIDs in `gpus`) in its campaign, its own "
                 "commit's first: against the slower chip, which sets a multi-GPU step's pace, "
                 "and the faster. The ± is "
                 "one standard error from the timed steps' spread (`slm_jax.weak_scaling`). "
                 "Records without `gpus` are not paired."),
            weak_scaling.table(scaling)]
  if variants:
    doc += [Heading("Aligned-width variants (they change the model; not in the paper's tables)"),
            Para("Heads and FFN columns added until the widths are multiples of "
                 "`--config.width_multiple`; MFU counts each model's own FLOPs."),
            variants_table(variants, ours_ok)]
  answer = {"Fig1": lambda: q1(figs["Fig1"], paper), "Fig2": lambda: q2(figs["Fig2"]),
            "Fig3": lambda: q3(figs["Fig3"]), "Fig4": lambda: q4(figs["Fig4"])}
  for fig_id, (q, paper_answer) in QUESTIONS.items():
    text, table = answer[fig_id]()
    doc += [Heading(q), Items([("Paper", paper_answer), ("slm_jax", text)])]
    if table is not None and table.rows:
      doc.append(table)
    if figs[fig_id].predicted:
      doc.append(Para(predicted_note(figs[fig_id], predictions)))
    doc.append(Image(f"{fig_id.lower()}.png", fig_id))
  if checks:
    doc += [Heading("The predictor against measured multi-GPU runs"),
            Para("`slm_jax.predict --check`: each measured run on several GPUs predicted from "
                 "its one-GPU record and an overlap calibrated on a run of another model (never "
                 "itself), from " + ", ".join(sorted({c["check_file"] for c in checks}))
                 + ". Each row pairs one prediction with one measurement; nothing here enters a "
                 "figure."),
            check_table(checks)]
  if breakdown:
    doc += [Heading("Step-time breakdown"),
            Para(f"From {breakdown[1].label()}."), Image("breakdown.png", "breakdown")]
  if loss_dollars:
    rule = ("--target_loss" if target_loss is not None else
            f"the lowest {kind} loss every {'evaluated ' * (kind == 'held-out')}run reaches")
    doc += [Heading("Loss/Dollar: training on text"),
            Para(f"Dollars to reach {kind} loss {target:.3f} ({rule}), ordered by them"
                 + ("; and to the lowest training loss every run reaches (trailing mean over 2% "
                    "of the run), which keeps falling on a repeated corpus while the held-out "
                    "loss stops" if kind == "held-out" else
                    " (trailing mean over 2% of the run; no run has held-out evaluations)")
                 + ":"),
            loss_dollar_table(curves, target, kind), Image("loss_vs_dollars.png",
                                                           "loss vs dollars")]
  doc += [Heading("All records"), records_table([r for r in records if not old_torch(r)])]
  (out_dir / "report.md").write_text(report_doc.markdown(doc))
  (out_dir / "index.html").write_text(report_doc.html_page("slm_jax report", doc))
  return out_dir / "index.html"


_PRICED = sorted(g.name for g in hardware.GPUS.values())
_OUT = flags.DEFINE_string("out", "report", "Folder for the PNGs, report.md and index.html.")
_PAPER = flags.DEFINE_string("paper_csv", str(PAPER_CSV), "The paper's plotted points.")
_TARGET = flags.DEFINE_float("target_loss", None, "Held-out loss for the Loss/Dollar table "
                             "(training loss where no run has held-out evaluations); default: "
                             "the lowest every evaluated run reaches.")
_REPRICE = flags.DEFINE_list("reprice", [], "Also draw each training run at these GPU types' "
                             f"prices (of {_PRICED}), labelled re-priced.")
_RUNS = flags.DEFINE_list("runs", [], "Training runs to draw and tabulate, by tag (shell "
                          "patterns, e.g. '*loss_dollar'); default: every one.")
_PREDICTIONS = flags.DEFINE_list(
    "predictions", [], "slm_jax.predict --json files (e.g. benchmarks/predict_paper_a100_80gb."
    "jsonl) to draw beside Figures 2 and 3, dotted and labelled predicted; never in a ratio.")
_CAMPAIGN = results.campaign_flag()


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError("give one or more results.jsonl files")
  missing = [p for p in paths if not Path(p).exists()]
  if missing:
    print(f"error: no such results file: {', '.join(missing)}", file=sys.stderr)
    sys.exit(2)
  unknown = [g for g in _REPRICE.value if g not in _PRICED]
  if unknown:
    print(f"error: --reprice: no price for {unknown}; choose from "
          f"{_PRICED}", file=sys.stderr)
    sys.exit(2)
  campaigns = tuple(c.strip() for c in (_CAMPAIGN.value or "").split(",") if c.strip())
  if campaigns:
    known = {campaign_of(r) for p in paths for r in load([p])[0]}
    unknown = [c for c in campaigns if not any(in_campaigns(k, (c,)) for k in known)]
    if unknown:
      print(f"error: --campaign: no records in {unknown}; the files hold "
            f"{sorted(campaign_label(k) for k in known)}", file=sys.stderr)
      sys.exit(2)
  out_dir = Path(_OUT.value)
  try:
    out_dir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    print(f"error: --out={out_dir}: cannot make that folder ({e.strerror}); name a folder, or a "
          "path where one can be made", file=sys.stderr)
    sys.exit(2)
  try:
    index = write_report(paths, out_dir, Path(_PAPER.value), _TARGET.value,
                         tuple(_REPRICE.value), tuple(_RUNS.value), campaigns,
                         tuple(_PREDICTIONS.value))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {index}")


if __name__ == "__main__":
  app.run(main)
