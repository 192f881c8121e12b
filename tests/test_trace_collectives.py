"""slm_jax.tools.trace_collectives: a trace's collectives matched to the compiled step's, what
each exposed beside the replay's, the race at a wait's end and launches inside a GEMM."""

import gzip
import json

import pytest

from slm_jax import overlap
from slm_jax.tools import trace_collectives as tc
from test_overlap import GPU, LINK, _done, _gemm, _module, _start

# The step: a GEMM, an all-reduce started after it and done after the second GEMM, a second
# all-reduce started after that wait and done after the third GEMM.
STEP = _module("\n".join([_gemm(1), _start(1), _gemm(2), _done(1), _start(2), _gemm(3),
                          _done(2)]))


def _x(pid, name, ts, dur, hlo_op=None, details=None):
  args = {k: v for k, v in (("hlo_op", hlo_op), ("kernel_details", details)) if v}
  return {"ph": "X", "pid": pid, "tid": 1, "name": name, "ts": ts, "dur": dur, "args": args}


def _trace(steps=2, extra_collective=False):
  """Two GPUs, each step 1000 us: GEMM 1 [0, 100], GEMM 2 [100, 300] with the first
  all-reduce's kernel launched 0.75 into it and running to 320 (20 us exposed: the compute
  stream waits), then GEMM 3 [322, 422] wins the SMs and the second all-reduce launches 0.88
  into it, at 410, and runs to 460 (38 us exposed)."""
  events = [{"ph": "M", "name": "process_name", "pid": pid, "args": {"name": f"/device:GPU:{g}"}}
            for g, pid in ((0, 1), (1, 2))]
  for pid in (1, 2):
    for k in range(steps):
      t = 1000.0 * k
      events += [
          _x(pid, "gemm_1", t, 100),
          _x(pid, "nvjet_sm90_tst_128x160_NTT", t + 100, 200, "gemm.2", "regs:168 grid:2,66,1"),
          _x(pid, "ncclDevKernel_AllReduce", t + 250, 70, "all-reduce-start.1"),
          _x(pid, "gemm_3", t + 322, 100),
          _x(pid, "ncclDevKernel_AllReduce", t + 410, 50, "all-reduce-start.2")]
    if extra_collective:
      events.append(_x(pid, "ncclDevKernel_AllReduce", 5000, 10, "all-reduce-start.1"))
  return events


def test_each_gpu_s_last_step_collectives_set_beside_the_replay():
  devices = tc.analyse(_trace(), STEP, GPU, LINK)
  assert [d.device for d in devices] == ["/device:GPU:0", "/device:GPU:1"]
  d = devices[0]
  assert d.steps == 2
  assert d.compute_ms == pytest.approx(0.4)
  first, second = d.collectives
  assert (first.name, first.kind) == ("all-reduce-start.1", "all-reduce")
  assert first.start_us == 1250 and first.exposed_us == pytest.approx(20.0)
  assert second.exposed_us == pytest.approx(38.0)
  # The replay of the same step, with the compute this GPU measured.
  replayed = overlap.replay(STEP, 0.4e-3, GPU, LINK, 2)
  assert replayed.exposed_s > 1e-3  # LINK's collectives take 1 ms each
  assert [c.replay_exposed_us for c in d.collectives] == pytest.approx(
      [replayed.exposed_by_collective[n] * 1e6 for n in ("all-reduce-start.1",
                                                         "all-reduce-start.2")])
  assert sum(replayed.exposed_by_collective.values()) == pytest.approx(replayed.exposed_s)
  # The first launched 0.75 into the 200 us GEMM; the second's GEMM is too short to read.
  assert first.launched_in == "nvjet_sm90_tst_128x160_NTT"
  assert first.launched_at == pytest.approx(0.75)
  assert second.launched_in is None
  # As the compute stream stopped waiting for the first, the GEMM took the SMs.
  [race] = d.races
  assert (race.kind, race.won) == ("all-reduce", False)
  assert race.at == pytest.approx(0.88)


def test_the_report_lists_tens_races_and_launches_by_kernel():
  events = _trace()
  text = tc.report(tc.analyse(events, STEP, GPU, LINK), tc.kernel_shape(events), each=True)
  assert "last step's 2 collectives exposed 0.06 ms in the trace" in text
  assert "all-reduce         0 first /   1 behind the GEMM [0.88]" in text
  assert "nvjet_sm90_tst_128x160_NTT" in text and "regs:168 grid:2,66,1" in text
  assert "0.75 / 0.75 / 0.75" in text


def test_a_trace_that_is_not_of_the_step_is_one_error_line(tmp_path, capsys):
  with pytest.raises(tc.TraceError, match="3 collective kernels in the trace are not whole "
                                          "steps of the compiled step's 2 collectives"):
    tc.analyse(_trace(steps=1, extra_collective=True), STEP, GPU, LINK)
  trace = tmp_path / "t.trace.json.gz"
  with gzip.open(trace, "wt") as f:
    json.dump({"traceEvents": _trace(steps=1, extra_collective=True)}, f)
  step = tmp_path / "step.hlo.txt"
  step.write_text(STEP)
  assert tc.main([str(trace), str(step)]) == 2
  [line] = capsys.readouterr().err.strip().splitlines()
  assert line.startswith("error: /device:GPU:0: 3 collective kernels")
  assert tc.main([str(tmp_path / "missing.json.gz"), str(step)]) == 2
  assert capsys.readouterr().err.startswith("error: cannot read")
  with gzip.open(trace, "wt") as f:
    json.dump({"traceEvents": _trace()}, f)
  assert tc.main([str(trace), str(step)]) == 0
  assert "## /device:GPU:1" in capsys.readouterr().out
