r"""Redraws the paper's Figures 1-4 from our records, with the paper's points beside them, and
the Loss/Dollar the paper defines but never measured, from training runs (--config.mode=train).

  python -m slm_jax.report runs/grid/results.jsonl benchmarks/*.jsonl --out report/
  python -m slm_jax.report runs/train/results.jsonl --reprice=H100,A100-80GB --target_loss=3.5

Each plotted point is, as in the paper, the best record over everything not on the plot's axes
(a grid search, then a max). Token/Dollar is in the paper's normalised unit (tokens/s per GPU
over the GPU-hour price ratio); the tables add tokens per US dollar from the dated price table
(both in slm_jax/hardware.py). Writes PNGs, markdown tables (report.md) and one HTML page
(index.html) answering the paper's four questions.
"""

from __future__ import annotations

import csv
import fnmatch
import html
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402
from absl import app, flags  # noqa: E402

from slm_jax import hardware, pricing, results  # noqa: E402
from slm_jax.results import fmt  # noqa: E402

PAPER_CSV = Path(__file__).resolve().parent.parent / "third_party/ashkboos24/ashkboos24_figures.csv"
MODELS = ("100m", "500m", "1b", "2b")
PAPER_MODEL = {"100m": "100M", "500m": "500M", "1b": "1B", "2b": "2B"}
ATTENTION_SERIES = {"xla": "vanilla_attention"}  # every other attention is a flash kernel
STRATEGY_SERIES = {"ddp": "DDP", "single": "DDP", "fsdp_full": "FSDP-Full",
                   "fsdp_grad_op": "FSDP-Grad+Optimizer", "hsdp": "HSDP"}
GPUS_PER_NODE = 8
# A point's speed is the median of at least this many timed steps: shorter runs (the 80 GB
# fit's 3 steps) answer "does it fit", and a short median is a noisier maximum.
MIN_TIMED_STEPS = 10

# (figure, title, x field, series field, filter); series values are the paper's labels.
FIGURES = (
    ("Fig1", "best over everything, by global batch", "global_batch", "attention_series", None),
    ("Fig2", "flash attention, by GPU count, per GPU type", "num_devices", "gpu_series",
     lambda r: r["attention_series"] == "flash_attention"),
    ("Fig3", "A100-80GB, by node count (1 node = best of 1-8 GPUs), per scheme", "num_nodes",
     "strategy_series", lambda r: r["gpu_series"] == "A100-80GB"),
    ("Fig4", "by global batch, per scheme", "global_batch", "strategy_series", None),
)
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


def variant_of(model: str) -> str | None:
  """The paper size an aligned-width variant ("2b-w128", --config.width_multiple) widens."""
  size, sep, multiple = model.partition("-w")
  return size if sep and size in MODELS and multiple.isdigit() else None


def prepare(records: list[dict], stack: str = "jax", variants: bool = False) -> list[dict]:
  """ok records of one stack and the paper's sizes (or, with `variants`, their aligned-width
  variants, which change the model) timed over MIN_TIMED_STEPS steps or more, with the
  paper's series labels and axes."""
  out = []
  for r in records:
    if (r.get("stack") or "jax") != stack:
      continue
    model = r.get("model") or ""
    wanted = variant_of(model) is not None if variants else model in MODELS
    if r.get("status") != "ok" or not wanted:
      continue
    if r.get("mode", "benchmark") != "benchmark":  # training runs have their own figure
      continue
    config = r.get("config") or {}
    if config.get("steps", MIN_TIMED_STEPS) * config.get("repeats", 1) < MIN_TIMED_STEPS:
      continue
    # Paper units from the current ratio table, so records written before a GPU had a ratio
    # (H200) still land on the paper's axes.
    value = (pricing.token_per_dollar_paper(r["tokens_per_s_per_device"], r.get("device_kind", ""))
             if r.get("tokens_per_s_per_device") else None)
    if value is None:
      continue
    gpu = hardware.from_device_kind(r.get("device_kind", ""))
    out.append(dict(
        r, attention_series=ATTENTION_SERIES.get(r["attention"], "flash_attention"),
        gpu_series=gpu.paper_label if gpu else r.get("device_kind", "?"),
        strategy_series=STRATEGY_SERIES.get(r["strategy"], r["strategy"]),
        num_nodes=max(1, r["num_devices"] // GPUS_PER_NODE),
        token_per_dollar_paper=value, value=value))
  return out


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
  with open(path) as f:
    # OOM points have no value; the paper draws them at 0.
    return [dict(r, x=int(r["x"]), token_per_dollar=float(r["token_per_dollar"] or 0.0),
                 oom=r["oom"] == "1") for r in csv.DictReader(f)]


def plot_figure(fig_id: str, title: str, xfield: str, sfield: str, ours: list[dict],
                paper: list[dict], out_dir: Path) -> Path:
  fig, axes = plt.subplots(1, 4, figsize=(18, 4.2), sharex=False)
  series_names = sorted({r[sfield] for r in ours} | {p["series"] for p in paper
                                                       if p["figure"] == fig_id})
  colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(series_names)}
  points = best(ours, ("model", sfield, xfield))
  for ax, model in zip(axes, MODELS):
    for s in series_names:
      ps = sorted((p for p in paper if p["figure"] == fig_id and p["model"] == PAPER_MODEL[model]
                   and p["series"] == s), key=lambda p: p["x"])
      if ps:
        ax.plot([p["x"] for p in ps], [p["token_per_dollar"] for p in ps], "--o",
                color=colors[s], mfc="none", alpha=0.7, label=f"paper: {s}")
      mine = sorted((r for (m, ss, _), r in points.items() if m == model and ss == s),
                    key=lambda r: r[xfield])
      if mine:
        ax.plot([r[xfield] for r in mine], [r["value"] for r in mine], "-s", color=colors[s],
                label=f"slm_jax: {s}")
    ax.set_xscale("log", base=2)
    ax.set_title(PAPER_MODEL[model])
    ax.set_xlabel(xfield.replace("_", " "))
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("Token/Dollar (paper units)")
  handles = {h.get_label(): h for ax in axes for h in ax.get_lines()}
  fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=4, fontsize=8,
             frameon=False)
  fig.suptitle(f"{fig_id}: {title}")
  fig.tight_layout(rect=(0, 0.12, 1, 0.95))
  path = out_dir / f"{fig_id.lower()}.png"
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_breakdown(ours: list[dict], out_dir: Path) -> Path | None:
  """Stacked bars of where the best profiled step of each size and attention spends its time."""
  profiled = [r for r in ours if (r.get("breakdown") or {}).get("ms")]
  if not profiled:
    return None
  rows = sorted(best(profiled, ("model", "attention")).values(),
                key=lambda r: (MODELS.index(r["model"]), r["attention"]))
  categories = sorted({c for r in rows for c in r["breakdown"]["ms"]})
  fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows)), 4.5))
  bottoms = [0.0] * len(rows)
  for i, cat in enumerate(categories):
    vals = [r["breakdown"]["ms"].get(cat, 0.0) for r in rows]
    ax.bar(range(len(rows)), vals, bottom=bottoms, label=cat, color=plt.cm.tab20(i % 20))
    bottoms = [b + v for b, v in zip(bottoms, vals)]
  ax.set_xticks(range(len(rows)),
                [f"{PAPER_MODEL[r['model']]}\n{r['attention']}\nb{r['per_device_batch']}"
                 for r in rows])
  ax.set_ylabel("ms per step")
  ax.set_title("Where the step goes\n(best profiled point per size and attention)")
  ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
  path = out_dir / "breakdown.png"
  fig.savefig(path, dpi=110, bbox_inches="tight")  # the legend sits outside the axes
  plt.close(fig)
  return path


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
    label = (f"{PAPER_MODEL.get(r['model'], r['model'])} on {r['num_devices']} x {gpu}"
             + (f" [{r['tag']}]" if r.get("tag") else ""))
    prices = [(label, 1.0)] + [
        (f"{label} at {g} price (re-priced)",
         hardware.gpu(g).usd_per_hour / r["price_per_device_hour"])
        for g in reprice if g != gpu and r.get("price_per_device_hour")]
    for name, scale in prices:
      out.append({"label": name, "record": r, "repriced": scale != 1.0,
                  "price": r.get("price_per_device_hour") and r["price_per_device_hour"] * scale,
                  "dollars": [d * scale for d, _ in r["loss_vs_dollars"]],
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


def plot_loss_vs_dollars(curves: list[dict], out_dir: Path, target: float | None) -> Path | None:
  if not curves:
    return None
  fig, ax = plt.subplots(figsize=(8, 5))
  for i, c in enumerate(curves):
    color = plt.cm.tab10(i % 10)
    ax.plot(c["dollars"], c["loss"], "--" if c["repriced"] else "-", color=color,
            label=f"{c['label']}: training (smoothed)")
    if c["eval"]:
      ax.plot(*zip(*c["eval"]), "o", color=color, mfc="none", label=f"{c['label']}: held-out")
  if target is not None:
    ax.axhline(target, color="gray", lw=0.8, ls=":", label=f"target loss {target:.3f}")
  ax.set_xscale("log")
  ax.set_xlabel("US dollars spent (price per GPU-hour x GPUs x training time)")
  ax.set_ylabel("loss")
  ax.set_title("Loss/Dollar")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  path = out_dir / "loss_vs_dollars.png"
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def loss_dollar_table(curves: list[dict], target: float) -> str:
  held = common_eval_target(curves)
  held_col = f"USD to held-out {held:.3f}" if held is not None else "USD to held-out loss"
  lines = [f"| run | price/GPU-hour | steps | tokens/s | USD to loss {target:.3f} | {held_col} | "
           "final loss | held-out loss (best) | USD spent |", "|---" * 9 + "|"]
  for c in sorted(curves, key=lambda c: dollars_to(c, target) or float("inf")):
    r = c["record"]
    best = min((l for _, l in c["eval"]), default=None)
    lines.append(
        f"| {c['label']} | {fmt(c['price'], '.2f')} | "
        f"{fmt(r.get('steps_trained'), ',')} | {fmt(r.get('tokens_per_s'))} | "
        f"{fmt(dollars_to(c, target), '.4f')} | "
        f"{fmt(eval_dollars_to(c, held) if held is not None else None, '.4f')} | "
        f"{fmt(r.get('final_loss'), '.3f')} | {fmt(r.get('final_eval_loss'), '.3f')} "
        f"({fmt(best, '.3f')}) | {fmt(c['dollars'][-1], '.4f')} |")
  return "\n".join(lines)


def _mfu(record: dict) -> str:
  return f"{fmt(record['mfu'] and record['mfu'] * 100, '.1f')}%"


def best_table(ours: list[dict]) -> str:
  """The best configuration of each size, per GPU type."""
  lines = ["| model | GPU | GPUs | attention | strategy | batch/GPU | tokens/s/GPU | MFU | "
           "Token/$ (paper units) | tokens per USD | price |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for (model, gpu), r in sorted(best(ours, ("model", "gpu_series")).items(),
                                key=lambda kv: (MODELS.index(kv[0][0]), kv[0][1])):
    lines.append(
        f"| {PAPER_MODEL[model]} | {gpu} | {r['num_devices']} | {r['attention']} | "
        f"{r['strategy']} | {r['per_device_batch']} | {fmt(r['tokens_per_s_per_device'])} | "
        f"{_mfu(r)} | {fmt(r['value'])} | "
        f"{fmt(r['token_per_dollar'])} | {r.get('price_source', '-')} |")
  return "\n".join(lines)


def variants_table(variants: list[dict], ours: list[dict]) -> str:
  """Each aligned-width variant's best per GPU type, beside its paper model's best there."""
  lines = ["| variant | GPU | params | batch/GPU | tokens/s/GPU | MFU | paper model's best: "
           "params, tokens/s/GPU, MFU |", "|---|---|---|---|---|---|---|"]
  paper_best = best(ours, ("model", "gpu_series"))
  for (model, gpu), r in sorted(best(variants, ("model", "gpu_series")).items(),
                                key=lambda kv: (MODELS.index(variant_of(kv[0][0])), kv[0])):
    p = paper_best.get((variant_of(model), gpu))
    paper = (f"{fmt(p['params'])}, {fmt(p['tokens_per_s_per_device'])}, "
             f"{_mfu(p)}" if p else "-")
    lines.append(f"| {model} | {gpu} | {fmt(r['params'])} | {r['per_device_batch']} | "
                 f"{fmt(r['tokens_per_s_per_device'])} | "
                 f"{_mfu(r)} | {paper} |")
  return "\n".join(lines)


def _torch_label(record: dict) -> str:
  return record["attention"] + (" + torch.compile" if record.get("torch_compile") else "")


def stacks_table(ours: list[dict], torch: list[dict], paper: list[dict]) -> str:
  """Three columns per size: the paper's best, PyTorch today on this GPU, slm_jax (best each)."""
  lines = ["| model | GPU | paper best (any GPU) | PyTorch (this GPU) | slm_jax | "
           "slm_jax / PyTorch |", "|---|---|---|---|---|---|"]
  jb, tb = best(ours, ("model", "gpu_series")), best(torch, ("model", "gpu_series"))
  for m, gpu in sorted(set(jb) | set(tb), key=lambda k: (MODELS.index(k[0]), k[1])):
    pb = max((p["token_per_dollar"] for p in paper if p["model"] == PAPER_MODEL[m]), default=None)
    j, t = jb.get((m, gpu)), tb.get((m, gpu))
    ratio = j["value"] / t["value"] if j and t else None
    lines.append(f"| {PAPER_MODEL[m]} | {gpu} | {fmt(pb)} | "
                 f"{fmt(t and t['value'])}{' (' + _torch_label(t) + ')' if t else ''} | "
                 f"{fmt(j and j['value'])} | {fmt(ratio, '.2f')} |")
  return "\n".join(lines)


def answers(ours: list[dict], paper: list[dict]) -> dict[str, str]:
  """Our answer to each question, computed from the records (or what is missing)."""
  out = {}
  by_att = best(ours, ("model", "attention_series"))
  lines = []
  for m in MODELS:
    flash, vanilla = by_att.get((m, "flash_attention")), by_att.get((m, "vanilla_attention"))
    pf = max((p["token_per_dollar"] for p in paper if p["figure"] == "Fig1" and
              p["model"] == PAPER_MODEL[m] and p["series"] == "flash_attention"), default=None)
    pv = max((p["token_per_dollar"] for p in paper if p["figure"] == "Fig1" and
              p["model"] == PAPER_MODEL[m] and p["series"] == "vanilla_attention"), default=None)
    paper_ratio = f"paper {pf / pv:.2f}x" if pf and pv else "paper -"
    if flash and vanilla:
      lines.append(f"{PAPER_MODEL[m]}: flash / vanilla = {flash['value'] / vanilla['value']:.2f}x "
                   f"({paper_ratio})")
    elif flash or vanilla:
      lines.append(f"{PAPER_MODEL[m]}: only {'flash' if flash else 'vanilla'} attention measured "
                   f"({paper_ratio})")
  out["Fig1"] = "; ".join(lines) or "no records with both attentions yet"
  by_gpu = best(ours, ("model", "gpu_series"))
  lines = []
  for m in MODELS:
    gpus = {g: r["value"] for (mm, g), r in by_gpu.items() if mm == m}
    if gpus:
      top = max(gpus, key=gpus.get)
      lines.append(f"{PAPER_MODEL[m]}: best {top} ({fmt(gpus[top])})" +
                   ("" if len(gpus) > 1 else " (the only GPU type measured)"))
  out["Fig2"] = "; ".join(lines) or "no GPU records yet"
  for fig, key in (("Fig3", "num_nodes"), ("Fig4", "global_batch")):
    by_s = best(ours, ("model", "strategy_series"))
    lines = []
    for m in MODELS:
      ss = {s: r for (mm, s), r in by_s.items() if mm == m}
      if ss:
        top = max(ss, key=lambda s: ss[s]["value"])
        lines.append(f"{PAPER_MODEL[m]}: best {top} at {ss[top]['num_devices']} GPU(s), "
                     f"global batch {ss[top]['global_batch']}" +
                     ("" if len(ss) > 1 else " (the only scheme measured)"))
    out[fig] = "; ".join(lines) or "no records yet"
  # Q4's second half: does Token/Dollar peak before the largest batch that fits?
  sat = []
  for m in MODELS:
    rs = [r for r in ours if r["model"] == m and r.get("peak_memory_bytes")]
    if len({r["per_device_batch"] for r in rs}) > 1:
      top = max(rs, key=lambda r: r["value"])
      largest = max(rs, key=lambda r: r["per_device_batch"])
      sat.append(f"{PAPER_MODEL[m]}: best at batch {top['per_device_batch']} "
                 f"({top['peak_memory_bytes'] / 2**30:.1f} GiB), largest that fit "
                 f"{largest['per_device_batch']} ({largest['peak_memory_bytes'] / 2**30:.1f} GiB)")
  if sat:
    out["Fig4"] += ". Memory: " + "; ".join(sat)
  return out


def write_report(paths: list[str], out_dir: Path, paper_csv: Path = PAPER_CSV,
                 target_loss: float | None = None, reprice: tuple[str, ...] = (),
                 runs: tuple[str, ...] = ()) -> Path:
  out_dir.mkdir(parents=True, exist_ok=True)
  records = [r for p in paths for r in results.read(p)]
  ours = prepare(records)
  torch = prepare(records, stack="torch")
  variants = prepare(records, variants=True)
  paper = read_paper(paper_csv)
  for fig_id, title, xfield, sfield, keep in FIGURES:
    plot_figure(fig_id, title, xfield, sfield, [r for r in ours if keep is None or keep(r)],
                paper, out_dir)
  breakdown = plot_breakdown(ours, out_dir)
  curves = train_curves(records, reprice, runs)
  target = target_loss if target_loss is not None else common_target(curves)
  loss_dollars = plot_loss_vs_dollars(curves, out_dir, target)
  ans = answers(ours, paper)
  status = defaultdict(int)
  for r in records:
    status[r.get("status")] += 1
  md = [f"# slm_jax report\n\n{len(records)} records "
        f"({', '.join(f'{n} {s}' for s, n in sorted(status.items()))}) from "
        f"{', '.join(paths)}.\n",
        "Token/Dollar (paper units) = tokens/s per GPU / the paper's GPU-hour price ratio; "
        f"tokens per USD use {hardware.PRICE_TABLE_SOURCE} (dated {hardware.PRICE_TABLE_DATE}).\n",
        f"Speeds are medians of at least {MIN_TIMED_STEPS} timed steps (shorter runs, such as "
        "memory-fit checks, are left out of the tables and figures).\n",
        "## Best configuration per size and GPU (slm_jax)\n", best_table(ours), "",
        "## Token/Dollar (paper units): the paper, PyTorch today, slm_jax\n",
        stacks_table(ours, torch, paper), ""]
  if variants:
    md += ["## Aligned-width variants (they change the model; not in the paper's tables)\n",
           "Heads and FFN columns added until the widths are multiples of "
           "`--config.width_multiple`; MFU counts each model's own FLOPs.\n",
           variants_table(variants, ours), ""]
  for fig_id, _, _, _, _ in FIGURES:
    q, paper_answer = QUESTIONS[fig_id]
    md += [f"## {q}\n", f"- Paper: {paper_answer}", f"- slm_jax: {ans[fig_id]}",
           f"\n![{fig_id}]({fig_id.lower()}.png)\n"]
  if breakdown:
    md += ["## Step-time breakdown\n", "![breakdown](breakdown.png)\n"]
  if loss_dollars:
    md += ["## Loss/Dollar: training on text\n",
           f"Dollars to reach loss {target:.3f} ("
           f"{'--target_loss' if target_loss is not None else 'the lowest loss every run reaches'}"
           "; training loss, trailing mean over 2% of the run), and to the lowest held-out loss "
           "every evaluated run reaches:\n",
           loss_dollar_table(curves, target), "", "![loss vs dollars](loss_vs_dollars.png)\n"]
  md += ["## All records\n", results.markdown_table(records)]
  (out_dir / "report.md").write_text("\n".join(md) + "\n")
  page = ["<!doctype html><meta charset='utf-8'><title>slm_jax report</title>",
          "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
          "img{max-width:100%}td,th{padding:2px 8px}</style>",
          f"<h1>slm_jax report</h1><p>{len(records)} records from "
          f"{html.escape(', '.join(paths))}.</p>"]
  for fig_id, _, _, _, _ in FIGURES:
    q, paper_answer = QUESTIONS[fig_id]
    page += [f"<h2>{html.escape(q)}</h2><p><b>Paper:</b> {html.escape(paper_answer)}</p>"
             f"<p><b>slm_jax:</b> {html.escape(ans[fig_id])}</p>",
             f"<img src='{fig_id.lower()}.png' alt='{fig_id}'>"]
  if breakdown:
    page.append("<h2>Step-time breakdown</h2><img src='breakdown.png' alt='breakdown'>")
  if loss_dollars:
    page.append("<h2>Loss/Dollar: training on text</h2>"
                "<img src='loss_vs_dollars.png' alt='loss vs dollars'>")
  page.append("<h2>Tables</h2><pre>" + html.escape((out_dir / "report.md").read_text()) +
              "</pre>")
  (out_dir / "index.html").write_text("\n".join(page))
  return out_dir / "index.html"


_PRICED = sorted(g.name for g in hardware.GPUS.values())
_OUT = flags.DEFINE_string("out", "report", "Folder for the PNGs, report.md and index.html.")
_PAPER = flags.DEFINE_string("paper_csv", str(PAPER_CSV), "The paper's plotted points.")
_TARGET = flags.DEFINE_float("target_loss", None, "Loss for the dollars-to-target table; "
                             "default: the lowest loss every training run reaches.")
_REPRICE = flags.DEFINE_list("reprice", [], "Also draw each training run at these GPU types' "
                             f"prices (of {_PRICED}), labelled re-priced.")
_RUNS = flags.DEFINE_list("runs", [], "Training runs to draw and tabulate, by tag (shell "
                          "patterns, e.g. '*loss_dollar'); default: every one.")


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
    print(f"error: --reprice: no price for {unknown}; choose from {_PRICED}", file=sys.stderr)
    sys.exit(2)
  index = write_report(paths, Path(_OUT.value), Path(_PAPER.value), _TARGET.value,
                       tuple(_REPRICE.value), tuple(_RUNS.value))
  print(f"wrote {index}")


if __name__ == "__main__":
  app.run(main)
