"""slm_jax.tools.trace_kernels: every kernel of a traced step, per step, by category."""

import gzip
import json

from slm_jax import profile
from slm_jax.tools import trace_kernels
from test_trace_collectives import STEP, _trace


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
