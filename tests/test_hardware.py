"""The GPU-type table and what the other modules read from it."""

import pytest

from slm_jax import config, default_config, hardware, measure, pricing
from slm_jax.attention import pallas_tuning
from slm_jax.errors import UserError

# Device kind -> (bf16 peak, HBM GB/s, USD/hour, paper ratio, config key, tuning-table key),
# as every reader (MFU, roofline, price, Token/Dollar, presets, Pallas tiles) must see them.
KINDS = {
    "NVIDIA A100-SXM4-40GB": (312.0, 1555.0, 0.89, 1.00, "a100_40g", "a100"),
    "NVIDIA A100-PCIE-40GB": (312.0, 1555.0, 0.89, 1.00, "a100_40g", "a100"),
    "NVIDIA A100-SXM4-80GB": (312.0, 2039.0, 1.30, 1.46, "a100", "a100"),
    "NVIDIA A100 80GB PCIe": (312.0, 2039.0, 1.30, 1.46, "a100", "a100"),
    "NVIDIA H100 80GB HBM3": (989.0, 3350.0, 3.00, 2.53, "h100", "h100"),
    "NVIDIA H100 PCIe": (756.0, 2000.0, 3.00, 2.53, "h100", "h100"),
    "NVIDIA H200": (989.0, 4800.0, 4.00, 3.37, "h200", "h200"),
    "NVIDIA GH200 480GB": (989.0, 4800.0, 4.00, 3.37, "h200", "h200"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_reader_sees_the_device_s_gpu_type(kind):
  peak, hbm, price, ratio, key, tuning = KINDS[kind]
  assert measure.peak_tflops(kind) == peak and measure.peak_tflops(kind, override=1.0) == 1.0
  assert measure.peak_gbytes_per_s(kind) == hbm
  assert pricing.price_per_device_hour(kind)[0] == price
  assert pricing.token_per_dollar_paper(1000.0, kind) == pytest.approx(1000.0 / ratio)
  assert default_config.preset_gpu(kind) == key
  assert pallas_tuning.gpu_key(kind) == tuning


def test_an_unknown_device_has_no_type_and_runs_the_fallback_presets():
  for kind in ("NVIDIA L40S", "cpu", ""):
    assert hardware.from_device_kind(kind) is None
    assert measure.peak_tflops(kind) is None and pricing.price_per_device_hour(kind)[0] is None
    assert default_config.preset_gpu(kind) == default_config.FALLBACK_GPU
  assert default_config.for_gpu("NVIDIA L40S").device_memory_gb == 0.0  # its own memory
  assert pallas_tuning.gpu_key("NVIDIA L40S") == "l40s"


def test_presets_read_memory_batch_and_compile_options_from_the_table():
  batches = {gpu: [config.paper_config(size, gpu).per_device_batch_size
                   for size in ("100m", "500m", "1b", "2b")] for gpu in hardware.GPUS}
  assert batches == {"a100_40g": [16, 16, 16, 4], "a100": [16, 16, 16, 8],
                     "h100": [16, 16, 16, 8], "h200": [16, 16, 16, 8]}
  assert {g: config.paper_config("1b", g).device_memory_gb for g in hardware.GPUS} == {
      "a100_40g": 40.0, "a100": 80.0, "h100": 80.0, "h200": 141.0}
  assert config.paper_config("1b", "H100").gpu == "h100"  # a name is the type too
  assert sorted(config.GPU_KEYS) == ["a100", "a100_40g", "cpu", "h100", "h200"]


def test_names_and_keys_find_a_type_and_unknown_ones_say_what_is_known():
  assert hardware.gpu("A100-80GB") is hardware.gpu("a100") is hardware.GPUS["a100"]
  assert hardware.gpu("h200").name == "H200" and hardware.gpu("H100").key == "h100"
  with pytest.raises(UserError, match=r"a100_40g \(A100-40GB\)"):
    hardware.gpu("v100")
  assert hardware.interconnect("pcie4").gbytes_per_s == 25.0
  with pytest.raises(UserError, match="nvlink4"):
    hardware.interconnect("nvlink9")
  # Every type's links are in the interconnect table.
  assert all(g.intra_node in hardware.INTERCONNECTS for g in hardware.GPUS.values())


def test_h100_and_h200_share_kernel_tiles_and_a100s_share_a_table_name():
  table = [{"gpu": gpu, "head_dim": 64, "seq_len": 1024, "fwd": [bq, 64, 4, 3],
            "dkdv": [32, 128, 4, 3], "dq": [128, 32, 4, 3]}
           for gpu, bq in (("default", 16), ("h200", 32), ("a100", 64))]
  assert pallas_tuning.lookup("NVIDIA H100 80GB HBM3", 64, 1024, table).fwd.block_q == 32
  assert pallas_tuning.lookup("NVIDIA A100-SXM4-40GB", 64, 1024, table).fwd.block_q == 64
  assert pallas_tuning.lookup("NVIDIA L40S", 64, 1024, table).fwd.block_q == 16


def test_options_beyond_a_preset_are_what_makes_a_run_another_schedule():
  h200 = hardware.gpu("h200")
  assert hardware.options_beyond_preset(h200.xla_options, h200) == frozenset()
  assert hardware.options_beyond_preset("", h200) == frozenset()  # before the preset's option
  lhs = "xla_gpu_enable_latency_hiding_scheduler=true"
  assert hardware.options_beyond_preset(f"{h200.xla_options} {lhs}", h200) == {lhs}
  assert hardware.options_beyond_preset(lhs, None) == {lhs}
  ctas = "NCCL_MAX_CTAS=4"  # NCCL settings make another schedule too, unless the preset's
  assert hardware.options_beyond_preset(h200.xla_options, h200, ctas) == {ctas}
  assert hardware.options_beyond_preset(h200.xla_options, h200, h200.nccl_options) == frozenset()


@pytest.mark.parametrize("gpu", sorted(hardware.GPUS))
def test_every_preset_s_xla_options_are_known_to_the_installed_xla(gpu):
  # A preset option this jax's XLA no longer knows would fail every run of that GPU type at
  # compile time; XLA checks a GPU option's name on any backend.
  import jax

  options = config.xla_options(config.paper_config("100m", gpu))
  assert jax.jit(lambda x: x + 1).lower(1.0).compile(compiler_options=options)(1.0) == 2.0
  with pytest.raises(Exception, match="No such compile option"):
    jax.jit(lambda x: x + 1).lower(1.0).compile(
        compiler_options={**options, "xla_gpu_no_such_option": 1})
