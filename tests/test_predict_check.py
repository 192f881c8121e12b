"""slm_jax.predict --check: each measured run is predicted from the one-GPU record nearest its
code, the step's growth from communication is calibrated apart from the exposed collectives,
and the rows name what they came from."""

import json
import subprocess

import pytest

from slm_jax import hardware, predict, report
from test_predict import fake_plans, op, record, tiny


def _git(root, *args) -> str:
  return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                        text=True).stdout.strip()


@pytest.fixture
def history(tmp_path, monkeypatch):
  """A checkout of four commits: c2 changes only benchmarks/, c3 and c4 change slm_jax/."""
  root = tmp_path / "repo"
  (root / "slm_jax").mkdir(parents=True)
  (root / "benchmarks").mkdir()
  _git(root, "init", "-q")
  _git(root, "config", "user.email", "t@example.com")
  _git(root, "config", "user.name", "t")
  commits = []
  for i, (path, text) in enumerate((("slm_jax/a.py", "1"), ("benchmarks/b.jsonl", "1"),
                                    ("slm_jax/a.py", "2"), ("slm_jax/a.py", "3"))):
    (root / path).write_text(text)
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", f"c{i + 1}")
    commits.append(_git(root, "rev-parse", "HEAD"))
  monkeypatch.setattr(predict, "ROOT", root)
  return commits


def _one(c, commit, step_s, run_id, timestamp="2026-11-29T12:00:00+00:00"):
  return record(c, step_s=step_s, run_id=run_id, git_commit=commit, timestamp=timestamp)


def test_the_one_gpu_record_is_the_one_nearest_the_checked_runs_code(history):
  c1, c2, c3, c4 = history
  c = tiny(strategy="ddp")
  ones = [_one(c, c1, 0.110, "at-c1"), _one(c, c3, 0.100, "at-c3"),
          _one(c, "f" * 40, 0.090, "unknown", "2026-11-29T13:00:00+00:00")]
  target = predict.hardware.GPUS["h100"]

  def used(near):
    compute = predict.compute_time(c, ones, target, near=near)
    return compute.record["run_id"], compute.relation

  # c2 changed only benchmarks/: the slower record at c1 ran the same code, and wins.
  run, rel = used({"git_commit": c2})
  assert run == "at-c1" and "the same slm_jax/ code" in rel and c1[:7] in rel
  # c4 is one commit from c3 and three from c1; neither ran its code.
  run, rel = used({"git_commit": c4})
  assert run == "at-c3" and "1 commit from" in rel and "slm_jax/ differs" in rel
  assert used({"git_commit": c3}) == ("at-c3", f"commit {c3[:7]}, the same commit")
  # A commit git does not know: the record nearest in time.
  run, rel = used({"git_commit": "e" * 40, "timestamp": "2026-11-29T13:05:00+00:00"})
  assert run == "unknown" and "nearest in time" in rel
  # Without a run to predict, the fastest, as before.
  assert predict.compute_time(c, ones, target).record["run_id"] == "unknown"


def test_the_step_grows_by_more_than_the_exposed_collectives_and_both_are_predicted():
  c = tiny(strategy="ddp")
  ops = {2: [op("all-reduce", 900_000_000, range(2))],
         4: [op("all-reduce", 900_000_000, range(4))]}
  comm2 = 2 * (1 / 2 * 9e8 / 450e9 + 3e-6)
  comm4 = 2 * (3 / 4 * 9e8 / 450e9 + 3 * 3e-6)
  one = record(c, step_s=0.050)
  # The step grows by 0.8 of the predicted communication; the profile sees 0.3 of it exposed
  # (compute beside the collectives ran slower by the rest).
  step = 0.050 + 0.8 * comm2
  two = record(c, step_s=step, num_devices=2, run_id="two",
               breakdown={"step_ms": step * 1e3, "collectives_exposed_ms": 0.3 * comm2 * 1e3})
  plan_fn = fake_plans(ops, {1: 1, 2: 1, 4: 1})
  cal = predict.calibrate_on(two, [one, two], 8, [], plan_fn)
  assert cal.exposed_fraction == pytest.approx(0.3) and cal.step == pytest.approx(0.8)
  [p], _ = predict.predict(c, [4], records=[one, two], plan_fn=plan_fn)
  # Four chips' slowest outlasts the two of the calibration (the H200's measured spread).
  slowest = predict.hardware.GPUS["h200"].chip_spread * (
      predict.expected_slowest(4) - predict.expected_slowest(2))
  assert p["step_s"] == pytest.approx(0.050 * (1 + slowest) + 0.8 * comm4)
  assert p["exposed_comm_s"] == pytest.approx(0.3 * comm4)
  assert p["comm_cost_s"] == pytest.approx(0.8 * comm4) and p["step_fraction"] == \
      pytest.approx(0.8)
  # Without a profile, the exposed part is the step's growth (at most all of it).
  unprofiled = dict(two, breakdown=None)
  cal = predict.calibrate_on(unprofiled, [one], 8, [], plan_fn)
  assert cal.exposed_fraction == pytest.approx(0.8) == pytest.approx(cal.step)
  # A bound given by hand (the paper's predictions) is both.
  assert predict.Calibration(0.25, "by hand").step == 0.25


def test_of_one_gpu_runs_side_by_side_the_slower_chips_is_the_compute(history):
  # Two chips of one host, one commit, seconds apart: the two-GPU step runs at the slower's
  # pace. A run of the same commit hours later is further in time and does not count.
  c1 = history[0]
  c = tiny(strategy="ddp")
  ones = [_one(c, c1, 0.100, "gpu0", "2026-11-30T06:49:34+00:00"),
          _one(c, c1, 0.102, "gpu1", "2026-11-30T06:49:35+00:00"),
          _one(c, c1, 0.120, "later", "2026-11-30T10:00:00+00:00")]
  near = {"git_commit": c1, "timestamp": "2026-11-30T06:51:25+00:00"}
  target = predict.hardware.GPUS["h100"]
  assert predict.compute_time(c, ones, target, near=near).record["run_id"] == "gpu1"


def test_a_check_row_says_which_records_it_came_from_and_the_exposed_error(history):
  c1, c2, c3, _ = history
  everyone = range(2)
  records = []
  for model, layers, commit in (("tiny", 2, c2), ("custom", 3, c3)):
    c = tiny(strategy="ddp", num_layers=layers)
    comm = 2 * (1 / 2 * 4e8 * layers / 450e9 + 3e-6)
    records += [_one(c, c1, 0.03 * layers, f"{model}-1@c1"),
                _one(c, c3, 0.02 * layers, f"{model}-1@c3")]
    step = (0.02 if commit == c3 else 0.03) * layers + 0.5 * comm
    records.append(record(c, step_s=step, num_devices=2, run_id=f"{model}-2", git_commit=commit,
                          breakdown={"step_ms": step * 1e3,
                                     "collectives_exposed_ms": 0.25 * comm * 1e3}))

  def plans(c, counts, gpus_per_node):
    return {n: {"num_devices": n, "expected_memory_bytes": None, "state_bytes": 0,
                "ops": [op("all-reduce", int(4e8) * c.num_layers, everyone)] if n > 1 else []}
            for n in set(counts) | {1}}
  rows = {r["run_id"]: r for r in predict.check(records, plan_fn=plans)}
  tiny_row, custom_row = rows["tiny-2"], rows["custom-2"]
  # tiny-2 ran at c2, the same slm_jax/ code as c1: its compute is c1's record, not c3's
  # faster one; custom-2 ran at c3.
  assert tiny_row["compute_record"] == "tiny-1@c1" and "same slm_jax/ code" in \
      tiny_row["compute_relation"]
  assert custom_row["compute_record"] == "custom-1@c3" and custom_row["calibrated_on"] == "tiny-2"
  assert custom_row["calibration_compute_record"] == "tiny-1@c1"
  # Both measured at step fraction 0.5 and exposed fraction 0.25, on their own code's records.
  for row in rows.values():
    assert row["error_percent"] == pytest.approx(0.0, abs=1e-9)
    assert row["exposed_error_percent"] == pytest.approx(0.0, abs=1e-9)
    assert row["measured_exposed_comm_s"] == pytest.approx(row["predicted_exposed_comm_s"])
  assert tiny_row["schedule"] == ""  # the preset's
  [stamped] = predict.stamped([tiny_row])
  assert stamped["git_commit"] and stamped["timestamp"] and stamped["versions"]["jax"]
  assert stamped["run_id"] == "tiny-2"


def test_a_profiled_record_of_the_same_strategy_is_calibrated_on_first():
  c = tiny(strategy="fsdp_full")
  other = dict(c.to_dict(), num_layers=3)
  base = {"status": "ok", "stack": "jax", "mode": "benchmark", "step_time_s": {"median": 1.0},
          "num_devices": 2, "model": "custom", "config": other, "tokens_per_s": 1.0}
  rows = [dict(base, run_id="ddp-profiled", strategy="ddp",
               breakdown={"step_ms": 1.0, "collectives_exposed_ms": 0.1}),
          dict(base, run_id="fsdp-more-devices", strategy="fsdp_full", num_devices=4),
          dict(base, run_id="fsdp-profiled", strategy="fsdp_full",
               breakdown={"step_ms": 1.0, "collectives_exposed_ms": 0.1})]
  assert predict.pick_calibration(c, rows)["run_id"] == "fsdp-profiled"


def test_without_a_run_of_its_own_schedule_a_variant_calibrates_on_the_preset_s_run():
  lhs = "xla_gpu_enable_latency_hiding_scheduler=true"
  c = tiny(strategy="fsdp_full", xla_options=lhs)
  base = {"status": "ok", "stack": "jax", "mode": "benchmark", "step_time_s": {"median": 1.0},
          "num_devices": 2, "model": "custom", "tokens_per_s": 1.0, "strategy": "fsdp_full",
          "breakdown": {"step_ms": 1.0, "collectives_exposed_ms": 0.1}}
  preset = dict(c.to_dict(), num_layers=3, xla_options="")
  rows = [dict(base, run_id="preset", config=preset, timestamp="2026-01-01"),
          dict(base, run_id="other-variant", timestamp="2026-01-02",
               config=dict(preset, nccl_options="NCCL_MAX_CTAS=4"))]
  assert predict.pick_calibration(c, rows)["run_id"] == "preset"
  rows.append(dict(base, run_id="same-variant", config=dict(preset, xla_options=lhs)))
  assert predict.pick_calibration(c, rows)["run_id"] == "same-variant"
  # a reduction schedule of its own is another schedule, as an option is
  per_layer = tiny(strategy="fsdp_full", reduce_schedule="per_layer")
  rows.append(dict(base, run_id="per-layer", timestamp="2026-01-03",
                   config=dict(preset, reduce_schedule="per_layer")))
  assert predict.schedule_of(rows[-1]) == {"reduce_schedule=per_layer"}
  assert not predict.schedule_of(rows[0])  # reduce_schedule=xla is the preset's
  assert predict.pick_calibration(per_layer, rows)["run_id"] == "per-layer"
  assert predict.pick_calibration(tiny(strategy="fsdp_full"), rows)["run_id"] == "preset"
  # and a check row says which schedule its run had
  row = {"model": "tiny", "strategy": "fsdp_full", "num_devices": 2, "per_device_batch": 8,
         "measured_tokens_per_s": 1.0, "schedule": "reduce_schedule=per_layer"}
  assert "fsdp_full (reduce_schedule=per_layer)" in report.check_table([row]).rows[0]
  # between preset runs, the one at the checked run's per-device batch
  c = tiny(strategy="fsdp_full", per_device_batch_size=16)
  rows = [dict(base, run_id="b16", config=preset, per_device_batch=16, timestamp="2026-01-01"),
          dict(base, run_id="b8", config=preset, per_device_batch=8, timestamp="2026-01-02")]
  assert predict.pick_calibration(c, rows)["run_id"] == "b16"


def test_of_two_preset_runs_the_one_compiled_with_the_config_s_own_options_calibrates():
  # The H100 preset gained an option between the two runs: both are the preset's schedule, but
  # only one ran the options the config names.
  old_preset, preset = ("xla_gpu_enable_triton_gemm=false",
                        hardware.GPUS["h100"].xla_options)
  assert old_preset != preset
  base = {"status": "ok", "stack": "jax", "mode": "benchmark", "step_time_s": {"median": 1.0},
          "num_devices": 2, "model": "custom", "tokens_per_s": 1.0, "strategy": "ddp",
          "device_kind": "NVIDIA H100 80GB HBM3",
          "breakdown": {"step_ms": 1.0, "collectives_exposed_ms": 0.1}}
  for options, newer in ((preset, "old"), (old_preset, "new")):
    c = tiny(strategy="ddp", xla_options=options)
    config = dict(c.to_dict(), num_layers=3)
    rows = [dict(base, run_id="old", timestamp="2026-01-01",
                 config=dict(config, xla_options=old_preset if newer == "new" else preset)),
            dict(base, run_id="new", timestamp="2026-01-02",
                 config=dict(config, xla_options=preset if newer == "new" else old_preset))]
    assert not any(predict.schedule_of(r) for r in rows)  # both the preset's schedule
    [own] = [r["run_id"] for r in rows if r["config"]["xla_options"] == options]
    assert predict.pick_calibration(c, rows)["run_id"] == own


def test_the_exposed_line_is_fitted_on_runs_of_the_config_s_own_options_where_two_are():
  old_preset, preset = "xla_gpu_enable_triton_gemm=false", hardware.GPUS["h100"].xla_options
  c = tiny(strategy="ddp", xla_options=preset)
  base = {"status": "ok", "stack": "jax", "mode": "benchmark", "step_time_s": {"median": 1.0},
          "num_devices": 2, "tokens_per_s": 1.0, "strategy": "ddp",
          "per_device_batch": c.per_device_batch_size, "device_kind": "NVIDIA H100 80GB HBM3",
          "breakdown": {"step_ms": 1.0, "collectives_exposed_ms": 0.1}}

  def run(run_id, model, options):
    return dict(base, run_id=run_id, model=model, config=dict(c.to_dict(), xla_options=options))

  rows = [run("a-old", "100m", old_preset), run("b-old", "1b", old_preset),
          run("c-new", "2b", preset)]
  gpu = hardware.GPUS["h100"]
  # one run of its own options is no line: every preset run is fitted on
  assert {r["run_id"] for r in predict.exposed_records(c, gpu, 2, rows)} == {
      "a-old", "b-old", "c-new"}
  rows.append(run("d-new", "500m", preset))
  assert {r["run_id"] for r in predict.exposed_records(c, gpu, 2, rows)} == {"c-new", "d-new"}


def _line_records(exposed_ms, a=0.0004, b=0.1, strategy="fsdp_full"):
  """One- and two-GPU records of three models whose profiles expose a + b x the predicted
  communication (plus `exposed_ms[model]` off the line), and a plan_fn that sends 4e8 bytes a
  layer."""
  everyone = range(2)
  records = []
  m = predict.config_lib.model_lib.PRESETS["100m"]
  preset = {"model": "100m", "num_layers": m.num_layers, "num_heads": m.num_heads,
            "num_kv_heads": m.num_heads, "head_dim": m.head_dim, "ffn_dim": m.ffn_dim,
            "vocab_size": m.vocab_size}
  for model, over in (("tiny", {}), ("custom", {"num_layers": 3}), ("100m", preset)):
    c = tiny(strategy=strategy, **over)
    assert predict.config_lib.model_name(c) == model
    size = 4e8 * c.num_layers
    comm = 1 / 2 * size / 450e9 + 3e-6
    step = 0.02 * c.num_layers + 1.5 * comm
    exposed = a + b * comm + exposed_ms.get(model, 0.0) * 1e-3
    records += [record(c, step_s=step - 1.5 * comm, run_id=f"{model}-1"),
                record(c, step_s=step, num_devices=2, run_id=f"{model}-2",
                       breakdown={"step_ms": step * 1e3, "collectives_exposed_ms": exposed * 1e3})]

  def plans(c, counts, gpus_per_node):
    return {n: {"num_devices": n, "expected_memory_bytes": None, "state_bytes": 0,
                "ops": ([op("reduce-scatter", int(4e8) * c.num_layers, everyone)]
                        if n > 1 else [])}
            for n in set(counts) | {1}}
  return records, plans


def test_the_affine_fit_recovers_a_known_fixed_part_and_slope():
  assert predict.fit_affine([(1.0, 3.5), (2.0, 4.0), (4.0, 5.0)]) == \
      pytest.approx((3.0, 0.5))
  # The slope is at least 0: exposed time falling with communication is a constant.
  assert predict.fit_affine([(1.0, 5.0), (2.0, 4.0)]) == pytest.approx((4.5, 0.0))
  assert predict.fit_affine([(1.0, 5.0), (1.0, 4.0)]) is None
  # The fixed part may be negative (short steps' collectives hidden whole), clipped at 0.
  assert predict.fit_affine([(1.0, 0.0), (3.0, 1.0)]) == pytest.approx((-0.5, 0.5))
  assert predict.ExposedModel("affine", -0.5, 0.5, []).seconds(0.5) == 0.0
  assert predict.ExposedModel("affine", -0.5, 0.5, []).seconds(2.0) == pytest.approx(0.5)
  # Records built on 0.4 ms + 0.1 x communication give it back; a fourth config is on it.
  records, plans = _line_records({})
  c = tiny(strategy="fsdp_full", num_layers=4)
  records.append(record(c, step_s=0.08, run_id="four-1"))
  [p], notes = predict.predict(c, [2], records=records, plan_fn=plans)
  model = p["exposed_model"]
  assert model["form"] == "affine" and model["a_s"] == pytest.approx(0.0004)
  assert model["b"] == pytest.approx(0.1)
  assert sorted(model["records"]) == ["100m-2", "custom-2", "tiny-2"]
  assert p["exposed_comm_s"] == pytest.approx(0.0004 + 0.1 * p["comm_s"])
  assert p["exposed_fraction"] == pytest.approx(p["exposed_comm_s"] / p["comm_s"])
  assert any("least squares" in n for n in notes)
  # Never more than all of the communication (a small model's is under the fixed part).
  assert predict.ExposedModel("affine", 0.004, 0.1, []).seconds(0.002) == 0.002
  assert predict.ExposedModel("affine", 0.004, 0.1, []).seconds(0.0) == 0.0


def test_the_line_is_fitted_on_runs_of_the_same_batch_and_schedule_options_only():
  records, plans = _line_records({})
  c = tiny(strategy="fsdp_full", num_layers=4)
  records.append(record(c, step_s=0.08, run_id="four-1"))
  # Far off the line: another per-device batch, and another schedule (XLA options).
  other_batch = tiny(strategy="fsdp_full", num_layers=2, per_device_batch_size=16)
  other_options = tiny(strategy="fsdp_full", num_layers=2,
                       xla_options="xla_gpu_enable_latency_hiding_scheduler=true")
  for i, oc in enumerate((other_batch, other_options)):
    records.append(record(oc, step_s=0.05, num_devices=2, run_id=f"off-{i}",
                          breakdown={"step_ms": 50.0, "collectives_exposed_ms": 40.0}))
  [p], _ = predict.predict(c, [2], records=records, plan_fn=plans)
  assert sorted(p["exposed_model"]["records"]) == ["100m-2", "custom-2", "tiny-2"]
  assert p["exposed_comm_s"] == pytest.approx(0.0004 + 0.1 * p["comm_s"])
  # The same options as the variant's select it (and its neighbour on the line, none here).
  assert [r["run_id"] for r in predict.exposed_records(
      other_options, predict.hardware.gpu("h100"), 2, records)] == ["off-1"]


def test_a_check_fits_the_line_on_the_other_models_only():
  # tiny-2's profile is 0.2 ms above the line the other two are on.
  records, plans = _line_records({"tiny": 0.2})
  rows = {r["run_id"]: r for r in predict.check(records, plan_fn=plans)}
  for run_id, row in rows.items():
    assert row["exposed_model"]["form"] == "affine"
    assert run_id not in row["exposed_model"]["records"]
    assert len(row["exposed_model"]["records"]) == 2
  # Fitted on custom and 100m alone, tiny-2 is predicted on their line: 0.2 ms short.
  tiny_row = rows["tiny-2"]
  assert tiny_row["measured_exposed_comm_s"] - tiny_row["predicted_exposed_comm_s"] == \
      pytest.approx(0.0002)
  assert tiny_row["exposed_model"]["a_s"] == pytest.approx(0.0004)
  # Had it calibrated on itself, the line would lean towards it and the others would be exact.
  assert rows["custom-2"]["exposed_error_percent"] != pytest.approx(0.0, abs=1e-6)


def test_with_one_record_left_the_exposed_part_is_that_records_fraction():
  records, plans = _line_records({})
  two_models = [r for r in records if not r["run_id"].startswith("100m")]
  rows = {r["run_id"]: r for r in predict.check(two_models, plan_fn=plans)}
  for row in rows.values():
    assert row["exposed_model"]["form"] == "fraction"
    assert row["exposed_model"]["a_s"] == 0.0
    assert row["exposed_model"]["records"] == [row["calibrated_on"]]
    assert row["exposed_fraction"] == pytest.approx(row["exposed_model"]["b"])
    assert "needs two" in row["calibration_note"]
  # Unprofiled records do not count towards the line.
  unprofiled = [dict(r, breakdown=None) if r["run_id"] == "100m-2" else r for r in records]
  c = tiny(strategy="fsdp_full")
  [p], _ = predict.predict(c, [2], records=[r for r in unprofiled if r["run_id"] != "tiny-2"],
                           plan_fn=plans)
  assert p["exposed_model"]["form"] == "fraction"
  [p], _ = predict.predict(c, [2], records=records[:1], plan_fn=plans)
  assert p["exposed_model"] == {"form": "fraction", "a_s": 0.0, "b": 1.0, "records": []}


def test_a_point_profiled_on_several_hosts_carries_the_median_of_its_exposed_fractions():
  c = tiny(strategy="ddp")
  ops = {2: [op("all-reduce", 900_000_000, range(2))],
         4: [op("all-reduce", 900_000_000, range(4))]}
  comm2 = 2 * (1 / 2 * 9e8 / 450e9 + 3e-6)
  plan_fn = fake_plans(ops, {1: 1, 2: 1, 4: 1})
  one = record(c, step_s=0.050)

  def two(run_id, fraction, when):
    step = 0.050 + comm2
    return record(c, step_s=step, num_devices=2, run_id=run_id, timestamp=when,
                  breakdown={"step_ms": step * 1e3,
                             "collectives_exposed_ms": fraction * comm2 * 1e3})

  # The newest run's profile happened to hide nearly everything; its two repeats did not.
  runs = [two("a", 0.30, "2026-01-01"), two("b", 0.40, "2026-01-02"),
          two("c", 0.01, "2026-01-03")]
  [p], notes = predict.predict(c, [4], records=[one, *runs], plan_fn=plan_fn)
  assert p["calibration_record"] == "c"
  assert p["exposed_model"]["form"] == "fraction"
  assert p["exposed_model"]["b"] == pytest.approx(0.30)
  assert sorted(p["exposed_model"]["records"]) == ["a", "b", "c"]
  assert any("median of its point's 3 profiled runs" in n for n in notes)
  # Another option set is another point.
  other = dict(runs[1], config=dict(runs[1]["config"], xla_options="xla_gpu_x=1"))
  [p], _ = predict.predict(c, [4], records=[one, runs[0], other, runs[2]], plan_fn=plan_fn)
  assert p["exposed_model"]["b"] == pytest.approx(0.155)  # the median of a and c


def test_the_exposed_model_is_in_the_prediction_and_check_json():
  records, plans = _line_records({})
  points, _ = predict.predict(tiny(strategy="fsdp_full"), [1, 2], records=records,
                              plan_fn=plans)
  for p in points:
    line = json.loads(json.dumps(p))
    assert set(line["exposed_model"]) == {"form", "a_s", "b", "records"}
    assert line["exposed_model"]["form"] == "affine"
  # One device sends nothing: nothing exposed.
  assert points[0]["exposed_comm_s"] == 0.0
  for row in predict.stamped(predict.check(records, plan_fn=plans)):
    assert set(json.loads(json.dumps(row))["exposed_model"]) == {"form", "a_s", "b", "records"}
