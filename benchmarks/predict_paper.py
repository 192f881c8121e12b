r"""slm_jax's predicted Token/Dollar on A100-80GB beside the paper's measured PyTorch points
(Figures 2 and 3 of Ashkboos et al.: 1-64 GPUs, 8 a node), one JSON line per predicted point.

  python benchmarks/predict_paper.py --records=benchmarks/h200_paper_projection.jsonl \
      --batch=100m:64,100m:128,500m:64,1b:32,1b:48,2b:16,2b:32 \
      --out=benchmarks/predict_paper_a100_80gb.jsonl

Runs on a CPU (about 3 minutes a model and batch): every model in --models with a profiled
one-GPU record at each of its --batch sizes is projected to the A100-80GB (slm_jax.predict),
under each scheme, at 1-64 GPUs, with NVLink 3 inside a node and each of --inter across nodes,
at both overlap bounds (exposed fraction 1: nothing hidden; 0: every collective hidden behind
compute). Each line carries the paper's point at the same
GPU count (Fig2) and, past one node, the same scheme and node count (Fig3). The report draws,
at each GPU or node count, the best of a model's batches that fits (as the paper's points are
the best over batch sizes).
"""

import argparse
import csv
import functools
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COUNTS = (1, 2, 4, 8, 16, 32, 64)
PAPER_SCHEME = {"ddp": "DDP", "fsdp_full": "FSDP-Full", "fsdp_grad_op": "FSDP-Grad+Optimizer"}
PAPER_MODEL = {"100m": "100M", "500m": "500M", "1b": "1B", "2b": "2B"}


def paper_points() -> dict:
  out = {}
  with open(ROOT / "third_party/ashkboos24/ashkboos24_figures.csv") as f:
    for row in csv.DictReader(f):
      if row["token_per_dollar"]:
        out[row["figure"], row["model"], row["series"], int(float(row["x"]))] = \
            float(row["token_per_dollar"])
  return out


def model_batches(spec: str, models: list[str]) -> list[tuple[str, int]]:
  """(model, per-device batch) pairs of --batch: "64" gives every model 64; "1b:64,2b:16,2b:32"
  names each model's batches (models not named are left out)."""
  pairs = []
  for item in spec.split(","):
    model, _, batch = item.rpartition(":")
    for m in ([model] if model else models):
      if m not in models or not batch.isdigit() or int(batch) < 1:
        raise SystemExit(f"error: --batch {item!r}: want N or MODEL:N with MODEL one of "
                         f"{', '.join(models)} and N >= 1")
      pairs.append((m, int(batch)))
  return sorted(set(pairs), key=lambda p: (models.index(p[0]), p[1]))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--records", default="benchmarks/h200_paper_projection.jsonl")
  ap.add_argument("--out", default="benchmarks/predict_paper_a100_80gb.jsonl")
  ap.add_argument("--models", default="100m,500m,1b,2b")
  ap.add_argument("--batch", default="64",
                  help="per-device batches: N for every model, or MODEL:N pairs (a model may "
                       "have several), comma-separated")
  ap.add_argument("--strategies", default="ddp,fsdp_full,fsdp_grad_op")
  ap.add_argument("--inter", default="ib400,efa100")
  args = ap.parse_args()
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={max(COUNTS)}"
  os.environ["JAX_PLATFORMS"] = "cpu"
  sys.path.insert(0, str(ROOT))
  from slm_jax import config as config_lib, predict, results
  from slm_jax.errors import UserError

  batches = model_batches(args.batch, args.models.split(","))
  records = predict.read_records(args.records.split(","))
  paper = paper_points()
  commit = results.git_commit()
  out = Path(args.out)
  out.write_text("")
  for model, batch in batches:
    for strategy in args.strategies.split(","):
      c = config_lib.paper_config(model, "h200")
      c.update(per_device_batch_size=batch, strategy=strategy)
      plan_fn = functools.lru_cache(maxsize=None)(
          lambda n, c=c: predict.plans(c, [n], 8)[n])
      fake = lambda c, counts, g, plan_fn=plan_fn: {n: plan_fn(n) for n in set(counts) | {1}}
      for inter in args.inter.split(","):
        for e in (1.0, 0.0):
          try:
            points, notes = predict.predict(
                c, list(COUNTS), records=records, gpu="A100-80GB", gpus_per_node=8,
                interconnects=["nvlink3", inter], plan_fn=fake,
                calibration=predict.Calibration(e, f"exposed fraction {e:g} (a bound)"))
          except UserError as err:
            print(f"{model} b{batch} {strategy}: skipped: {err}", flush=True)
            break
          for p in points:
            n, nodes = p["num_devices"], p["num_nodes"]
            row = dict(p, git_commit=commit, notes=notes,
                       paper_fig2=paper.get(("Fig2", PAPER_MODEL[model], "A100-80GB", n)),
                       paper_fig3=(paper.get(("Fig3", PAPER_MODEL[model],
                                              PAPER_SCHEME[strategy], nodes))
                                   if n >= 8 else None))
            with out.open("a") as f:
              f.write(json.dumps(row) + "\n")
            print(f"{model} b{batch} {strategy} {inter} e={e:g} N={n}: predicted "
                  f"{p['token_per_dollar_paper']:,.0f} (fits {p['fits']}), paper Fig2 "
                  f"{row['paper_fig2']}, Fig3 {row['paper_fig3']}", flush=True)
        else:
          continue
        break


if __name__ == "__main__":
  main()
