import gzip

from slm_jax import schedule

# A scheduled entry as XLA prints it: the first all-reduce overlaps one GEMM and an elementwise
# fusion, the second starts while the first is in flight and overlaps nothing.
HLO = """HloModule jit_step, is_scheduled=true

%fused_add (p0: f32[8]) -> f32[8] {
  %p0 = f32[8]{0} parameter(0)
  ROOT %add.1 = f32[8]{0} add(%p0, %p0)
}

ENTRY %main (a: bf16[64,64], b: bf16[64,64], g: f32[8]) -> f32[8] {
  %a = bf16[64,64]{1,0} parameter(0)
  %b = bf16[64,64]{1,0} parameter(1)
  %g = f32[8]{0} parameter(2)
  %all-reduce-start.1 = ((f32[8]{0}), f32[8]{0}) all-reduce-start(%g), replica_groups={{0,1}}, to_apply=%sum
  %custom-call.1 = (bf16[64,64]{1,0}, s8[1024]{0}) custom-call(%a, %b), custom_call_target="__cublas$lt$matmul"
  %get-tuple-element.1 = bf16[64,64]{1,0} get-tuple-element(%custom-call.1), index=0
  %fusion.1 = f32[8]{0} fusion(%g), kind=kLoop, calls=%fused_add
  %all-reduce-start.2 = ((f32[8]{0}), f32[8]{0}) all-reduce-start(%fusion.1), replica_groups={{0,1}}, to_apply=%sum
  %all-reduce-done.1 = f32[8]{0} all-reduce-done(%all-reduce-start.1)
  %all-reduce-done.2 = f32[8]{0} all-reduce-done(%all-reduce-start.2)
  ROOT %tuple = (f32[8]{0}, f32[8]{0}) tuple(%all-reduce-done.1, %all-reduce-done.2)
}
"""


def test_windows_count_the_work_between_each_start_and_done():
  first, second = schedule.windows(HLO)
  assert (first.kind, first.bytes, first.ops, first.gemms, first.in_flight) == (
      "all-reduce", 32, 2, 1, 0)
  assert (second.ops, second.gemms, second.in_flight) == (0, 0, 1)
  s = schedule.summary([first, second])["all-reduce"]
  assert s["count"] == 2 and s["max_in_flight"] == 2 and s["with_at_most_one_gemm"] == 2
  assert s["gemms_between_max"] == 1


def test_the_command_reads_a_kept_program(tmp_path, capsys):
  path = tmp_path / "step.hlo.txt.gz"
  with gzip.open(path, "wt") as f:
    f.write(HLO)
  assert schedule.main([str(path), "--each"]) == 0
  out = capsys.readouterr().out
  assert "all-reduce" in out and "all-reduce-start.2" in out
  assert schedule.main([str(tmp_path / "missing.txt")]) == 2
  assert "cannot read" in capsys.readouterr().err
  cut = tmp_path / "cut.hlo.txt.gz"  # a copy cut short
  cut.write_bytes(path.read_bytes()[:40])
  assert schedule.main([str(cut)]) == 2
  [line] = capsys.readouterr().err.splitlines()
  assert line.startswith(f"error: cannot read {cut}: ")
