import json
import subprocess
import sys
from pathlib import Path

import pytest

from slm_jax import report, results

ROOT = Path(__file__).resolve().parent.parent


def record(model="100m", attention="cudnn", strategy="ddp", batch=16, devices=1,
           kind="NVIDIA A100-SXM4-80GB", tps_per_device=1000.0, status="ok", breakdown=None):
  tpd_paper = tps_per_device / {"NVIDIA A100-SXM4-80GB": 1.46, "NVIDIA H100 80GB HBM3": 2.53,
                                "NVIDIA A100-SXM4-40GB": 1.0}[kind]
  r = {k: None for k in results.REQUIRED}
  r.update(status=status, message="", model=model, attention=attention, strategy=strategy,
           per_device_batch=batch, num_devices=devices, global_batch=batch * devices,
           device_kind=kind, tokens_per_s_per_device=tps_per_device,
           tokens_per_s=tps_per_device * devices, mfu=0.4, token_per_dollar=123.0,
           token_per_dollar_paper=tpd_paper if status == "ok" else None,
           price_source="test", peak_memory_bytes=batch * 2**30, params=1, seq_len=1024,
           step_time_s={"median": 1.0}, breakdown=breakdown)
  return r


def test_best_takes_the_max_over_everything_off_the_axes():
  rs = report.prepare([
      record(batch=4, tps_per_device=100), record(batch=4, attention="xla", tps_per_device=300),
      record(batch=8, tps_per_device=200), record(batch=8, devices=2, tps_per_device=250),
      record(batch=8, status="oom"), record(model="1b", batch=4, tps_per_device=50)])
  by_batch = report.best(rs, ("model", "per_device_batch"))
  assert by_batch[("100m", 4)]["attention"] == "xla"  # 300 beats 100
  assert by_batch[("100m", 8)]["num_devices"] == 2    # 250 beats 200; the oom has no value
  assert by_batch[("1b", 4)]["tokens_per_s_per_device"] == 50
  by_att = report.best(rs, ("model", "attention_series"))
  assert by_att[("100m", "flash_attention")]["tokens_per_s_per_device"] == 250
  assert by_att[("100m", "vanilla_attention")]["value"] == pytest.approx(300 / 1.46)
  assert len(by_att) == 3


def test_a_run_of_few_timed_steps_is_not_a_point():
  short = dict(record(batch=64, tps_per_device=900), config={"steps": 3, "repeats": 1})
  timed = dict(record(batch=32, tps_per_device=500), config={"steps": 5, "repeats": 2})
  points = report.prepare([short, timed])
  assert [r["per_device_batch"] for r in points] == [32]
  assert report.best(points, ("model",))[("100m",)]["tokens_per_s_per_device"] == 500


def test_aligned_width_variants_are_reported_apart_from_the_paper_models(tmp_path):
  records = [record(model="2b", tps_per_device=100), record(model="2b-w128", tps_per_device=90),
             record(model="custom", tps_per_device=500)]
  assert [r["model"] for r in report.prepare(records)] == ["2b"]
  assert [r["model"] for r in report.prepare(records, variants=True)] == ["2b-w128"]
  path = tmp_path / "results.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  md = (report.write_report([str(path)], tmp_path / "out").parent / "report.md").read_text()
  section = md.split("## Aligned-width variants")[1].split("\n## ")[0]
  [row] = [l for l in section.splitlines() if l.startswith("| 2b-w128 |")]
  assert row.split("|")[5].strip() == "90" and row.rstrip(" |").endswith("100, 40.0%")
  assert "| 2B | A100-80GB |" in md and "| 2B-w128" not in md


def test_series_and_axes_follow_the_paper():
  [r] = report.prepare([record(strategy="fsdp_grad_op", devices=16,
                               kind="NVIDIA H100 80GB HBM3")])
  assert (r["gpu_series"], r["strategy_series"], r["num_nodes"]) == (
      "H100-80GB", "FSDP-Grad+Optimizer", 2)
  assert r["attention_series"] == "flash_attention"


def test_report_from_a_fixture_has_every_figure_table_and_answer(tmp_path):
  records = []
  for model in ("100m", "500m", "1b", "2b"):
    for att, speed in (("xla", 1.0), ("cudnn", 2.0)):
      for strategy in ("ddp", "fsdp_full", "fsdp_grad_op"):
        for devices in (1, 8, 16):
          for batch in (4, 16, 64):
            records.append(record(model, att, strategy, batch, devices,
                                  tps_per_device=speed * batch ** 0.5 * (1 + devices / 100)))
  records.append(record("1b", "cudnn", "ddp", 64, 1, kind="NVIDIA H100 80GB HBM3",
                        breakdown={"ms": {"matmul": 60.0, "attention": 20.0, "other": 5.0}}))
  records.append(record("2b", "xla", "ddp", 64, 1, status="oom"))
  torch_rec = record("1b", "sdpa", "ddp", 16, 16, tps_per_device=2.0)
  torch_rec["stack"] = "torch"
  records.append(torch_rec)
  path = tmp_path / "results.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  proc = subprocess.run([sys.executable, "-m", "slm_jax.report", str(path),
                         f"--out={tmp_path / 'out'}"], cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  out = tmp_path / "out"
  for name in ("fig1.png", "fig2.png", "fig3.png", "fig4.png", "breakdown.png"):
    assert (out / name).stat().st_size > 10_000, name
  md = (out / "report.md").read_text()
  assert "| 1B | A100-80GB | 16 | cudnn |" in md  # best 1B on A100-80GB: most GPUs, batch 64
  assert "100M: flash / vanilla = 2.00x (paper 2.72x)" in md
  assert md.count("- Paper:") == 4 and md.count("- slm_jax:") == 4
  assert "largest that fit 64" in md
  # The torch record sits in its own column and never in the JAX figures' maxima.
  [row] = [l for l in md.splitlines() if l.startswith("| 1B | A100-80GB | 17,125 |")]
  assert "(sdpa)" in row and row.rstrip(" |").split("|")[-1].strip() != "-"
  page = (out / "index.html").read_text()
  assert page.count("<img") == 5 and "Q4." in page


def test_missing_results_file_is_a_clear_error(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "slm_jax.report", str(tmp_path / "nope.jsonl")],
                        cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2 and "no such results file" in proc.stderr


def train_record(model, kind, price, seconds_per_step, steps=200, tag=None):
  r = record(model=model, kind=kind)
  losses = [6.0 * 0.99 ** i + 2.0 for i in range(steps)]
  dollars = [price * seconds_per_step * (i + 1) / 3600 for i in range(steps)]
  r.update(mode="train", tag=tag, price_per_device_hour=price, steps_trained=steps,
           final_loss=losses[-1], final_eval_loss=losses[-1] + 0.1, tokens_per_s=1e5,
           loss_vs_dollars=[list(p) for p in zip(dollars, losses)],
           eval_losses=[[i + 1, dollars[i], losses[i] + 0.1] for i in range(0, steps, 50)])
  return r


def test_loss_vs_dollars_figure_and_dollars_to_target_table(tmp_path):
  # Same losses per step; the A100 run is 2x slower per step at 1.30/3.00 of the H100's price.
  records = [train_record("100m", "NVIDIA H100 80GB HBM3", 3.0, 1.0),
             train_record("100m", "NVIDIA A100-SXM4-80GB", 1.3, 2.0, steps=100),
             record()]  # a benchmark record: not a training curve
  path = tmp_path / "results.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  proc = subprocess.run([sys.executable, "-m", "slm_jax.report", str(path),
                         f"--out={tmp_path / 'out'}", "--reprice=A100-40GB"],
                        cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr
  assert (tmp_path / "out/loss_vs_dollars.png").stat().st_size > 10_000
  md = (tmp_path / "out/report.md").read_text()
  curves = report.train_curves(records, ("A100-40GB",))
  assert len(curves) == 4 and sum(c["repriced"] for c in curves) == 2
  target = report.common_target(curves)  # the shorter A100 run's lowest loss
  assert target == pytest.approx(min(curves[2]["loss"]))
  assert f"USD to loss {target:.3f}" in md
  rows = [l for l in md.splitlines() if l.startswith("| 100M on 1 x")]
  assert len(rows) == 4
  h100, a100 = report.dollars_to(curves[0], target), report.dollars_to(curves[2], target)
  # Each reaches the target at step ~100: the A100 for 100 x 2 s x $1.30/h, the H100 for
  # 100 x 1 s x $3/h, so the A100 is cheaper.
  assert a100 == pytest.approx(100 * 2 * 1.3 / 3600, rel=0.05)
  assert h100 == pytest.approx(100 * 1 * 3.0 / 3600, rel=0.05) and a100 < h100
  assert "at A100-40GB price (re-priced)" in md
  # Held-out losses, evaluated every 50 steps: the A100 run's best (step 51) is every run's.
  held = report.common_eval_target(curves)
  assert held == pytest.approx(6.0 * 0.99 ** 50 + 2.1) and f"USD to held-out {held:.3f}" in md
  assert report.eval_dollars_to(curves[2], held) == pytest.approx(51 * 2 * 1.3 / 3600)
  assert "loss_vs_dollars.png" in (tmp_path / "out/index.html").read_text()
  # --runs picks training runs by tag; untagged ones match no pattern.
  tagged = [train_record("100m", "NVIDIA H100 80GB HBM3", 3.0, 1.0, tag=t)
            for t in ("100m_h100_loss_dollar", "gap-100m/train")]
  chosen = report.train_curves(records + tagged, (), ("*loss_dollar",))
  assert [c["record"]["tag"] for c in chosen] == ["100m_h100_loss_dollar"]
  proc = subprocess.run([sys.executable, "-m", "slm_jax.report", str(path), "--reprice=TPU"],
                        cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2 and "no price for ['TPU']" in proc.stderr
