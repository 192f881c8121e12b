"""The profile-guided schedule (slm_jax.pgle): its plumbing on CPU, where XLA ignores the
profile, and the clear refusals."""

import pytest

from slm_jax import config as config_lib
from slm_jax import pgle, train
from slm_jax.errors import UserError


def test_pgle_on_cpu_is_one_clear_error():
  c = config_lib.tiny_config()
  c.pgle_steps = 2
  with pytest.raises(UserError, match="needs NVIDIA GPUs.*pgle_steps=0"):
    train.run(c, dry_run=True)


def test_pgle_is_refused_for_training_runs_and_negative_counts():
  c = config_lib.tiny_config()
  c.update(pgle_steps=2, mode="train")
  with pytest.raises(UserError, match="benchmark runs"):
    config_lib.validate(c)
  c.update(pgle_steps=-1, mode="benchmark")
  with pytest.raises(UserError, match="pgle_steps must be >= 0"):
    config_lib.validate(c)


def test_the_step_is_profiled_recompiled_with_the_profile_and_timed(tmp_path, monkeypatch):
  # On CPU the profiler yields no CUDA op times; stand in for them to follow the profile from
  # the profiler to the compiler option and into the record.
  seen = {}
  monkeypatch.setattr(pgle, "check_platform", lambda c, devices: None)
  monkeypatch.setattr(pgle.jax_profiler, "get_profiled_instructions_proto",
                      lambda run_dir: seen.setdefault("run_dir", run_dir) and b"\n\x02op")
  compiles = []
  real = train.compile_step
  monkeypatch.setattr(train, "compile_step",
                      lambda c, program, extra=None: compiles.append(extra) or real(c, program, extra))
  c = config_lib.tiny_config()
  c.update(steps=3, repeats=1, warmup_steps=1, pgle_steps=2)
  out = train.run(c, profile_dir=tmp_path)
  # Compiled for timing, again without command buffers to be profiled, then with the profile.
  assert compiles == [None, pgle.PROFILING_OPTIONS,
                      {pgle.OPTION: str(tmp_path / "pgle" / pgle.PROFILE_FILE)}]
  assert (tmp_path / "pgle" / pgle.PROFILE_FILE).read_bytes() == b"\n\x02op"
  assert "plugins/profile" in seen["run_dir"]
  assert out["pgle"]["ops_profiled"] == 1 and out["pgle"]["ops_in_step"] > 10
  assert out["pgle"]["steps"] == 2 and out["pgle"]["seconds"] > 0
  assert len(out["step_times_s"]) == 3 and out["tokens_per_s"] > 0


def test_count_profiled_reads_the_costs_of_the_wire_format():
  # costs { name: "fusion.1" cost_us: 12.5 } twice, then an unrelated varint field 3.
  cost = b"\x0a\x08fusion.1" + b"\x11" + bytes(8)
  proto = (b"\x0a" + bytes([len(cost)]) + cost) * 2 + b"\x18\x96\x01"
  assert pgle.count_profiled(proto) == 2
  assert pgle.count_profiled(b"") == 0
  with pytest.raises(ValueError):
    pgle.count_profiled(b"\x0b")  # wire type 3, which the proto never uses


def test_an_empty_profile_says_what_to_change(tmp_path):
  with pytest.raises(UserError, match="CUPTI"):
    pgle.write_profile(b"", tmp_path)


def test_pgle_over_several_processes_is_refused(monkeypatch):
  # One schedule per process would let the processes' collectives disagree.
  monkeypatch.setattr(pgle.jax, "process_count", lambda: 2)
  c = config_lib.tiny_config()
  c.pgle_steps = 3
  gpu = type("Device", (), {"platform": "gpu"})()
  with pytest.raises(UserError, match="one process.*2 processes"):
    pgle.check_platform(c, [gpu])
