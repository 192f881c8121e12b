"""Every fact slm_jax keeps about a GPU type, in one table that every other module reads: memory,
datasheet peaks, interconnects, price, the paper's price ratio, the presets' compile options and
batches, and the Pallas tuning table's key.

A type has two names: `key`, as config files and `--config.gpu` spell it ("a100_40g", "h100"),
and `name`, as the price table and the paper do ("A100-40GB", "H100"). `gpu()` takes either;
`from_device_kind()` reads the name a device reports ("NVIDIA H100 80GB HBM3").
"""

from __future__ import annotations

import dataclasses
import statistics

from slm_jax.errors import UserError

PRICE_TABLE_DATE = "2026-05"
PRICE_TABLE_SOURCE = (
    "mid-points of the specialty-provider on-demand ranges in the Mercatus cloud GPU price "
    "survey (May 2026): A100-80GB $1.10-1.50, H100 SXM $2.50-3.50, H200 SXM $3.50-4.50; "
    "A100-40GB is A100-80GB / 1.46, the paper's price ratio")


@dataclasses.dataclass(frozen=True)
class GPU:
  key: str                 # config-file key: "a100_40g", "a100", "h100", "h200"
  name: str                # price-table and paper name: "A100-40GB", "A100-80GB", "H100", "H200"
  # Memory per device. Runs budget memory to the smaller of this and what the device has, so an
  # `a100_40g` config run on an 80 GB card answers "does it fit in 40 GB".
  memory_gb: float
  peak_bf16_tflops: float  # dense tensor-core peak (datasheet): the MFU denominator
  peak_fp8_tflops: float | None  # dense (datasheet); None where the GPU has no fp8 tensor cores
  hbm_gbytes_per_s: float  # datasheet
  intra_node: str          # INTERCONNECTS key of the links between the GPUs of one node
  usd_per_hour: float      # the dated price table (PRICE_TABLE_DATE, PRICE_TABLE_SOURCE)
  # The paper gives prices only as ratios to an A100-40GB hour (averaged over two clouds); its
  # Token/Dollar axis is tokens/s per GPU divided by this ratio.
  paper_price_ratio: float | None
  paper_label: str         # the GPU's series label in the paper's figures
  xla_options: str         # XLA options the type's presets compile with (--config.xla_options)
  nccl_options: str        # NCCL settings the type's presets run with (--config.nccl_options)
  default_batch: dict[str, int]  # per-device batch of the presets, by model size
  tuning_key: str          # the Pallas tuning table's name for the type (slm_jax.attention)
  chip: str                # types on one chip (SMs, shared memory, registers) share kernel tiles
  # How much the type's chips differ in compute speed: the relative standard deviation of one
  # step's compute time across chips (slm_jax.predict.measure_chip_spread); None where not
  # measured. A multi-GPU step waits for its slowest chip.
  chip_spread: float | None = None


# Per-device batch each preset starts from (override with --config.per_device_batch_size):
# 16, and 8 for 2B, as the issue-2 benchmark. Measured peaks on an H100 (benchmarks/):
# 1B at 16 takes 34.6 GiB and 2B at 8 takes 42.3 GiB, so a 40 GB A100 keeps 1B at 16 and
# takes 2B at 4 (29.3 GiB of fp32 weights, gradients and Adam state plus about half the
# activations; an estimate, checked against XLA's plan by --dry_run on a GPU).
_BATCH = {"100m": 16, "500m": 16, "1b": 16, "2b": 8}

# Hopper: XLA's Triton GEMM fusions off, so cuBLAS runs those GEMMs: 1.009-1.027x tokens/s at
# every paper size on an H200 (benchmarks/PERF_NOTES.md section 5). Unmeasured on the A100.
# Up to four asynchronous collectives in flight instead of XLA's one, so ddp's gradient
# all-reduces are no longer held to one backward GEMM each: 1.007x at 2B, 1.006x at 500M, 1.000x
# at 1B tokens/s per GPU on two H200s (section 20). A step without collectives compiles the same.
_HOPPER_XLA_OPTIONS = ("xla_gpu_enable_triton_gemm=false "
                       "xla_gpu_experimental_parallel_collective_overlap_limit=4")
_HOPPER_NCCL_OPTIONS = ""

_A100_80 = GPU(
    key="a100", name="A100-80GB", memory_gb=80.0, peak_bf16_tflops=312.0, peak_fp8_tflops=None,
    hbm_gbytes_per_s=2039.0, intra_node="nvlink3", usd_per_hour=1.30, paper_price_ratio=1.46,
    paper_label="A100-80GB", xla_options="", nccl_options="", default_batch=_BATCH,
    tuning_key="a100", chip="GA100")
_H100 = GPU(
    key="h100", name="H100", memory_gb=80.0, peak_bf16_tflops=989.0, peak_fp8_tflops=1979.0,
    hbm_gbytes_per_s=3350.0, intra_node="nvlink4", usd_per_hour=3.00, paper_price_ratio=2.53,
    paper_label="H100-80GB", xla_options=_HOPPER_XLA_OPTIONS,
    nccl_options=_HOPPER_NCCL_OPTIONS, default_batch=_BATCH,
    tuning_key="h100", chip="GH100")
GPUS: dict[str, GPU] = {g.key: g for g in (
    dataclasses.replace(
        _A100_80, key="a100_40g", name="A100-40GB", memory_gb=40.0, hbm_gbytes_per_s=1555.0,
        usd_per_hour=0.89, paper_price_ratio=1.00, paper_label="A100-40GB",
        default_batch={**_BATCH, "2b": 4}),
    _A100_80,
    _H100,
    # The H200 came after the paper: its ratio is the H100's scaled by the two GPUs' prices in
    # the dated table (2.53 x 4.00 / 3.00), so H200 points can sit on the paper's axes.
    dataclasses.replace(
        _H100, key="h200", name="H200", memory_gb=141.0, hbm_gbytes_per_s=4800.0,
        usd_per_hour=4.00, paper_price_ratio=round(2.53 * 4.00 / 3.00, 2), paper_label="H200",
        # 20 hosts of two H200s, 83 profiled records (benchmarks/h200x2_two_gpu.jsonl);
        # benchmarks/PERF_NOTES.md section 33.
        tuning_key="h200", chip_spread=0.0071),
)}

# Boards of a type whose datasheet differs from the type's (clocks, memory, links); they are the
# type everywhere else (config key, price, tuning entries). Keyed by a substring of the upper-
# cased device kind.
_BOARDS = {
    "H100 PCIE": dataclasses.replace(_H100, peak_bf16_tflops=756.0, peak_fp8_tflops=1513.0,
                                     hbm_gbytes_per_s=2000.0, intra_node="pcie5"),
}


@dataclasses.dataclass(frozen=True)
class CollectiveCosts:
  """What one NCCL collective took through XLA on a link, alone, by the bytes of the tensor it
  combines per device (an all-reduce's or reduce-scatter's operand, an all-gather's result):
  benchmarks/link_bandwidth.py's medians. A bucket-sized collective gets far less than the
  link's datasheet rate (NCCL's protocol for the size, its launch), which the ring model misses.
  """
  source: str             # the records measured
  group: int              # devices the collectives spanned
  sizes: tuple[int, ...]  # bytes, ascending
  all_reduce_s: tuple[float, ...]
  reduce_scatter_all_gather_s: tuple[float, ...]  # the pair, one after the other

  def seconds(self, kind: str, nbytes: int, group: int) -> float:
    """One collective of `kind` over `group` devices, interpolated linearly in bytes (beyond
    the largest size, at the last two sizes' slope); a reduce-scatter or all-gather is half the
    pair. Another group size sends 2(n-1)/n of the tensor, against the measured group's."""
    ring = lambda n: 2 * (n - 1) / n
    nbytes = nbytes * ring(group) / ring(self.group)
    times = self.all_reduce_s if kind == "all-reduce" else self.reduce_scatter_all_gather_s
    share = 1.0 if kind == "all-reduce" else 0.5
    xs, ys = self.sizes, times
    if nbytes <= xs[0]:
      return share * ys[0]
    k = next((i for i in range(1, len(xs)) if nbytes <= xs[i]), len(xs) - 1)
    slope = (ys[k] - ys[k - 1]) / (xs[k] - xs[k - 1])
    return share * (ys[k - 1] + slope * (nbytes - xs[k - 1]))


def host_key(gpus: list[dict] | None) -> tuple[str, ...]:
  """A host as records and link timings name it: its GPUs' UUIDs (`gpus`, written by
  slm_jax.results.gpu_identity), sorted; () where they were not recorded."""
  return tuple(sorted(g.get("uuid", "") for g in gpus or []))


def link_costs(rows: list[dict], source: str,
               dtype: str = "bfloat16") -> dict[tuple[str, ...], CollectiveCosts]:
  """{host (its GPUs' UUIDs, sorted): CollectiveCosts} from benchmarks/link_bandwidth.py's lines
  of `dtype`: at each size measured for both kinds, the median over the rounds. Lines without
  both kinds, or of another dtype, are left out."""
  by_host: dict[tuple[str, ...], list[dict]] = {}
  for r in rows:
    if r.get("dtype") == dtype and r.get("kind") and r.get("median_us") is not None:
      host = host_key(r.get("gpus")) or ("unknown host",)
      by_host.setdefault(host, []).append(r)
  out = {}
  for host, lines in by_host.items():
    times: dict[str, dict[int, list[float]]] = {}
    for r in lines:
      times.setdefault(r["kind"], {}).setdefault(int(r["bytes"]), []).append(r["median_us"])
    pair, ar = times.get("reduce-scatter+all-gather", {}), times.get("all-reduce", {})
    sizes = tuple(sorted(set(ar) & set(pair)))
    if not sizes:
      continue
    median = lambda xs: statistics.median(xs) * 1e-6
    out[host] = CollectiveCosts(
        source=f"{source} ({' / '.join(host)})", group=int(lines[0].get("num_devices") or 2),
        sizes=sizes, all_reduce_s=tuple(median(ar[b]) for b in sizes),
        reduce_scatter_all_gather_s=tuple(median(pair[b]) for b in sizes))
  return out


# NVLink 4 between the two H200s of one host, bf16 (fp32 measured the same within 3%), jax
# 0.11.2: benchmarks/h200x2_link_bandwidth.jsonl, campaign h200x2-schedule-replay-2026-11-30.
# Hosts differ: another (campaign h200x2-gemm-tail-2026-11-30) took 17-31% longer from 16 to
# 34 MB and the same within 10% from 64 MB up (benchmarks/PERF_NOTES.md section 27).
_NVLINK4_H200X2 = CollectiveCosts(
    source="benchmarks/h200x2_link_bandwidth.jsonl (h200x2-schedule-replay-2026-11-30)", group=2,
    sizes=(249856, 999424, 3999744, 15998976, 24999936, 33998848, 64000000, 128000000,
           256000000),
    all_reduce_s=(23.5e-6, 30.0e-6, 47.5e-6, 98.8e-6, 133.8e-6, 168.7e-6, 273.6e-6, 487.1e-6,
                  906.3e-6),
    reduce_scatter_all_gather_s=(48.0e-6, 48.0e-6, 72.7e-6, 128.5e-6, 173.7e-6, 218.6e-6,
                                 355.6e-6, 618.9e-6, 1141.2e-6))


@dataclasses.dataclass(frozen=True)
class Interconnect:
  key: str
  name: str
  gbytes_per_s: float  # per direction, per GPU
  latency_s: float     # per ring step
  costs: CollectiveCosts | None = None  # measured, where a run on the link has measured them


INTERCONNECTS: dict[str, Interconnect] = {i.key: i for i in (
    Interconnect("nvlink4", "NVLink 4 (H100/H200 SXM, 450 GB/s per direction)", 450.0, 3e-6,
                 _NVLINK4_H200X2),
    Interconnect("nvlink3", "NVLink 3 (A100 SXM, 300 GB/s per direction)", 300.0, 3e-6),
    Interconnect("pcie4", "PCIe 4.0 x16 (~25 GB/s achievable)", 25.0, 5e-6),
    Interconnect("pcie5", "PCIe 5.0 x16 (~50 GB/s achievable)", 50.0, 5e-6),
    Interconnect("ib400", "InfiniBand NDR / EFA 400 Gb/s per GPU (50 GB/s)", 50.0, 10e-6),
    Interconnect("efa100", "EFA 100 Gb/s per GPU (12.5 GB/s)", 12.5, 15e-6),
)}


def gpu(key_or_name: str) -> GPU:
  """The type a config key ("h100") or a name ("H100", "A100-80GB") stands for, any case."""
  wanted = key_or_name.strip().lower()
  for g in GPUS.values():
    if wanted in (g.key, g.name.lower()):
      return g
  known = ", ".join(f"{g.key} ({g.name})" for g in GPUS.values())
  raise UserError(f"unknown GPU type {key_or_name!r}; known: {known}")


def options_beyond_preset(xla_options: str, gpu: GPU | None,
                          nccl_options: str = "") -> frozenset[str]:
  """The XLA options a step was compiled with and the NCCL settings it ran with that `gpu`'s
  preset does not set: empty for a preset run (or one from before its preset gained an
  option), else what makes it another schedule (an A/B such as the latency-hiding scheduler,
  command buffers off for a profile, NCCL on fewer SMs)."""
  return (frozenset(set((xla_options or "").split()) | set((nccl_options or "").split()))
          - preset_options(gpu))


def preset_options(gpu: GPU | None) -> frozenset[str]:
  """The XLA options and NCCL settings `gpu`'s preset sets (none for an unknown GPU)."""
  return frozenset(f"{gpu.xla_options} {gpu.nccl_options}".split()) if gpu else frozenset()


def chip_spread(gpu: GPU) -> tuple[float, str]:
  """(the type's chip spread, the type it was measured on): a type without its own measurement
  takes a measured type's, since every type's chips differ and few are measured."""
  if gpu.chip_spread is not None:
    return gpu.chip_spread, gpu.name
  measured = next(g for g in GPUS.values() if g.chip_spread is not None)
  return measured.chip_spread, measured.name


def from_device_kind(device_kind: str) -> GPU | None:
  """The type of a device by the name it reports ('NVIDIA H100 80GB HBM3' -> H100); None for a
  CPU or a GPU the table does not know."""
  kind = device_kind.upper()
  board = next((g for name, g in _BOARDS.items() if name in kind), None)
  if board is not None:
    return board
  # "H200" before "H100": a GH200 is an H200 here, as everywhere else.
  if "H200" in kind:
    return GPUS["h200"]
  if "H100" in kind:
    return GPUS["h100"]
  if "A100" in kind:
    return GPUS["a100_40g" if "40GB" in kind else "a100"]
  return None


def interconnect(key: str) -> Interconnect:
  if key not in INTERCONNECTS:
    raise UserError(f"unknown interconnect {key!r}; known: {', '.join(INTERCONNECTS)}")
  return INTERCONNECTS[key]
