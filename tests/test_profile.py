import pytest

from slm_jax import config as config_lib
from slm_jax import profile, train


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
  c = config_lib.tiny_config()
  c.update(steps=5, repeats=2, warmup_steps=1, profile_steps=4)
  return train.run(c, profile_dir=tmp_path_factory.mktemp("profile"))


def test_breakdown_sums_to_the_measured_step_time(profiled):
  b = profiled["breakdown"]
  total = sum(b["ms"].values())
  assert total == pytest.approx(b["step_ms"], rel=1e-6)  # exclusive split of the window
  assert b["step_ms"] == pytest.approx(b["wall_ms_per_step"], rel=0.10)
  assert sum(b["percent"].values()) == pytest.approx(100.0)


def test_the_compiled_step_is_kept_beside_its_trace(profiled):
  import gzip
  from pathlib import Path
  program = Path(profiled["breakdown"]["trace"]).parent / profile.PROGRAM_FILE
  with gzip.open(program, "rt") as f:
    text = f.read()
  assert text.startswith("HloModule") and "ENTRY" in text


def test_breakdown_finds_the_model_s_parts(profiled):
  ms = profiled["breakdown"]["ms"]
  assert set(ms) == set(profile.CATEGORIES)
  for part in ("matmul", "attention", "norm/elementwise", "loss", "optimizer"):
    assert ms[part] > 0, part
  assert ms["collectives"] == 0  # one device
  top = profiled["breakdown"]["top_ops"]
  assert top and all(t["ms"] > 0 and t["gbytes_per_s"] > 0 for t in top)
  assert any(t["tflops"] for t in top if t["category"] in ("matmul", "attention"))


def test_hlo_categories_and_matmul_flops():
  hlo = """HloModule m

%fused_dot (param_0: bf16[16,64], param_1: bf16[64,32]) -> bf16[16,32] {
  %param_0 = bf16[16,64]{1,0} parameter(0)
  %param_1 = bf16[64,32]{1,0} parameter(1)
  ROOT %dot.1 = bf16[16,32]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (a: bf16[16,64], b: bf16[64,32]) -> bf16[16,32] {
  %a = bf16[16,64]{1,0} parameter(0)
  %b = bf16[64,32]{1,0} parameter(1)
  %fusion.1 = bf16[16,32]{1,0} fusion(%a, %b), kind=kOutput, calls=%fused_dot, metadata={op_name="jit(step)/jvp(Llama)/dot_general"}
  %fusion.2 = bf16[16,32]{1,0} fusion(%a, %b), kind=kOutput, calls=%fused_dot, metadata={op_name="jit(step)/transpose(jvp(attention))/dot_general"}
  %all-reduce.3 = bf16[16,32]{1,0} all-reduce(%fusion.1), replica_groups={{0,1}}, to_apply=%add
  %exp.4 = bf16[16,32]{1,0} exponential(%fusion.2), metadata={op_name="jit(step)/cross_entropy/exp"}
  ROOT %custom-call.5 = bf16[16,32]{1,0} custom-call(%exp.4), custom_call_target="__cudnn$fmhaSoftmax"
}
"""
  ops = profile.hlo_ops(hlo)
  assert {n: o.category for n, o in ops.items()} == {
      "fusion.1": "matmul", "fusion.2": "attention", "all-reduce.3": "collectives",
      "exp.4": "loss", "custom-call.5": "attention"}
  assert ops["fusion.1"].flops == 2 * 16 * 32 * 64
  assert ops["fusion.1"].bytes == 2 * (16 * 32 + 16 * 64 + 64 * 32)


def test_gpu_trace_events_are_matched_by_hlo_op_kernel_name_or_kernel_kind():
  ops = {"fusion.3": profile.Op("norm/elementwise"), "loop_add_fusion.1": profile.Op("optimizer"),
         "custom-call.2": profile.Op("attention")}
  meta = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/host:CPU"}},
          {"ph": "M", "name": "process_name", "pid": 7, "args": {"name": "/device:GPU:0"}},
          {"ph": "M", "name": "process_name", "pid": 8, "args": {"name": "/device:GPU:1"}}]
  ev = lambda pid, name, ts, **args: {"ph": "X", "pid": pid, "tid": 1, "name": name, "ts": ts,
                                      "dur": 10, "args": args}
  events = meta + [
      ev(1, "fusion.3", 0),                      # host side of a launch: not device time
      ev(7, "some_triton_kernel", 0, hlo_op="fusion.3"),
      ev(7, "loop_add_fusion_1", 20),            # XLA's kernel name for loop_add_fusion.1
      ev(7, "custom_call_2", 40),
      ev(7, "nvjet_tst_128x256_h_bz_TNN", 60),  # a cuBLAS kernel with no instruction named
      ev(7, "ncclDevKernel_AllReduce_Sum_f32", 80),
      ev(8, "fusion.3", 0)]                      # the same step on the second GPU
  spans = profile.device_spans(events, ops)
  names = [name for _, _, name, _ in spans]
  assert names[:3] == ["fusion.3", "loop_add_fusion.1", "custom-call.2"]
  assert len(spans) == 5
  assert [ops[n].category for n in names[3:]] == ["matmul", "collectives"]
  # Without GPU timelines (a CPU trace) only events named after instructions count.
  assert [n for _, _, n, _ in profile.device_spans(events[3:4] + events[8:9], ops)] == ["fusion.3"]
  # A CPU run where a GPU plugin is installed (JAX_PLATFORMS=cpu): the trace names the GPU,
  # which ran nothing; the host's events are the ops.
  cpu_run = meta + [ev(1, "fusion.3", 0), ev(1, "loop_add_fusion.1", 20)]
  assert profile.gpu_timelines(cpu_run) == {}
  assert [n for _, _, n, _ in profile.device_spans(cpu_run, ops)] == ["fusion.3",
                                                                       "loop_add_fusion.1"]


def test_collective_time_and_its_overlap_with_compute(tmp_path):
  import gzip
  import json
  ops = {"fusion.1": profile.Op("matmul"), "all-reduce-start.1": profile.Op("collectives")}
  events = [{"ph": "M", "name": "process_name", "pid": 7, "args": {"name": "/device:GPU:0"}},
            {"ph": "X", "pid": 7, "tid": 1, "name": "fusion_1", "ts": 0, "dur": 100},
            {"ph": "X", "pid": 7, "tid": 2, "name": "all_reduce_start_1", "ts": 60, "dur": 80}]
  path = tmp_path / "t.trace.json.gz"
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": events}, f)
  b = profile.breakdown(path, ops, steps=1)
  assert b["step_ms"] == pytest.approx(0.140)
  assert b["collectives_busy_ms"] == pytest.approx(0.080)
  assert b["collectives_overlapped_ms"] == pytest.approx(0.040)
  assert b["collectives_exposed_ms"] == pytest.approx(0.040)
  assert b["ms"]["collectives"] == pytest.approx(0.020 + 0.040)  # shared 40 us, alone 40 us


def test_each_gpu_s_wait_at_a_collective_and_the_spread_of_their_compute(tmp_path):
  # Two GPUs run one step: GPU 1 computes 40 us less than GPU 0, starts the all-reduce first
  # and waits for GPU 0 at it. Only the faster GPU sees that wait as exposed time; the skew
  # says how much of it is the other GPU's compute, not communication.
  import gzip
  import json
  ops = {"fusion.1": profile.Op("matmul"), "all-reduce-start.1": profile.Op("collectives")}
  meta = [{"ph": "M", "name": "process_name", "pid": p, "args": {"name": f"/device:GPU:{g}"}}
          for p, g in ((7, 1), (6, 0))]  # listed out of device order
  x = lambda pid, tid, name, ts, dur: {"ph": "X", "pid": pid, "tid": tid, "name": name,
                                        "ts": ts, "dur": dur}
  events = meta + [x(6, 1, "fusion_1", 0, 100), x(6, 2, "all_reduce_start_1", 80, 40),
                   x(7, 1, "fusion_1", 0, 60), x(7, 2, "all_reduce_start_1", 40, 80)]
  path = tmp_path / "t.trace.json.gz"
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": events}, f)
  b = profile.breakdown(path, ops, steps=1)
  assert b["collectives_exposed_ms"] == pytest.approx(0.020)  # GPU 0's, as before
  gpu0, gpu1 = b["per_device"]
  assert (gpu0["device"], gpu1["device"]) == ("/device:GPU:0", "/device:GPU:1")
  assert gpu0["compute_ms"] == pytest.approx(0.100) and gpu1["compute_ms"] == pytest.approx(0.060)
  assert gpu0["collectives_exposed_ms"] == pytest.approx(0.020)
  assert gpu1["collectives_exposed_ms"] == pytest.approx(0.060)
  # GPU 1's kernel runs 40-120 us, GPU 0's from 80: GPU 1 idles 20 us (60-80) before GPU 0
  # arrives, then 40 us moving data; GPU 0 never waits for GPU 1.
  assert gpu1["collectives_waiting_ms"] == pytest.approx(0.020)
  assert gpu0["collectives_waiting_ms"] == 0
  assert b["compute_skew_ms"] == pytest.approx(0.040)
  # One GPU's trace has no per-device part.
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": events[1:2] + events[2:4]}, f)
  assert "per_device" not in profile.breakdown(path, ops, steps=1)


def test_a_real_h200_trace_splits_into_the_step_s_parts():
  # 3 steps of the 100M model at batch 64 on an H200 (benchmarks/h200_compare.jsonl): XLA ran
  # the step as CUDA graphs, so kernels carry the graph's `hlo_op`, and cuBLAS/cuDNN kernels
  # are known by their names alone.
  from pathlib import Path
  trace = Path(__file__).parent / "data" / "h200_100m_step.trace.json.gz"
  b = profile.breakdown(trace, {}, steps=3)
  assert sum(b["ms"].values()) == pytest.approx(b["step_ms"], rel=1e-6)
  assert b["step_ms"] == pytest.approx(116.5, rel=0.01)  # as the record's breakdown
  assert b["percent"]["matmul"] > 50 and b["percent"]["attention"] > 5
  assert b["percent"]["idle/host"] < 2 and b["ms"]["collectives"] == 0


def test_each_category_lists_its_own_heaviest_ops():
  # On the real trace the GEMMs fill all but one place of the overall list; the elementwise
  # fusions, 15% of the step, are only named in their category's list.
  from pathlib import Path
  trace = Path(__file__).parent / "data" / "h200_100m_step.trace.json.gz"
  b = profile.breakdown(trace, {}, steps=3, top_per_category=3)
  assert {t["category"] for t in b["top_ops"]} == {"matmul", "attention"}
  groups = b["top_ops_by_category"]
  assert set(groups) == {"matmul", "attention", "norm/elementwise"}
  for category, group in groups.items():
    assert len(group) == 3 and all(t["category"] == category for t in group)
    assert [t["ms"] for t in group] == sorted((t["ms"] for t in group), reverse=True)
  assert groups["norm/elementwise"][0]["op"] == "kernel:loop_multiply_fusion_17"
  assert groups["matmul"][0] == b["top_ops"][0]


def test_op_rates_count_every_launch_of_a_shared_kernel(tmp_path):
  # XLA compiles identical fusions (one per layer) into one kernel named after the first, so a
  # step launches `loop_fusion_1` three times: its rate is 3 launches' FLOPs over their time.
  import gzip
  import json
  ops = {"loop_fusion.1": profile.Op("matmul", flops=2e9, bytes=1e6),
         "fusion.2": profile.Op("norm/elementwise", flops=0, bytes=4e6)}
  events = [{"ph": "M", "name": "process_name", "pid": 7, "args": {"name": "/device:GPU:0"}}]
  for step in range(2):
    t0 = step * 1000
    events += [{"ph": "X", "pid": 7, "tid": 1, "name": "loop_fusion_1", "ts": t0 + 100 * i,
                "dur": 100} for i in range(3)]
    events.append({"ph": "X", "pid": 7, "tid": 1, "name": "fusion_2", "ts": t0 + 300, "dur": 50})
  path = tmp_path / "t.trace.json.gz"
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": events}, f)
  top = {t["op"]: t for t in profile.breakdown(path, ops, steps=2)["top_ops"]}
  assert top["loop_fusion.1"]["launches_per_step"] == 3
  assert top["loop_fusion.1"]["tflops"] == pytest.approx(3 * 2e9 / 300e-6 / 1e12)  # 20
  assert top["fusion.2"]["launches_per_step"] == 1 and top["fusion.2"]["tflops"] is None
  assert top["fusion.2"]["gbytes_per_s"] == pytest.approx(4e6 / 50e-6 / 1e9)


def test_cublas_gemms_count_their_flops_once_per_run_of_several_kernels(tmp_path):
  # As a GPU compile writes them (jax 0.11, command buffers off): a cuBLASLt custom call
  # returning (output, workspace), its dimension numbers in the backend config, one operand an
  # element of a tuple (`x#1`). In the trace one run of it is three kernels carrying its
  # hlo_op: the workspace's memset, a split-K GEMM and the split-K reduction.
  import gzip
  import json
  hlo = """HloModule m

ENTRY %main (a: bf16[64,32], w: f32[32,48]) -> bf16[64,48] {
  %a = bf16[64,32]{1,0} parameter(0)
  %w = f32[32,48]{1,0} parameter(1)
  %convert_fusion.1 = (bf16[32,48]{1,0}, bf16[32,48]{1,0}) fusion(%w), kind=kLoop, calls=%c
  %custom-call.2 = (bf16[64,48]{1,0}, s8[4194304]{0}) custom-call(%a, %convert_fusion.1#1), custom_call_target="__cublas$lt$matmul", metadata={op_name="jit(step)/jvp()/dot_general"}, backend_config={"gemm_backend_config":{"beta":0,"dot_dimension_numbers":{"lhs_batch_dimensions":[],"lhs_contracting_dimensions":["1"],"rhs_batch_dimensions":[],"rhs_contracting_dimensions":["0"]},"epilogue":"DEFAULT"}}
  ROOT %gte = bf16[64,48]{1,0} get-tuple-element(%custom-call.2), index=0
}
"""
  ops = profile.hlo_ops(hlo)
  gemm = ops["custom-call.2"]
  assert gemm.category == "matmul"
  assert gemm.flops == 2 * 64 * 48 * 32
  assert gemm.bytes == 2 * (64 * 48 + 64 * 32 + 32 * 48)  # no workspace; the tuple's element
  events = [{"ph": "M", "name": "process_name", "pid": 7, "args": {"name": "/device:GPU:0"}}]
  for step in range(2):
    t0 = step * 1000
    events += [
        {"ph": "X", "pid": 7, "tid": 1, "name": "Memset 3", "ts": t0, "dur": 1,
         "args": {"hlo_op": "custom-call.2"}},
        {"ph": "X", "pid": 7, "tid": 1, "name": "nvjet_sm90_tst_128x128_splitK_NNT",
         "ts": t0 + 2, "dur": 90, "args": {"hlo_op": "custom-call.2"}},
        {"ph": "X", "pid": 7, "tid": 1, "name": "void cublasLt::splitKreduce_kernel<32, 16>",
         "ts": t0 + 92, "dur": 10, "args": {"hlo_op": "custom-call.2"}}]
  path = tmp_path / "t.trace.json.gz"
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": events}, f)
  b = profile.breakdown(path, ops, steps=2)
  top = {t["op"]: t for t in b["top_ops"]}
  assert top["custom-call.2"]["launches_per_step"] == 1
  assert top["custom-call.2"]["tflops"] == pytest.approx(2 * 64 * 48 * 32 / 101e-6 / 1e12)
  assert b["ms"]["matmul"] == pytest.approx(0.101)
  assert b["matmul_tflops"] == pytest.approx(2 * 64 * 48 * 32 / 101e-6 / 1e12)


def test_a_real_h200_step_without_graphs_accounts_for_every_gemm():
  # The 1B model at batch 64 on an H200 (benchmarks/h200_perf.jsonl tag
  # profile-1b-no-command-buffers): its optimized HLO and a 3-step trace taken with XLA's
  # command buffers off, so each kernel carries its instruction. The GEMMs the parser finds
  # are the model's matmuls: 6 x matmul parameters x tokens, no more, no less.
  import gzip
  from pathlib import Path
  from slm_jax import model
  data = Path(__file__).parent / "data"
  with gzip.open(data / "h200_1b_step.hlo.txt.gz", "rt") as f:
    ops = profile.hlo_ops(f.read())
  gemms = [o for o in ops.values() if o.flops]
  assert all(o.category == "matmul" for o in gemms)
  tokens = 64 * 1024
  assert sum(o.flops for o in gemms) == 6 * model.matmul_params(model.PRESETS["1b"]) * tokens
  b = profile.breakdown(data / "h200_1b_step_no_graphs.trace.json.gz", ops, steps=3)
  assert b["step_ms"] == pytest.approx(697.0, rel=0.01)  # as the record's breakdown
  assert b["matmul_tflops"] == pytest.approx(676, rel=0.01)
  heaviest = b["top_ops_by_category"]["matmul"][0]
  assert heaviest["launches_per_step"] == 1 and 600 < heaviest["tflops"] < 800
