"""slm_jax.overlap: a compiled step's schedule replayed, collectives timed by the link's measured
costs, a collective that comes due during a GEMM held to the GEMM's last wave, a reduce-scatter
due as a wait ends held to the GEMM's end, and the tail scored on profiled runs by
slm_jax.tools.overlap_fit."""

import gzip
import json
import subprocess
import sys

import pytest

from slm_jax import hardware, overlap, predict, report
from slm_jax.tools import overlap_fit
from test_predict import ROOT, fake_plans, op, record, tiny

GPU = hardware.GPUS["h200"]
# A link whose every collective takes exactly 1 ms: the replay's arithmetic in round numbers.
MS = hardware.CollectiveCosts("test", 2, (1, 10**12), (1e-3, 1e-3), (2e-3, 2e-3))
LINK = hardware.Interconnect("test", "test link", 100.0, 0.0, MS)
# A 1024^3 GEMM: 2 x 1024^3 FLOPs. Its roofline time is FLOPs over the GPU's peak.
GEMM_S = 2 * 1024**3 / (GPU.peak_bf16_tflops * 1e12)


def _module(body: str) -> str:
  """An entry as XLA prints a scheduled GPU step: a GEMM is a cuBLAS call, elementwise work a
  fusion over f32[n] (its bytes: n x 4 read, n x 4 written)."""
  return f"""HloModule jit_step, is_scheduled=true

%fused_add (p0: f32[262144]) -> f32[262144] {{
  %p0 = f32[262144]{{0}} parameter(0)
  ROOT %add.1 = f32[262144]{{0}} add(%p0, %p0)
}}

ENTRY %main (a: bf16[1024,1024], b: bf16[1024,1024], g: bf16[1000], e: f32[262144]) -> bf16[1000] {{
  %a = bf16[1024,1024]{{1,0}} parameter(0)
  %b = bf16[1024,1024]{{1,0}} parameter(1)
  %g = bf16[1000]{{0}} parameter(2)
  %e = f32[262144]{{0}} parameter(3)
{body}
}}
"""


def _gemm(i):
  return (f'  %gemm.{i} = (bf16[1024,1024]{{1,0}}, s8[1024]{{0}}) custom-call(%a, %b), '
          'custom_call_target="__cublas$lt$matmul", backend_config={"gemm_backend_config":'
          '{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],'
          '"rhs_contracting_dimensions":["0"]}}}')


def _elementwise(i):
  return f"  %fusion.{i} = f32[262144]{{0}} fusion(%e), kind=kLoop, calls=%fused_add"


def _start(i, kind="all-reduce"):
  return (f"  %{kind}-start.{i} = ((bf16[1000]{{0}}), bf16[1000]{{0}}) {kind}-start(%g), "
          "replica_groups={{0,1}}, to_apply=%sum")


def _done(i, kind="all-reduce"):
  return f"  %{kind}-done.{i} = bf16[1000]{{0}} {kind}-done(%{kind}-start.{i})"


def _h200(**overrides):
  c = tiny(**overrides)
  c.gpu = "h200"
  return c


def _replay(lines, compute_s, tail=0.25):
  return overlap.replay(_module("\n".join(lines)), compute_s, GPU, LINK, 2, tail)


def test_measured_costs_interpolate_in_bytes_and_halve_for_one_of_the_pair():
  costs = hardware.CollectiveCosts("t", 2, (100, 200, 400), (1.0, 2.0, 3.0), (4.0, 6.0, 8.0))
  assert costs.seconds("all-reduce", 150, 2) == pytest.approx(1.5)
  assert costs.seconds("all-reduce", 50, 2) == 1.0  # no cheaper than the smallest measured
  assert costs.seconds("all-reduce", 600, 2) == pytest.approx(4.0)  # the last slope on
  assert costs.seconds("reduce-scatter", 200, 2) == pytest.approx(3.0)
  assert costs.seconds("all-gather", 300, 2) == pytest.approx(3.5)
  # Four devices send 2 x 3/4 of the tensor where two sent 2 x 1/2 of it: 1.5x the bytes.
  assert costs.seconds("all-reduce", 200, 4) == pytest.approx(costs.seconds("all-reduce", 300, 2))
  # NVLink 4's table is the measured one, and a bucket gets far less than the datasheet's rate.
  nvlink = hardware.interconnect("nvlink4")
  assert nvlink.costs is not None
  bucket = 25_000_000
  assert overlap.collective_seconds("all-reduce", bucket, 2, nvlink) > 2 * bucket / 450e9


def test_a_collective_waited_for_at_once_is_exposed_whole():
  r = _replay([_start(1), _done(1), _gemm(1)], compute_s=GEMM_S)
  assert r.exposed_s == pytest.approx(1e-3) and r.collectives == 1
  assert r.collectives_s == pytest.approx(1e-3)
  assert r.step_s == pytest.approx(GEMM_S + 1e-3)


def test_a_collective_launched_before_a_gemm_runs_beside_it_in_full():
  # The compute is scaled to 2 ms: the GEMM alone takes it all, and the 1 ms all-reduce that
  # was on the GPU when it started is over before its done.
  r = _replay([_start(1), _gemm(1), _done(1)], compute_s=2e-3, tail=0.0)
  assert r.exposed_s == pytest.approx(0.0, abs=1e-12)


def test_a_collective_that_comes_due_during_a_gemm_waits_for_its_last_wave():
  # The first all-reduce runs beside the 2 ms GEMM from its start and ends at 1 ms; the second
  # can launch only when the GEMM's last `tail` of its time begins.
  lines = [_start(1), _start(2), _gemm(1), _done(1), _done(2)]
  r = _replay(lines, compute_s=2e-3, tail=0.25)  # launched at 1.5 ms, done at 2.5 ms
  assert r.exposed_s == pytest.approx(0.5e-3)
  r = _replay(lines, compute_s=2e-3, tail=0.0)  # at the GEMM's end
  assert r.exposed_s == pytest.approx(1e-3)
  r = _replay(lines, compute_s=2e-3, tail=0.5)  # at once
  assert r.exposed_s == pytest.approx(0.0, abs=1e-12)
  # Between memory-bound kernels it launches as soon as the first ends, whatever the tail.
  lines = [_start(1), _start(2), _elementwise(1), _done(1), _done(2)]
  r = _replay(lines, compute_s=1.5e-3, tail=0.0)
  assert r.exposed_s == pytest.approx(0.5e-3)


def test_a_reduce_scatter_due_as_a_wait_ends_loses_the_sms_to_the_gemm_after_it():
  # The compute stream waits 1 ms for the first collective; the second becomes due as that
  # ends, at the moment the 2 ms GEMM is dispatched. A reduce-scatter launches only at the
  # GEMM's end and is waited for whole; an all-reduce runs beside the GEMM.
  for kind, exposed_ms in (("reduce-scatter", 2.0), ("all-reduce", 1.0)):
    lines = [_start(1, kind), _start(2, kind), _done(1, kind), _gemm(1), _done(2, kind)]
    r = _replay(lines, compute_s=2e-3, tail=0.25)
    assert r.exposed_s == pytest.approx(exposed_ms * 1e-3), kind
  # With memory-bound work between the wait and the GEMM, the reduce-scatter is on the GPU
  # before the GEMM starts and hides behind it.
  lines = [_start(1, "reduce-scatter"), _start(2, "reduce-scatter"), _done(1, "reduce-scatter"),
           _elementwise(1), _gemm(1), _done(2, "reduce-scatter")]
  assert _replay(lines, compute_s=2e-3).exposed_s == pytest.approx(1e-3)
  # Without a wait there is no race: started before the GEMM, it runs beside it.
  lines = [_start(1, "reduce-scatter"), _gemm(1), _done(1, "reduce-scatter")]
  assert _replay(lines, compute_s=2e-3).exposed_s == pytest.approx(0.0, abs=1e-12)


def test_collectives_run_one_after_another_in_start_order():
  # Two 1 ms collectives started together behind 1.5 ms of elementwise work: the first ends at
  # 1 ms, the second at 2 ms, so its done waits 0.5 ms, and waiting for the second first waits
  # for both.
  lines = [_start(1), _start(2), _elementwise(1), _done(2), _done(1)]
  r = _replay(lines, compute_s=1.5e-3)
  assert r.exposed_s == pytest.approx(0.5e-3)
  # A collective no done waits for before the entry ends still holds the step.
  r = _replay([_start(1), _elementwise(1)], compute_s=0.25e-3)
  assert r.exposed_s == pytest.approx(0.75e-3)


def _write(path, text):
  with gzip.open(path, "wt") as f:
    f.write(text)


def test_a_check_replays_the_record_s_own_kept_step_and_a_prediction_finds_one(tmp_path):
  ops = {2: [op("all-reduce", 4e8, range(2))]}
  plan_fn = fake_plans(ops, {1: 1, 2: 1})
  rows = []
  for model, layers in (("tiny", 2), ("custom", 3)):
    c = _h200(strategy="ddp", num_layers=layers)
    step = 0.02 * layers + 0.002
    rows += [record(c, step_s=0.02 * layers, run_id=f"{model}-1", gpu="NVIDIA H200"),
             record(c, step_s=step, num_devices=2, run_id=f"{model}-2",
                    gpu="NVIDIA H200",
                    breakdown={"step_ms": step * 1e3, "collectives_exposed_ms": 1.0})]
  # The kept step of tiny's two-GPU run waits for its collective at once.
  _write(tmp_path / f"tiny-2{predict.SCHEDULE_SUFFIX}", _module("\n".join(
      [_start(1), _done(1), _gemm(1)])))
  checked = {r["run_id"]: r for r in predict.check(rows, plan_fn=plan_fn,
                                                   schedules=[str(tmp_path)])}
  nvlink = hardware.interconnect("nvlink4")
  alone = overlap.collective_seconds("all-reduce", 2000, 2, nvlink)
  tiny_row = checked["tiny-2"]
  assert tiny_row["exposed_model"]["form"] == "replay"
  assert tiny_row["predicted_exposed_comm_s"] == pytest.approx(alone)
  assert tiny_row["exposed_error_ms"] == pytest.approx(alone * 1e3 - 1.0)
  # The other model's run kept no step: its exposed time comes from the calibration.
  assert checked["custom-2"]["exposed_model"]["form"] != "replay"
  # Predicting tiny's point finds its run's step; another scheme's point does not.
  c = _h200(strategy="ddp", num_layers=2)
  [p], notes = predict.predict(c, [2], records=rows, plan_fn=plan_fn, schedules=[str(tmp_path)])
  assert p["exposed_model"]["schedule_record"] == "tiny-2"
  assert any("tiny-2" in n for n in notes)
  c.strategy = "fsdp_full"
  [p], _ = predict.predict(c, [2], records=rows, plan_fn=plan_fn, schedules=[str(tmp_path)])
  assert p["exposed_model"]["form"] != "replay"


def test_the_fit_recovers_the_tail_its_records_were_made_with(tmp_path, capsys):
  # Three runs whose exposed time is what the replay gives at a tail of 0.3: the second
  # all-reduce (23.5 us on NVLink 4) comes due during the GEMM of 40-60 us and waits for the
  # last 0.3 of it, so each GEMM length leaves a different part of it exposed.
  lines = [_start(1), _start(2), _gemm(1), _done(1), _done(2)]
  text = _module("\n".join(lines))
  nvlink = hardware.interconnect("nvlink4")
  records = []
  for i, compute_ms in enumerate((0.04, 0.05, 0.06)):
    exposed = overlap.replay(text, compute_ms / 1e3, GPU, nvlink, 2, 0.3).exposed_s
    assert exposed > 0
    step_ms = compute_ms + exposed * 1e3
    c = _h200(strategy="ddp")
    records.append(record(c, step_s=step_ms / 1e3, num_devices=2, run_id=f"run{i}",
                          gpu="NVIDIA H200", campaign="fit",
                          breakdown={"step_ms": step_ms, "per_device": [
                              {"device": "0", "compute_ms": compute_ms,
                               "collectives_exposed_ms": exposed * 1e3}]}))
    _write(tmp_path / f"run{i}{predict.SCHEDULE_SUFFIX}", text)
  path = tmp_path / "records.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  assert overlap_fit.run([str(path)], [str(tmp_path)], ["fit"], step=0.1,
                         min_exposed_ms=0.0) == 0
  assert "best tail on the 3 fit records: 0.3" in capsys.readouterr().out
  assert overlap_fit.run([str(path)], [str(tmp_path / "none")]) == 2
  assert "no profiled multi-GPU record" in capsys.readouterr().err


def test_the_report_says_a_checked_run_s_exposed_time_was_replayed():
  row = {"model": "1b", "strategy": "ddp", "num_devices": 2, "per_device_batch": 64,
         "measured_tokens_per_s": 1.0, "predicted_tokens_per_s": 1.0, "error_percent": 0.0,
         "measured_exposed_comm_s": 0.005, "predicted_exposed_comm_s": 0.006,
         "exposed_error_percent": 20.0, "calibrated_model": "500m", "calibrated_strategy": "ddp",
         "exposed_model": {"form": "replay", "gemm_tail": 0.12}}
  [cells] = report.check_table([row]).rows
  assert "replayed from its compiled step (GEMM tail 0.12)" in cells[10]
  row["exposed_model"]["gemm_first"] = ["reduce-scatter"]
  [cells] = report.check_table([row]).rows
  assert ("(GEMM tail 0.12, reduce-scatter behind the GEMM after a wait)" in cells[10])


def test_a_schedules_folder_that_is_not_there_and_a_broken_step_are_one_error_line(tmp_path):
  path = tmp_path / "one.jsonl"
  path.write_text(json.dumps(record(tiny(), step_s=0.1)) + "\n")
  done = subprocess.run(
      [sys.executable, "-m", "slm_jax.predict", "--check", f"--records={path}",
       f"--schedules={tmp_path / 'nope'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2
  [line] = done.stderr.strip().splitlines()
  assert line.startswith("error: --schedules: no folder") and "nope" in line
  # A kept step that is not gzip text says which file.
  (tmp_path / f"run{predict.SCHEDULE_SUFFIX}").write_text("not gzip")
  with pytest.raises(predict.UserError, match="cannot read the compiled step"):
    predict.record_schedule({"run_id": "run", "num_devices": 2}, [str(tmp_path)])


def _link_rows(uuids, all_reduce_us, pair_us, campaign="c", dtype="bfloat16"):
  """benchmarks/link_bandwidth.py's lines for one host: two rounds (the second 10% slower) at
  2 KB (a bf16[1000] operand, the test steps' all-reduce) and 1 MB."""
  gpus = [{"index": str(i), "uuid": u} for i, u in enumerate(uuids)]
  return [{"kind": kind, "dtype": dtype, "bytes": size, "round": r, "median_us": us * (1 + r / 10),
           "num_devices": len(uuids), "gpus": gpus, "campaign": campaign}
          for r in (0, 1) for kind, times in (("all-reduce", all_reduce_us),
                                              ("reduce-scatter+all-gather", pair_us))
          for size, us in zip((2000, 10**6), times)]


def test_the_built_in_nvlink_costs_are_their_campaign_s_medians():
  path = ROOT / "benchmarks" / "h200x2_link_bandwidth.jsonl"
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  rows = [r for r in rows if r["campaign"] == "h200x2-schedule-replay-2026-11-30"]
  [costs] = hardware.link_costs(rows, "x").values()
  table = hardware.interconnect("nvlink4").costs
  assert costs.sizes == table.sizes and costs.group == table.group
  assert costs.all_reduce_s == pytest.approx(table.all_reduce_s, abs=0.06e-6)
  assert costs.reduce_scatter_all_gather_s == pytest.approx(table.reduce_scatter_all_gather_s,
                                                            abs=0.06e-6)


def test_link_costs_are_each_host_s_medians_of_its_rounds():
  rows = (_link_rows(["GPU-a", "GPU-b"], (10.0, 100.0), (20.0, 200.0))
          + _link_rows(["GPU-c", "GPU-d"], (30.0, 300.0), (40.0, 400.0))
          + _link_rows(["GPU-c", "GPU-d"], (99.0, 999.0), (99.0, 999.0), dtype="float32"))
  hosts = hardware.link_costs(rows, "file")
  assert set(hosts) == {("GPU-a", "GPU-b"), ("GPU-c", "GPU-d")}
  ab = hosts["GPU-a", "GPU-b"]
  # The median of rounds at 1x and 1.1x; bf16 only.
  assert ab.sizes == (2000, 10**6) and ab.group == 2
  assert ab.all_reduce_s == pytest.approx((10.5e-6, 105e-6))
  assert hosts["GPU-c", "GPU-d"].reduce_scatter_all_gather_s == pytest.approx((42e-6, 420e-6))
  assert "file" in ab.source and "GPU-a" in ab.source


def test_a_check_replays_with_the_link_of_the_host_the_run_ran_on(tmp_path):
  ops = {2: [op("all-reduce", 4e8, range(2))]}
  plan_fn = fake_plans(ops, {1: 1, 2: 1})
  rows = []
  for model, layers, host in (("tiny", 2, ["GPU-a", "GPU-b"]), ("custom", 3, ["GPU-e", "GPU-f"])):
    c = _h200(strategy="ddp", num_layers=layers)
    step = 0.02 * layers + 0.002
    rows += [record(c, step_s=0.02 * layers, run_id=f"{model}-1", gpu="NVIDIA H200"),
             record(c, step_s=step, num_devices=2, run_id=f"{model}-2", gpu="NVIDIA H200",
                    gpus=[{"index": str(i), "uuid": u} for i, u in enumerate(host)],
                    breakdown={"step_ms": step * 1e3, "collectives_exposed_ms": 1.0})]
    # Each run's step waits for its 2 KB all-reduce at once: the exposed time is its cost.
    _write(tmp_path / f"{model}-2{predict.SCHEDULE_SUFFIX}", _module("\n".join(
        [_start(1), _done(1), _gemm(1)])))
  links = tmp_path / "link.jsonl"
  links.write_text("".join(json.dumps(r) + "\n" for r in
                           _link_rows(["GPU-a", "GPU-b"], (70.0, 700.0), (80.0, 800.0))))
  hosts = predict.read_link_costs([str(links)])
  checked = {r["run_id"]: r for r in predict.check(rows, plan_fn=plan_fn,
                                                   schedules=[str(tmp_path)], link_costs=hosts)}
  # tiny ran on the measured host: its link's 2 KB all-reduce (73.5 us, the median of rounds
  # at 70 and 77). custom's host was not measured: the built-in table's.
  assert checked["tiny-2"]["predicted_exposed_comm_s"] == pytest.approx(73.5e-6)
  assert checked["tiny-2"]["exposed_model"]["link_costs"] == hosts["GPU-a", "GPU-b"].source
  builtin = overlap.collective_seconds("all-reduce", 2000, 2, hardware.interconnect("nvlink4"))
  assert checked["custom-2"]["predicted_exposed_comm_s"] == pytest.approx(builtin)
  # A prediction with one host's timings replays with them.
  c = _h200(strategy="ddp", num_layers=2)
  [p], notes = predict.predict(c, [2], records=rows, plan_fn=plan_fn, schedules=[str(tmp_path)],
                               link_costs=hosts)
  assert p["exposed_comm_s"] == pytest.approx(73.5e-6)
  assert any(str(links) in n for n in notes)


def test_link_cost_files_that_cannot_be_used_are_one_error_line(tmp_path):
  path = tmp_path / "one.jsonl"
  path.write_text(json.dumps(record(tiny(), step_s=0.1)) + "\n")
  for bad, says in ((tmp_path / "none.jsonl", "no file"), (path, "no bf16 timings")):
    done = subprocess.run(
        [sys.executable, "-m", "slm_jax.predict", "--check", f"--records={path}",
         f"--link_costs={bad}"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: --link_costs"), done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
  two = tmp_path / "two.jsonl"
  two.write_text("".join(json.dumps(r) + "\n" for r in
                         _link_rows(["GPU-a", "GPU-b"], (1.0, 2.0), (2.0, 4.0))
                         + _link_rows(["GPU-c", "GPU-d"], (1.0, 2.0), (2.0, 4.0))))
  with pytest.raises(predict.UserError, match="2 hosts"):
    predict.one_link(predict.read_link_costs([str(two)]))


def test_op_times_by_measured_category_rescale_each_kind_to_its_profile():
  prog = overlap.program(_module("\n".join([_gemm(1), _elementwise(1), _start(1), _gemm(2),
                                            _done(1)])), GPU, LINK, 2)
  gemm_s, fusion_s = (next(e[1] for e in prog.events if e[0] == "op" and e[3] == c)
                      for c in ("matmul", "norm/elementwise"))
  # The profile measured the GEMMs at twice their roofline time and has no elementwise time:
  # the fusion takes the GEMMs' scale too.
  scaled = overlap_fit.measured_categories(prog, {"matmul": 2 * 2 * gemm_s * 1e3})
  assert [e[1] for e in scaled.events if e[0] == "op"] == pytest.approx(
      [2 * gemm_s, 2 * fusion_s, 2 * gemm_s])
  assert scaled.roofline_s == pytest.approx(2 * prog.roofline_s)
  # Measured elementwise time sets the fusion's apart from the GEMMs'.
  scaled = overlap_fit.measured_categories(
      prog, {"matmul": 2 * gemm_s * 1e3, "norm/elementwise": 3 * fusion_s * 1e3})
  assert [e[1] for e in scaled.events if e[0] == "op"] == pytest.approx(
      [gemm_s, 3 * fusion_s, gemm_s])
  assert [e for e in scaled.events if e[0] != "op"] == [e for e in prog.events if e[0] != "op"]
