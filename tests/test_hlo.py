"""The HLO reader profile and collectives share."""

from slm_jax import collectives, hlo, profile


def test_shapes_bytes_and_tuple_elements():
  text = "(bf16[64,128]{1,0}, /*index=1*/f8e4m3fn[8]{0}, s32[], token[], c64[4])"
  assert hlo.shapes(text) == [("bf16", [64, 128]), ("f8e4m3fn", [8]), ("s32", [])]
  assert hlo.nbytes(text) == 64 * 128 * 2 + 8 + 4  # tokens and complex count nothing
  assert hlo.tuple_elements(text) == ["bf16[64,128]{1,0}", "/*index=1*/f8e4m3fn[8]{0}", "s32[]",
                                      "token[]", "c64[4]"]
  assert hlo.tuple_elements("f32[8]{0}") == ["f32[8]{0}"]
  assert hlo.element(text, 1) == "f8e4m3fn[8]{0}" and hlo.element(text, 9) == ""
  assert hlo.nbytes("%mesh[2] params[0,1] xf32[3]") == 0  # words that are not types


def test_fp8_operands_count_one_byte_in_op_costs_and_collectives():
  module = """HloModule m

ENTRY %main (a: f8e4m3fn[16,64], b: f8e5m2[64,32]) -> bf16[16,32] {
  %a = f8e4m3fn[16,64]{1,0} parameter(0)
  %b = f8e5m2[64,32]{1,0} parameter(1)
  %dot.1 = bf16[16,32]{1,0} dot(%a, %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %all-gather.2 = f8e4m3fn[32,64]{1,0} all-gather(%a), replica_groups={{0,1}}, dimensions={0}
}
"""
  ops = profile.hlo_ops(module)
  assert ops["dot.1"].flops == 2 * 16 * 32 * 64
  assert ops["dot.1"].bytes == 16 * 32 * 2 + 16 * 64 + 64 * 32
  assert collectives.from_hlo(module, 2)["all-gather"]["bytes"] == 32 * 64


# As a GPU compile prints asynchronous collectives (jax 0.11.2, two devices): each "-start" is
# typed ((operands), results), and only the results are what the collective produces.
GPU_STARTS = """
  %all-reduce-start.122 = ((bf16[12460032]{0}), bf16[12460032]{0}) all-reduce-start(%wrapped_concatenate.48), channel_id=5, replica_groups=mesh['axis_0'=2] {'axis_0'}, use_global_device_ids=true, to_apply=%add.2.clone
  %all-gather-start.74 = ((bf16[1248,2496]{1,0}, f32[1248]{0}, bf16[1248,2496]{1,0}), (bf16[2496,2496]{1,0}, f32[2496]{0}, bf16[2496,2496]{1,0})) all-gather-start(%wrapped_convert, %param.223, %wrapped_convert.1), channel_id=1, replica_groups=mesh['fsdp'=2] {'fsdp'}, dimensions={0}, use_global_device_ids=true
  %reduce-scatter-start.1 = ((bf16[2496,6739]{1,0}), bf16[1248,6739]{1,0}) reduce-scatter-start(%get-tuple-element.2835), channel_id=1, replica_groups=mesh['fsdp'=2] {'fsdp'}, use_global_device_ids=true, dimensions={0}, to_apply=%region_110.111
"""


def test_asynchronous_starts_count_what_they_combine_once():
  got = collectives.from_hlo(GPU_STARTS, 2)
  assert got["all-reduce"]["bytes"] == 12460032 * 2
  assert got["all-gather"]["bytes"] == 2 * 2496 * 2496 * 2 + 2496 * 4
  assert got["reduce-scatter"]["bytes"] == 2496 * 6739 * 2  # its operand, the whole tensor
  assert hlo.async_result("all-gather", "(f32[4]{0}, f32[8]{0})") == ("(f32[4]{0}, f32[8]{0})",
                                                                     None)
