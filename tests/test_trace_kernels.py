"""slm_jax.tools.trace_kernels: every kernel of a traced step, per step, by category."""

import gzip
import json

import pytest

from slm_jax import profile
from slm_jax.tools import trace_kernels
from test_overlap import _elementwise, _gemm, _module
from test_trace_collectives import STEP, _trace, _x


def test_kernels_are_summed_per_step_and_classed_by_instruction_or_name():
  ops = profile.hlo_ops(STEP)
  rows = trace_kernels.kernels(_trace(steps=2), ops, steps=2)
  by_name = {name: (category, ms, n) for category, name, ms, n in rows}
  # Two steps of a 200 us GEMM tied to its instruction by the trace: 0.2 ms and one launch a
  # step, classed by the instruction.
  assert by_name["gemm.2"] == ("matmul", 0.2, 1.0)
  assert by_name["gemm.1"] == ("matmul", 0.1, 1.0)
  assert by_name["all-reduce-start.1"][0] == "collectives"
  assert rows[0][1] == "gemm.2"  # heaviest first
  # Without the step, each kernel is classed by its own name.
  rows = trace_kernels.kernels(_trace(steps=2), {}, steps=2, device="/device:GPU:1")
  by_name = {name: (category, ms, n) for category, name, ms, n in rows}
  assert by_name["nvjet_sm90_tst_128x160_NTT"] == ("matmul", 0.2, 1.0)
  assert by_name["ncclDevKernel_AllReduce"][0] == "collectives"
  assert by_name["ncclDevKernel_AllReduce"][2] == 2.0


def test_the_command_lists_a_category_and_says_what_is_wrong_in_one_line(tmp_path, capsys):
  trace = tmp_path / "t.trace.json.gz"
  with gzip.open(trace, "wt") as f:
    json.dump({"traceEvents": _trace(steps=2)}, f)
  assert trace_kernels.main([str(trace), "--steps=2", "--category=matmul"]) == 0
  out = capsys.readouterr().out
  assert "nvjet_sm90_tst_128x160_NTT" in out and "ncclDevKernel" not in out
  assert "total                 0.40" in out
  assert trace_kernels.main([str(trace), "--device=/device:GPU:7"]) == 2
  [line] = capsys.readouterr().err.strip().splitlines()
  assert line.startswith("error: --device=/device:GPU:7: the trace's GPU timelines are")
  assert trace_kernels.main([str(tmp_path / "none.json.gz")]) == 2
  assert capsys.readouterr().err.startswith("error: cannot read")


def _gemm_with(i, algorithm):
  """test_overlap's 1024^3 GEMM with the index the compile chose."""
  return _gemm(i).replace('"dot_dimension_numbers"', f'"selected_algorithm":"{algorithm}",'
                                                     '"dot_dimension_numbers"')


# Three GEMMs, two of them on index 0, between elementwise work.
GEMM_STEP = _module("\n".join([_gemm_with(1, 0), _elementwise(1), _gemm_with(2, 5),
                               _gemm_with(3, 0)]))


def _gemm_trace(steps=2):
  """One GPU; each step's three GEMM kernels in order (the second split-K, with its reduction
  kernel), none tied to its instruction (as inside a CUDA graph), and an elementwise kernel."""
  events = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}}]
  for k in range(steps):
    t = 1000.0 * k
    events += [_x(1, "nvjet_sm90_tst_128x256_coopA_NTN", t, 100, "command_buffer_3"),
               _x(1, "loop_add_fusion", t + 100, 10, "command_buffer_3"),
               _x(1, "nvjet_sm90_tst_320x64_splitK_NTT", t + 110, 200, "command_buffer_3"),
               _x(1, "void cublasLt::splitKreduce_kernel<32, 16>(float const*)", t + 310, 20,
                  "command_buffer_3"),
               _x(1, "nvjet_sm90_tst_128x256_coopA_NTN", t + 330, 100, "command_buffer_3")]
  return events


def test_each_gemm_kernel_is_matched_in_order_to_the_step_s_gemms_by_algorithm():
  rows = trace_kernels.gemms(_gemm_trace(), GEMM_STEP, steps=2)
  assert rows == [
      ((1024, 1024), 1024, "5", 1, ["cublasLt::splitKreduce_kernel",
                                    "nvjet_sm90_tst_320x64_splitK_NTT"], pytest.approx(0.22)),
      ((1024, 1024), 1024, "0", 2, ["nvjet_sm90_tst_128x256_coopA_NTN"], pytest.approx(0.2))]
  # A trace that is not of this step (or of another step count) is refused, not misread.
  with pytest.raises(ValueError, match="holds 6 GEMM kernels, not 3 steps x the step's 3"):
    trace_kernels.gemms(_gemm_trace(), GEMM_STEP, steps=3)


def test_gemms_needs_the_step(tmp_path, capsys):
  trace, step = tmp_path / "t.trace.json.gz", tmp_path / "step.hlo.txt"
  with gzip.open(trace, "wt") as f:
    json.dump({"traceEvents": _gemm_trace()}, f)
  step.write_text(GEMM_STEP)
  assert trace_kernels.main([str(trace), "--gemms"]) == 2
  assert capsys.readouterr().err.startswith("error: --gemms needs --step")
  assert trace_kernels.main([str(trace), "--step", str(step), "--steps=2", "--gemms"]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[1].split()[:5] == ["1024x1024", "1024", "5", "1", "0.22"]
  assert trace_kernels.main([str(trace), "--step", str(step), "--steps=3", "--gemms"]) == 2
  assert capsys.readouterr().err.startswith("error: the trace holds 6 GEMM kernels")
