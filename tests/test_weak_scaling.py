import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from slm_jax import hardware, weak_scaling

ROOT = Path(__file__).resolve().parent.parent
H200 = "NVIDIA H200"
PRESET = hardware.GPUS["h200"].xla_options


def run(tps, chips, *, steps=None, model="2b", batch=32, campaign="c", strategy=None,
        stack="jax", timestamp="2026-11-30T00:00:00", tag=None, status="ok"):
  """A benchmark record on `chips` (UUIDs) at `tps` tokens/s per GPU; `steps`: its timed step
  times (default: 30 equal steps at the matching step time)."""
  median = batch * 1024 / tps
  steps = steps or [median] * 30
  return {
      "status": status, "mode": "benchmark", "model": model, "attention": "cudnn",
      "per_device_batch": batch, "seq_len": 1024, "num_devices": len(chips),
      "strategy": strategy or ("single" if len(chips) == 1 else "ddp"), "device_kind": H200,
      "stack": stack, "campaign": campaign, "git_commit": "a" * 40, "timestamp": timestamp,
      "tag": tag, "tokens_per_s_per_device": tps, "step_time_s": {"median": median},
      "step_times_s": steps, "config": {"steps": 10, "repeats": 3, "xla_options": PRESET,
                 "nccl_options": hardware.GPUS["h200"].nccl_options},
      "gpus": [{"index": str(i), "uuid": u} for i, u in enumerate(chips)]}


def test_a_two_gpu_run_is_read_against_its_own_chips_slower_one_first():
  rows = weak_scaling.rows([run(100.0, ["GPU-a"]), run(98.0, ["GPU-b"]),
                            run(96.0, ["GPU-a", "GPU-b"])])
  assert len(rows) == 1
  row = rows[0]
  assert row.slower.uuid == "GPU-b" and row.faster.uuid == "GPU-a"
  assert row.against_slower == pytest.approx(96 / 98)
  assert row.against_faster == pytest.approx(96 / 100)


def test_runs_on_other_chips_other_work_or_another_campaign_are_not_baselines():
  two = run(96.0, ["GPU-a", "GPU-b"])
  assert weak_scaling.rows([run(100.0, ["GPU-a"]), run(98.0, ["GPU-c"]), two]) == []
  assert weak_scaling.rows([run(100.0, ["GPU-a"]), run(98.0, ["GPU-b"], batch=16), two]) == []
  assert weak_scaling.rows([run(100.0, ["GPU-a"]), run(98.0, ["GPU-b"], campaign="d"), two]) == []
  assert weak_scaling.rows([run(100.0, ["GPU-a"]), run(98.0, ["GPU-b"], stack="torch"), two]) == []
  assert weak_scaling.rows([run(100.0, ["GPU-a"]), run(98.0, ["GPU-b"], status="oom"), two]) == []
  no_chips = dict(two, gpus=None)  # written before chips were recorded: host unknown
  assert weak_scaling.rows([run(100.0, ["GPU-a"]), run(98.0, ["GPU-b"]), no_chips]) == []


def test_a_chip_with_several_one_gpu_runs_is_their_mean():
  rows = weak_scaling.rows([run(100.0, ["GPU-a"]), run(97.0, ["GPU-b"]), run(99.0, ["GPU-b"]),
                            run(96.0, ["GPU-a", "GPU-b"])])
  assert rows[0].slower.tokens_per_s == pytest.approx(98.0)
  assert len(rows[0].slower.runs) == 2


def test_median_se_is_robust_to_odd_first_and_last_steps_and_sees_slow_repeats():
  rng = [1.0 + 0.01 * ((i * 7) % 5 - 2) for i in range(30)]  # +-2% around 1.0 s
  base = weak_scaling.median_se({"step_times_s": rng, "config": {"steps": 10, "repeats": 3}})
  mad = statistics.median(abs(t - statistics.median(rng)) for t in rng)
  assert base == pytest.approx(
      max(1.2533 * 1.4826 * mad / math.sqrt(30),
          statistics.stdev(statistics.median(rng[i * 10:(i + 1) * 10]) for i in range(3))
          / math.sqrt(3)) / statistics.median(rng))
  # A stack's long first and short last step of each repeat leave the median's error alone.
  odd = list(rng)
  for i in range(3):
    odd[i * 10], odd[i * 10 + 9] = 1.6, 0.4
  assert weak_scaling.median_se({"step_times_s": odd, "config": {"steps": 10,
                                                                 "repeats": 3}}) < 2 * base
  # A slow stretch that fills one repeat widens it: the repeats disagree.
  slow = [t * (1.05 if i >= 20 else 1.0) for i, t in enumerate(rng)]
  assert weak_scaling.median_se({"step_times_s": slow, "config": {"steps": 10,
                                                                  "repeats": 3}}) > 3 * base
  assert weak_scaling.median_se({"step_times_s": [1.0]}) is None


def test_the_ratio_carries_both_medians_errors():
  noisy = [1.0 + 0.02 * ((i * 7) % 5 - 2) for i in range(30)]
  alone = run(100.0, ["GPU-a"], steps=noisy)
  other = run(101.0, ["GPU-b"])  # no spread: its error is 0
  both = run(98.0, ["GPU-a", "GPU-b"], steps=noisy)
  row = weak_scaling.rows([alone, other, both])[0]
  se = weak_scaling.median_se(alone)
  assert se > 0
  assert row.se == pytest.approx(math.hypot(se, se))


def test_newest_campaign_first_within_a_size():
  old = [run(100.0, ["GPU-a"], campaign="old", timestamp="2026-11-01T00:00:00"),
         run(100.0, ["GPU-b"], campaign="old", timestamp="2026-11-01T00:00:00"),
         run(97.0, ["GPU-a", "GPU-b"], campaign="old", timestamp="2026-11-01T00:00:00")]
  new = [run(100.0, ["GPU-c"], campaign="new"), run(100.0, ["GPU-d"], campaign="new"),
         run(99.0, ["GPU-c", "GPU-d"], campaign="new")]
  small = [run(100.0, ["GPU-e"], model="100m"), run(100.0, ["GPU-f"], model="100m"),
           run(90.0, ["GPU-e", "GPU-f"], model="100m", timestamp="2026-10-01T00:00:00")]
  rows = weak_scaling.rows(old + new + small)
  assert [(r.record["model"], r.record["campaign"]) for r in rows] == [
      ("100m", "c"), ("2b", "new"), ("2b", "old")]


def test_the_command_prints_the_table_and_says_what_is_missing(tmp_path):
  path = tmp_path / "r.jsonl"
  rows = [run(100.0, ["GPU-a1234567"]), run(98.0, ["GPU-b1234567"]),
          run(96.0, ["GPU-a1234567", "GPU-b1234567"], tag="x/ddp")]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = subprocess.run([sys.executable, "-m", "slm_jax.weak_scaling", str(path)], cwd=ROOT,
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  assert "| 2B | 2 | 32 | ddp | 96 | 98 / 100 | 98.0% ± 0.0 | 96.0% | a1234567, b1234567 |" in out.stdout
  path.write_text(json.dumps(rows[-1]) + "\n")
  out = subprocess.run([sys.executable, "-m", "slm_jax.weak_scaling", str(path)], cwd=ROOT,
                       capture_output=True, text=True)
  assert out.returncode == 1 and "run the one-GPU baseline on each chip" in out.stdout
  out = subprocess.run([sys.executable, "-m", "slm_jax.weak_scaling", str(tmp_path / "no")],
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 2 and out.stderr.startswith("error: cannot read")
  assert "Traceback" not in out.stderr


def test_one_gpu_runs_of_the_runs_own_commit_come_first():
  late = "b" * 40
  rows = weak_scaling.rows([
      run(100.0, ["GPU-a"]), run(90.0, ["GPU-b"]),  # an earlier command of the campaign
      dict(run(100.0, ["GPU-a"]), git_commit=late), dict(run(98.0, ["GPU-b"]), git_commit=late),
      dict(run(96.0, ["GPU-a", "GPU-b"]), git_commit=late)])
  assert rows[0].slower.tokens_per_s == pytest.approx(98.0)


def test_the_report_tables_it(tmp_path):
  from slm_jax import report, results
  records = [{k: None for k in results.REQUIRED}  # every field a record has, then this test's
             | run(tps, chips, tag="x") for tps, chips in
             ((100.0, ["GPU-a"]), (98.0, ["GPU-b"]), (96.0, ["GPU-a", "GPU-b"]))]
  for r in records:
    r.update(schema_version=1, params=1, mfu=0.5, peak_memory_bytes=2**30, message="",
             global_batch=r["per_device_batch"] * r["num_devices"], token_per_dollar=1.0,
             tokens_per_s=r["tokens_per_s_per_device"] * r["num_devices"], price_source="t")
  path = tmp_path / "r.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  report.write_report([str(path)], tmp_path / "out")
  text = (tmp_path / "out" / "report.md").read_text()
  assert "## Weak scaling from one GPU, on the same chips" in text
  assert "| 2B | 2 | 32 | ddp | 96 | 98 / 100 | 98.0% ± 0.0 | 96.0% |" in text


def test_the_scheme_names_options_beyond_todays_preset_and_those_it_ran_without():
  preset = PRESET.split()
  assert preset, "the H200 preset sets XLA options"
  record = run(96.0, ["GPU-a", "GPU-b"])
  assert weak_scaling._scheme(record) == "ddp"
  older = dict(record, config=dict(record["config"], xla_options=" ".join(preset[1:])))
  assert weak_scaling._scheme(older) == f"ddp (without {preset[0]})"
  arm = dict(record, config=dict(record["config"], xla_options=PRESET + " --xla_x=1",
                                 reduce_schedule="per_layer"))
  assert weak_scaling._scheme(arm) == "ddp (--xla_x=1, reduce_schedule=per_layer)"
  assert weak_scaling._scheme(dict(record, stack="torch")) == "PyTorch ddp"
