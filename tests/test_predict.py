"""slm_jax.predict: collectives from the CPU-compiled mesh equal the HLO's, predictions from
synthetic records equal the formulas worked by hand, and bad input is one error line."""

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from slm_jax import collectives, config as config_lib, hardware, predict, train
from slm_jax.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
H100, H200, A100 = hardware.GPUS["h100"], hardware.GPUS["h200"], hardware.GPUS["a100"]
NVLINK, IB = hardware.INTERCONNECTS["nvlink4"], hardware.INTERCONNECTS["ib400"]


def tiny(**overrides):
  c = config_lib.tiny_config()
  c.update(gpu="h100", **overrides)
  return c


def record(c, *, step_s, gpu="NVIDIA H100 80GB HBM3", num_devices=1, run_id="one", **extra):
  """A measured record as slm_jax.main writes it, with only the fields predict reads."""
  tokens = num_devices * c.per_device_batch_size * c.seq_len
  return {"status": "ok", "stack": "jax", "mode": "benchmark", "run_id": run_id,
          "model": config_lib.model_name(c), "attention": c.attention,
          "per_device_batch": c.per_device_batch_size, "seq_len": c.seq_len,
          "strategy": c.strategy, "num_devices": num_devices, "device_kind": gpu,
          "step_time_s": {"median": step_s}, "tokens_per_s": tokens / step_s,
          "params": 1_000_000, "config": c.to_dict(), **extra}


def fake_plans(ops_by_count, state_bytes):
  """A plan_fn that returns fixed collectives instead of compiling."""
  def plans(c, counts, gpus_per_node):
    return {n: {"num_devices": n, "ops": ops_by_count.get(n, []), "expected_memory_bytes": None,
                "state_bytes": state_bytes[n]} for n in set(counts) | {1}}
  return plans


def op(kind, nbytes, group):
  return {"kind": kind, "bytes": nbytes, "group_size": len(group), "groups": [list(group)]}


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp_full"])
@pytest.mark.parametrize("n", [2, 4, 8])
def test_predicted_collectives_for_2_4_8_devices_are_the_compiled_hlos(strategy, n):
  c = tiny(strategy=strategy)
  planned = predict.plans(c, [n], 8)[n]
  cc = tiny(strategy=strategy, num_devices=n)
  compiled, _ = train.compile_step(cc, train.build(cc))
  hlo = {k: (v["count"], v["bytes"]) for k, v in
         collectives.from_hlo(compiled.as_text(), n).items() if v["count"]}
  assert {k: (v["count"], v["bytes"]) for k, v in predict.summary(planned["ops"]).items()} == hlo
  # The point counts the same bytes; under fsdp_full the gradient all-reduces CPU XLA keeps
  # are the reduce-scatters GPU XLA makes of them.
  gpu = predict.summary(predict.gpu_ops(planned["ops"], strategy, n, 8))
  assert sum(v["bytes"] for v in gpu.values()) == sum(b for _, b in hlo.values())
  if strategy == "ddp":
    assert "reduce-scatter" not in gpu
  else:
    large = [o for o in planned["ops"] if o["kind"] == "all-reduce"
             and o["bytes"] >= predict.REDUCE_SCATTER_MIN_BYTES]
    assert large and gpu["reduce-scatter"]["bytes"] == sum(o["bytes"] for o in large)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
def test_hsdp_over_two_nodes_reduces_inside_a_node_and_across_them_separately():
  c = tiny(strategy="hsdp")
  ops = predict.plans(c, [8], 4)[8]["ops"]
  spans = {(o["kind"], len({i // 4 for i in o["groups"][0]})) for o in ops}
  # Parameters gathered inside a node; gradients reduced inside a node, then their shards
  # across the nodes (one GPU of each).
  assert ("all-gather", 1) in spans and ("all-reduce", 1) in spans
  assert any(o["group_size"] == 2 and o["kind"] == "all-reduce" for o in ops)
  gpu = predict.gpu_ops(ops, "hsdp", 8, 4)
  assert {o["kind"] for o in gpu if len({i // 4 for i in o["groups"][0]}) == 2} == {"all-reduce"}


def test_one_node_is_the_ring_model_of_slm_jax_collectives():
  group = range(8)
  ops = [op("all-gather", 10_000_000, group), op("reduce-scatter", 6_000_000, group),
         op("all-reduce", 4_000_000, group)]
  hlo_like = {k: {"count": 0, "bytes": 0, "ring_bytes": 0.0, "group_sizes": []}
              for k in collectives.KINDS}
  for o in ops:
    e = hlo_like[o["kind"]]
    e["count"] += 1
    e["bytes"] += o["bytes"]
    e["ring_bytes"] += (2 if o["kind"] == "all-reduce" else 1) * 7 / 8 * o["bytes"]
    e["group_sizes"] = [8]
  assert predict.comm_seconds(ops, 8, NVLINK, IB) == pytest.approx(
      collectives.predict_seconds(hlo_like, "nvlink4"))


def test_a_prediction_from_a_synthetic_record_is_the_formula_by_hand():
  c = tiny(strategy="fsdp_full", per_device_batch_size=4, seq_len=128)
  one = record(c, step_s=0.100, expected_memory_bytes=30 * 2**30)
  everyone = range(16)
  ops = {16: [op("all-gather", 2_000_000_000, everyone), op("all-reduce", 1_000_000_000, everyone),
              op("all-reduce", 1024, everyone)]}
  state = {1: 12 * 2**30, 16: 12 * 2**30 // 16}
  [p], _ = predict.predict(c, [16], records=[one], gpu="h100", gpus_per_node=8,
                           interconnects=["nvlink4", "ib400"],
                           calibration=predict.Calibration(0.25, "by hand"),
                           plan_fn=fake_plans(ops, state))
  # Two nodes of 8: a ring in each node over NVLink, then one across the nodes over IB on an
  # eighth of the tensor. The large all-reduce is a reduce-scatter on GPUs; the small one stays.
  def rs_or_ag(size):
    return 7 / 8 * size / 450e9 + 1 / 2 * size / 8 / 50e9 + 7 * 3e-6 + 1 * 10e-6
  comm = rs_or_ag(2e9) + rs_or_ag(1e9) + 2 * rs_or_ag(1024)
  optimizer = 28 * 1_000_000 / 3350e9  # no profile: 28 bytes a parameter at HBM speed
  # No calibration record: the slowest of 16 chips, the H200's spread (the H100's is unmeasured).
  slowest = H200.chip_spread * predict.expected_slowest(16)
  compute = (0.100 - optimizer * (1 - 1 / 16)) * (1 + slowest)
  step = compute + 0.25 * comm
  tokens_per_s = 16 * 4 * 128 / step
  assert p["comm_s"] == pytest.approx(comm)
  assert p["compute_s"] == pytest.approx(compute)
  assert p["exposed_comm_s"] == pytest.approx(0.25 * comm)
  assert p["step_s"] == pytest.approx(step)
  assert p["tokens_per_s"] == pytest.approx(tokens_per_s)
  assert p["token_per_dollar"] == pytest.approx(tokens_per_s / (3.00 * 16 / 3600))
  assert p["token_per_dollar_paper"] == pytest.approx(tokens_per_s / 16 / 2.53)
  assert (p["num_nodes"], p["gpus_per_node"]) == (2, 8)
  assert p["expected_memory_bytes"] == 30 * 2**30 - 12 * 2**30 + 12 * 2**30 // 16
  assert p["fits"] is True and p["collectives"]["reduce-scatter"]["count"] == 1


def test_the_slowest_of_n_chips_is_the_expected_maximum_of_n_normal_draws():
  assert predict.expected_slowest(1) == 0.0
  assert predict.expected_slowest(2) == pytest.approx(1 / math.sqrt(math.pi), abs=1e-6)
  assert predict.expected_slowest(8) == pytest.approx(1.4236, abs=1e-4)
  assert predict.expected_slowest(64) == pytest.approx(2.3437, abs=1e-4)


def _two_gpu_record(c, run_id, uuids, compute_ms, gpu="NVIDIA H200"):
  return record(c, step_s=0.1, gpu=gpu, num_devices=len(uuids), run_id=run_id,
                gpus=[{"uuid": u} for u in uuids],
                breakdown={"step_ms": 100.0, "per_device": [{"compute_ms": t} for t in compute_ms]})


def test_the_chip_spread_is_measured_per_host_over_the_gpus_of_its_profiles():
  c = tiny(strategy="ddp")
  records = [_two_gpu_record(c, "a1", ["A0", "A1"], [99.0, 101.0]),
             _two_gpu_record(c, "a2", ["A0", "A1"], [99.0, 101.0]),
             _two_gpu_record(c, "a3", ["A1", "A0"], [90.0, 110.0]),  # one odd step of host A
             _two_gpu_record(c, "b1", ["B0", "B1"], [100.0, 100.0]),
             _two_gpu_record(c, "x1", ["X0", "X1"], [90.0, 110.0], gpu="NVIDIA H100 80GB HBM3"),
             record(c, step_s=0.1, gpu="NVIDIA H200", num_devices=2, run_id="unnamed",
                    breakdown={"step_ms": 100.0,
                               "per_device": [{"compute_ms": 50.0}, {"compute_ms": 150.0}]})]
  sigma, hosts, used = predict.measure_chip_spread(records, H200)
  # Host A's median step differs by 2%: a standard deviation of 0.02 / sqrt(2); host B's by 0.
  assert (hosts, used) == (2, 4)
  assert sigma == pytest.approx(math.sqrt((0.02 / math.sqrt(2)) ** 2 / 2))
  assert predict.measure_chip_spread(records[3:4], H100) is None


def test_the_h200_s_chip_spread_is_what_the_kept_two_gpu_profiles_measure():
  records = predict.read_records(sorted(str(p) for p in (ROOT / "benchmarks").glob("h200*.jsonl")))
  sigma, hosts, _ = predict.measure_chip_spread(records, H200)
  assert round(sigma, 4) == H200.chip_spread and hosts >= 20
  assert hardware.chip_spread(A100) == (H200.chip_spread, "H200")


def test_only_the_chips_past_the_calibration_s_count_slow_a_prediction():
  c = tiny(strategy="ddp")
  everyone8 = range(8)
  ops = {2: [op("all-reduce", 900_000_000, range(2))],
         8: [op("all-reduce", 900_000_000, everyone8)]}
  one = record(c, step_s=0.050, gpu="NVIDIA H200")
  two = record(c, step_s=0.052, gpu="NVIDIA H200", num_devices=2, run_id="two")
  plan_fn = fake_plans(ops, {1: 1, 2: 1, 8: 1})
  points, notes = predict.predict(c, [1, 2, 8], records=[one, two], gpu="h200", plan_fn=plan_fn)
  compute = {p["num_devices"]: p["compute_s"] for p in points}
  # The calibration ran on two GPUs: their slowest chip is in its step fraction already.
  assert compute[1] == compute[2]
  grown = H200.chip_spread * (predict.expected_slowest(8) - predict.expected_slowest(2))
  assert compute[8] == pytest.approx(compute[1] * (1 + grown))
  assert points[2]["slowest_chip"]["fraction"] == pytest.approx(grown)
  assert any(n.startswith("slowest chip:") and "+0.61% at 8 GPUs" in n for n in notes)
  # The note names the widest point, in whatever order the counts came.
  _, notes = predict.predict(c, [8, 1, 2], records=[one, two], gpu="h200", plan_fn=plan_fn)
  assert any(n.startswith("slowest chip:") and "+0.61% at 8 GPUs" in n for n in notes)


def test_another_gpu_type_is_projected_category_by_category():
  c = tiny(strategy="ddp", attention="xla")
  ms = {"matmul": 60.0, "attention": 10.0, "norm/elementwise": 20.0, "loss": 4.0,
        "optimizer": 5.0, "collectives": 0.0, "idle/host": 1.0}
  profiled = record(c, step_s=0.200, gpu="NVIDIA H200", breakdown={"step_ms": 100.0, "ms": ms})
  [p], notes = predict.predict(c, [1], records=[profiled], gpu="A100-80GB",
                               plan_fn=fake_plans({}, {1: 0}))
  peak, hbm = 989 / 312, 4800 / 2039
  # Vanilla (xla) attention materialises its scores: memory-bound, so by HBM bandwidth.
  want = 0.200 * (0.60 * peak + (0.10 + 0.20 + 0.04 + 0.05) * hbm + 0.01)
  assert p["compute_s"] == pytest.approx(want) and p["comm_s"] == 0
  assert p["compute_from"] == "H200" and p["gpu"] == "A100-80GB"
  assert any("projected from one H200" in n for n in notes)


def test_the_exposed_fraction_is_calibrated_on_a_measured_multi_gpu_record():
  c = tiny(strategy="ddp")
  everyone = range(2)
  ops = {2: [op("all-reduce", 900_000_000, everyone)]}
  comm = 2 * (1 / 2 * 9e8 / 450e9 + 3e-6)
  one = record(c, step_s=0.050)
  two = record(c, step_s=0.050 + 0.4 * comm, num_devices=2, run_id="two")
  plan_fn = fake_plans(ops, {1: 1, 2: 1})
  cal = predict.calibrate_on(two, [one, two], 8, [], plan_fn)
  assert cal.exposed_fraction == pytest.approx(0.4)
  # A profile's exposed collective time wins over the step time, scaled to the timed step.
  profiled = dict(two, breakdown={"step_ms": 60.0, "collectives_busy_ms": 3.0,
                                  "collectives_overlapped_ms": 2.4})
  want = 0.6 / 60.0 * two["step_time_s"]["median"] / comm
  assert predict.calibrate_on(profiled, [one], 8, [], plan_fn).exposed_fraction == \
      pytest.approx(want)
  [p], notes = predict.predict(c, [2], records=[one, two], plan_fn=plan_fn)
  assert p["exposed_fraction"] == pytest.approx(0.4) and p["calibration_record"] == "two"
  [p], notes = predict.predict(c, [2], records=[one], plan_fn=plan_fn)
  assert p["exposed_fraction"] == 1.0 and any("conservative bound" in n for n in notes)


def test_checking_predicts_each_multi_gpu_record_from_another_models_calibration():
  everyone = range(2)
  records = []
  for model, layers in (("tiny", 2), ("custom", 3)):
    c = tiny(strategy="ddp", num_layers=layers)
    comm = 2 * (1 / 2 * 4e8 * layers / 450e9 + 3e-6)
    records.append(record(c, step_s=0.03 * layers, run_id=f"{model}-1"))
    # Both measured at an exposed fraction of 0.5 (the custom one 5% slower besides).
    slower = 1.05 if model == "custom" else 1.0
    records.append(record(c, step_s=(0.03 * layers + 0.5 * comm) * slower, num_devices=2,
                          run_id=f"{model}-2"))

  def plans(c, counts, gpus_per_node):
    return {n: {"num_devices": n, "expected_memory_bytes": None, "state_bytes": 0,
                "ops": [op("all-reduce", int(4e8) * c.num_layers, everyone)] if n > 1 else []}
            for n in set(counts) | {1}}
  rows = {r["run_id"]: r for r in predict.check(records, plan_fn=plans)}
  assert rows["tiny-2"]["calibrated_on"] == "custom-2"
  # custom-2 from tiny-2's fraction (0.5): its measured step is 5% longer than predicted.
  assert rows["custom-2"]["error_percent"] == pytest.approx(5.0)
  assert rows["tiny-2"]["error_percent"] < 0  # from the slower one's larger fraction
  lonely = predict.check([records[0], records[1]], plan_fn=plans)
  assert "another model" in lonely[0]["error"]


def test_the_measured_exposed_time_is_the_slowest_gpu_s_where_the_profile_has_every_gpu():
  # GPU 0 (the first, whose figure the record's own field gives) computed 18 ms less and waited
  # that long at the all-reduces: its 28 ms exposed is not all communication. Records of one
  # GPU's timeline keep their figure.
  c = tiny(strategy="ddp")
  two = record(c, step_s=0.710, num_devices=2, run_id="two", breakdown={
      "step_ms": 710.0, "collectives_exposed_ms": 28.0,
      "per_device": [{"device": "/device:GPU:0", "compute_ms": 680.0, "collectives_busy_ms": 56.0,
                      "collectives_exposed_ms": 28.0},
                     {"device": "/device:GPU:1", "compute_ms": 698.0, "collectives_busy_ms": 50.0,
                      "collectives_exposed_ms": 10.0}], "compute_skew_ms": 18.0})
  assert predict.measured_exposed_s(two) == pytest.approx(0.010)
  del two["breakdown"]["per_device"]
  assert predict.measured_exposed_s(two) == pytest.approx(0.028)


def test_the_measured_exposed_time_leaves_out_the_slowest_gpu_s_own_wait_for_the_other():
  # Slower over the step, GPU 1 still reached 3 ms of collectives before GPU 0 did (the skew
  # changes sign inside a step): that wait is no communication, and is the part repeats of
  # one point disagree on. The profile's scale (timed 0.72 s over profiled 0.71 s) applies.
  c = tiny(strategy="ddp")
  two = record(c, step_s=0.720, num_devices=2, run_id="two", breakdown={
      "step_ms": 710.0, "collectives_exposed_ms": 28.0,
      "per_device": [{"device": "/device:GPU:0", "compute_ms": 680.0, "collectives_busy_ms": 56.0,
                      "collectives_exposed_ms": 28.0, "collectives_waiting_ms": 20.0},
                     {"device": "/device:GPU:1", "compute_ms": 698.0, "collectives_busy_ms": 50.0,
                      "collectives_exposed_ms": 10.0, "collectives_waiting_ms": 3.0}],
      "compute_skew_ms": 18.0})
  assert predict.measured_exposed_s(two) == pytest.approx(0.007 * 720 / 710)
  assert predict.measured_waiting_s(two) == pytest.approx(0.003 * 720 / 710)
  del two["breakdown"]["per_device"]
  assert predict.measured_waiting_s(two) is None


# A profiled two-GPU record's breakdown, enough for a calibration to use its exposed time.
PROFILED = {"breakdown": {"step_ms": 50.0, "collectives_busy_ms": 2.0,
                          "collectives_overlapped_ms": 1.0}}


def _calibration_pair(cfg, name, commit, when, **extra):
  """A one-GPU record and a profiled two-GPU record of `cfg` at `commit`, run at `when`."""
  return [record(cfg, step_s=0.05, run_id=f"{name}-one", git_commit=commit, **extra),
          record(cfg, step_s=0.052, num_devices=2, run_id=f"{name}-two", git_commit=commit,
                 timestamp=f"{when}T00:00:00", **PROFILED, **extra)]


def test_calibration_prefers_a_run_whose_one_gpu_record_ran_at_its_own_commit():
  # Two profiled two-GPU runs of another model could calibrate tiny's: the newer has no one-GPU
  # record of its own commit (its step fraction would rest on another host's one-GPU step), so
  # the older one, whose campaign ran both, is chosen.
  c = tiny(strategy="ddp")
  other = tiny(strategy="ddp", num_layers=3)
  records = [
      record(other, step_s=0.050, run_id="old-one", git_commit="aaa"),
      record(other, step_s=0.052, num_devices=2, run_id="old-two", git_commit="aaa",
             timestamp="2026-01-01T00:00:00", **PROFILED),
      record(other, step_s=0.049, num_devices=2, run_id="new-two", git_commit="bbb",
             timestamp="2026-02-01T00:00:00", **PROFILED)]
  assert predict.pick_calibration(c, records)["run_id"] == "old-two"
  records.append(record(other, step_s=0.048, run_id="new-one", git_commit="bbb"))
  assert predict.pick_calibration(c, records)["run_id"] == "new-two"  # then the newest


def test_calibration_prefers_the_model_nearest_in_size_before_the_newest():
  # Two other models, both profiled with a one-GPU record of their own commit: the one nearer
  # tiny's parameter count calibrates it, though the other ran later.
  from slm_jax.model import count_params
  c = tiny(strategy="ddp")
  near, far = tiny(strategy="ddp", num_layers=3), tiny(strategy="ddp", num_layers=12)
  n = count_params(config_lib.model_config(c))
  records = (_calibration_pair(near, "near", "near", "2026-01-01", params=2 * n)
             + _calibration_pair(far, "far", "far", "2026-02-01", params=20 * n))
  assert predict.pick_calibration(c, records)["run_id"] == "near-two"


def test_calibration_prefers_the_nearest_per_device_batch():
  # No run of tiny's batch (16) exists: of the other model's runs at 32 and 128, the one at 32
  # has the compute nearer tiny's to hide collectives behind, though the one at 128 is newer.
  c = tiny(strategy="ddp", per_device_batch_size=16)
  records = []
  for batch, when in ((32, "2026-01-01"), (128, "2026-02-01")):
    other = tiny(strategy="ddp", num_layers=3, per_device_batch_size=batch)
    records += _calibration_pair(other, f"b{batch}", "aaa", when)
  assert predict.pick_calibration(c, records)["run_id"] == "b32-two"
  c.per_device_batch_size = 96
  assert predict.pick_calibration(c, records)["run_id"] == "b128-two"


def test_a_check_calibrates_on_the_checked_run_s_own_commit_before_the_newest():
  # An A/B ran the old code's arm (commit "old", from a checkout) after the new code's: by
  # time alone the old arm would calibrate a run of the new code.
  c = tiny(strategy="ddp")
  other = tiny(strategy="ddp", num_layers=3)
  records = [
      record(other, step_s=0.050, run_id="one-new", git_commit="new"),
      record(other, step_s=0.050, run_id="one-old", git_commit="old"),
      record(other, step_s=0.052, num_devices=2, run_id="two-new", git_commit="new",
             timestamp="2026-01-01T00:00:00", **PROFILED),
      record(other, step_s=0.060, num_devices=2, run_id="two-old", git_commit="old",
             timestamp="2026-01-01T00:05:00", **PROFILED)]
  assert predict.pick_calibration(c, records)["run_id"] == "two-old"  # the newest
  assert predict.pick_calibration(c, records, commit="new")["run_id"] == "two-new"
  assert predict.pick_calibration(c, records, commit="old")["run_id"] == "two-old"
  checked = records + [record(c, step_s=0.05, run_id="tiny-one", git_commit="new"),
                       record(c, step_s=0.052, num_devices=2, run_id="tiny-two",
                              git_commit="new", **PROFILED)]
  plan_fn = fake_plans({2: [op("all-reduce", 4e6, range(2))]}, {1: 1, 2: 1})
  [row] = [r for r in predict.check(checked, plan_fn=plan_fn) if r["run_id"] == "tiny-two"]
  assert row["calibrated_on"] == "two-new"


@pytest.mark.parametrize("kwargs,message", [
    ({"gpu": "V100"}, "unknown GPU type 'V100'"),
    ({"interconnects": ["nvlink9"]}, "unknown interconnect 'nvlink9'"),
    ({"counts": [12]}, "does not fill nodes"),
    ({"counts": [0]}, "at least 1"),
    ({"gpu": "A100-40GB"}, "no one-GPU record of tiny"),
])
def test_bad_input_is_a_user_error_naming_what_is_missing(kwargs, message):
  c = tiny(strategy="ddp")
  counts = kwargs.pop("counts", [2])
  with pytest.raises(UserError, match=message):
    predict.predict(c, counts, records=[record(c, step_s=0.1)], plan_fn=fake_plans({}, {}),
                    **kwargs)


def test_a_missing_record_is_one_error_line_with_the_command_that_makes_it(tmp_path):
  path = tmp_path / "one.jsonl"
  path.write_text(json.dumps(record(tiny(), step_s=0.1)) + "\n")
  done = subprocess.run(
      [sys.executable, "-m", "slm_jax.predict", "--config=configs/1b_h200.py",
       "--config.strategy=fsdp_full", "--num_devices=1,2", f"--records={path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2
  [line] = done.stderr.strip().splitlines()
  assert line.startswith("error: no one-GPU record of 1b") and "python -m slm_jax.main" in line


def test_predictions_are_drawn_beside_the_papers_points(tmp_path):
  from slm_jax import report
  rows = [{"prediction": True, "model": "1b", "gpu": "A100-80GB", "strategy": s,
           "num_devices": n, "num_nodes": max(1, n // 8), "exposed_fraction": e, "fits": True,
           "token_per_dollar_paper": 10_000 * (1 - 0.1 * e)}
          for s in ("ddp", "fsdp_full") for n in (1, 8, 16) for e in (0.0, 1.0)]
  path = predict.plot_predictions(rows, report.read_paper(), tmp_path)
  assert path.exists() and path.stat().st_size > 10_000
  assert predict.plot_predictions([dict(r, fits=False) for r in rows], [], tmp_path) is None


def test_more_devices_than_this_process_has_compile_in_a_child_process():
  c = tiny(strategy="ddp")
  got = predict.plans(c, [2 * jax.device_count()], 8)
  n = 2 * jax.device_count()
  assert {o["group_size"] for o in got[n]["ops"]} == {n} and got[1]["ops"] == []
