"""The HLO reader profile and collectives share."""

from slm_jax import collectives, hlo, profile


def test_shapes_bytes_and_tuple_elements():
  text = "(bf16[64,128]{1,0}, /*index=1*/f8e4m3fn[8]{0}, s32[], token[], c64[4])"
  assert hlo.shapes(text) == [("bf16", [64, 128]), ("f8e4m3fn", [8]), ("s32", [])]
  assert hlo.nbytes(text) == 64 * 128 * 2 + 8 + 4  # tokens and complex count nothing
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
