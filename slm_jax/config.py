"""The one config definition every `configs/*.py` file is built from, and its validation.

Field names are a public contract (they are the `--config.FIELD=VALUE` overrides and are
recorded in results); add fields, do not rename them.
"""

from __future__ import annotations

import math
import os

import ml_collections

from slm_jax import hardware
from slm_jax import model as model_lib
from slm_jax.fp8 import SCALINGS as FP8_SCALINGS
from slm_jax.errors import UserError

STRATEGIES = ("single", "ddp", "fsdp_full", "fsdp_grad_op", "hsdp")
REDUCE_SCHEDULES = ("xla", "per_layer")
DTYPES = ("float32", "bfloat16", "float16")
MODES = ("benchmark", "train")
CROSS_ENTROPY = ("gather", "select")
GPU_KEYS = ("cpu", *hardware.GPUS)  # the GPU types of slm_jax.hardware, or none
DATA_FORMATS = ("", "text", "json", "parquet")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Model: a preset's dimensions, each overridable ("custom" is recorded when they differ).
  c.model = "tiny"
  _set_model_fields(c, "tiny")
  c.attention = "xla"
  # FFN matmuls run at ffn_dim rounded up to this multiple with zero padding: the same model,
  # parameters and outputs, aligned GEMMs (slm_jax.model.MLP). 1 = off.
  c.ffn_pad_multiple = 64
  # Aligned-width variants, which change the model: > 1 adds heads until the attention width
  # (heads x head_dim, and the KV heads' width) is a multiple of this, and FFN columns until
  # ffn_dim is (the paper's 13- and 39-head models and its FFN widths are not multiples of
  # 128). Records name such a model "<preset>-w<multiple>", apart from the paper's. 1 = off.
  c.width_multiple = 1
  c.compute_dtype = "bfloat16"
  c.param_dtype = "float32"
  # The dtype the logits' gradient enters the LM head's backward matmuls in: "compute" (the
  # compute dtype: bf16 GEMMs, as PyTorch autocast's bf16 logits give; slm_jax.model._head_dot)
  # or float32 (which needs float32 logits, below). Measured with fp32 logits:
  # benchmarks/PERF_NOTES.md section 2.
  c.logits_grad_dtype = "compute"
  # The dtype the LM head writes the logits in: float32, or "compute" (bf16 logits, as PyTorch
  # autocast gives; the loss still upcasts them inside its own fusions, so the [tokens, vocab]
  # array sits in HBM at half the bytes; measured with fold_norm_scale: benchmarks/PERF_NOTES.md
  # sections 8-9). With "compute" the logits' gradient is in the compute dtype too.
  c.logits_dtype = "compute"
  # q/k/v and gate/up as one matmul each, against their kernels side by side: the same
  # parameters and function, fewer and wider GEMMs (slm_jax.model._fused_matmul) and fewer FSDP
  # gathers. Off: slower on one H200 (benchmarks/PERF_NOTES.md section 4).
  c.fuse_projections = False
  # Each block's RMSNorm scales multiplied into the kernels after them (q/k/v, gate/up): the
  # same parameters and function; the scales' gradients become sums over kernels instead of
  # column reductions over every token (slm_jax.model._scaled; measured:
  # benchmarks/PERF_NOTES.md section 8).
  c.fold_norm_scale = True
  # How the loss picks each token's label logit: "select" (a one-hot select summed over the
  # vocabulary: a gradient XLA writes in one elementwise pass, and no fp32 [tokens, vocab]
  # gradient in HBM) or "gather" (optax's integer-label loss). The same value
  # (slm_jax.train.cross_entropy; measured: benchmarks/PERF_NOTES.md section 10).
  c.cross_entropy = "select"
  # FP8 GEMMs for the q/k/v/o and gate/up/down projections (slm_jax.fp8): e4m3 weights and
  # activations, e5m2 gradients, a scale per tensor; needs compute capability >= 8.9 (a CPU
  # emulates them, for tests). Master weights, optimizer state, embedding, norms, attention
  # and the LM head stay as they are. `fp8_scaling`: "current" (each tensor's own amax,
  # stateless) or "delayed" (the largest amax of the last `fp8_amax_history` steps, kept in
  # the train state and its checkpoints). "current" is the default: faster than "delayed" at
  # every size measured on an H200, with less memory (benchmarks/PERF_NOTES.md section 15).
  c.fp8 = False
  c.fp8_scaling = "current"
  c.fp8_amax_history = 1024
  # Where and how it runs.
  c.gpu = "cpu"
  c.strategy = "single"
  c.num_devices = 0  # devices to use; 0 = all present (single: 1)
  # When ddp's and fsdp_grad_op's gradient reductions run: "xla" (after the backward, where
  # XLA's scheduler places them) or "per_layer" (each layer's during the backward of the layer
  # before it, written out in shard_map: slm_jax.explicit_grad).
  c.reduce_schedule = "xla"
  c.per_device_batch_size = 8
  c.seq_len = 128
  # Measurement: `warmup_steps` untimed steps after compiling, then `repeats` x `steps` timed.
  c.steps = 10
  c.warmup_steps = 2
  c.repeats = 3
  # Optimizer: AdamW on fp32 master weights, global-norm clipping.
  c.learning_rate = 3e-4
  c.lr_warmup_steps = 100
  c.weight_decay = 0.1
  c.adam_b1 = 0.9
  c.adam_b2 = 0.95
  c.adam_eps = 1e-8
  c.grad_clip_norm = 1.0
  c.seed = 0
  # Accounting overrides; 0 means "from the device's GPU type in slm_jax.hardware".
  c.device_memory_gb = 0.0
  c.price_per_device_hour = 0.0
  c.peak_tflops = 0.0
  c.tensorboard = True
  # XLA options the step is compiled with, as XLA_FLAGS spells them but for this run only and
  # recorded with it (a sweep can grid them): "xla_gpu_enable_triton_gemm=false ...",
  # space-separated. true/false, numbers and text (lists: "a,b") are converted for XLA.
  c.xla_options = ""
  # NCCL settings for this run's collectives, "NCCL_NAME=VALUE ...", set in the environment of
  # the process before its first collective (NCCL reads them when it builds a communicator) and
  # recorded with the run, so a sweep can grid them like `xla_options`. For example
  # "NCCL_MAX_CTAS=4": NCCL's kernels take SMs from the compute they overlap.
  c.nccl_options = ""
  # Steps to trace with jax.profiler after timing (0 = none); the trace lands in
  # <workdir>/profile/<run_id> and its breakdown in the record.
  c.profile_steps = 0
  # Steps profiled after warm-up to give XLA's latency-hiding scheduler each op's measured time;
  # the step is then compiled again with them and that step is timed (0 = XLA's own estimates;
  # NVIDIA GPUs only; slm_jax.pgle says why).
  c.pgle_steps = 0
  _set_training_fields(c)
  return c


def _set_training_fields(c: ml_collections.ConfigDict) -> None:
  """`mode=train` trains on text (slm_jax.trainer) instead of timing one synthetic batch."""
  c.mode = "benchmark"
  # Stop at whichever budget is reached first; 0 = no budget of that kind (one is needed).
  # A step budget by default, so `--config.mode=train` alone trains a short run.
  c.train_steps = 300
  c.dollar_budget = 0.0
  # Text: local files (comma-separated paths or globs; `data_format` text/json/parquet or ""
  # for the extension's), else a HuggingFace hub dataset (streamed), else the embedded corpus.
  c.data_files = ""
  c.data_format = ""
  c.dataset = ""
  c.dataset_split = "train"
  c.text_field = "text"
  # A tokenizer.json; "" = a byte-level BPE trained on the corpus at vocab_size, cached.
  c.tokenizer_path = ""
  # Held-out loss every `eval_every` steps on `eval_batches` batches of the held-out split
  # (every round(1/eval_fraction)-th document); 0 = never.
  c.eval_every = 0
  c.eval_batches = 4
  c.eval_fraction = 0.05
  # Checkpoints: "" = <workdir>/checkpoints; an async save every `checkpoint_every` steps
  # (0 = only at the end, on SIGTERM and on a NaN), the newest `keep_checkpoints` kept.
  c.checkpoint_dir = ""
  c.checkpoint_every = 0
  c.keep_checkpoints = 3
  c.prefetch_batches = 2


def _set_model_fields(c: ml_collections.ConfigDict, preset: str) -> None:
  m = model_lib.PRESETS[preset]
  c.num_layers = m.num_layers
  c.num_heads = m.num_heads
  c.num_kv_heads = m.kv_heads
  c.head_dim = m.head_dim
  c.ffn_dim = m.ffn_dim
  c.vocab_size = m.vocab_size


def paper_config(size: str, gpu: str) -> ml_collections.ConfigDict:
  """The paper's setting for one model size on one GPU type: context 1024, 3 x 10 steps."""
  c = base_config()
  c.model = size
  _set_model_fields(c, size)
  g = hardware.gpu(gpu)
  c.gpu = g.key
  c.attention = "cudnn"
  c.per_device_batch_size = g.default_batch[size]
  c.seq_len = 1024
  c.device_memory_gb = g.memory_gb
  c.xla_options = g.xla_options
  c.nccl_options = g.nccl_options
  return c


def tiny_config() -> ml_collections.ConfigDict:
  return base_config()


def train_config(c: ml_collections.ConfigDict, train_steps: int,
                 checkpoint_every: int, eval_every: int) -> ml_collections.ConfigDict:
  """`c` switched to training on text: the embedded corpus unless --config.data_files says
  otherwise, with the warm-up scaled to the run so short runs still learn."""
  c.mode = "train"
  c.train_steps = train_steps
  c.checkpoint_every = checkpoint_every
  c.eval_every = eval_every
  c.lr_warmup_steps = max(1, min(c.lr_warmup_steps, train_steps // 10))
  return c


def model_config(c: ml_collections.ConfigDict, widen: bool = True) -> model_lib.ModelConfig:
  """The model the fields describe, widened to `width_multiple` (unless `widen` is false)."""
  heads, kv_heads, ffn = c.num_heads, c.num_kv_heads, c.ffn_dim
  m = c.width_multiple if widen else 1
  if m > 1:
    group = heads // kv_heads  # query heads per KV head, kept
    kv_heads += -kv_heads % (m // math.gcd(m, c.head_dim))
    heads = kv_heads * group
    ffn += -ffn % m
  return model_lib.ModelConfig(num_layers=c.num_layers, num_heads=heads,
                               num_kv_heads=None if kv_heads == heads else kv_heads,
                               head_dim=c.head_dim, ffn_dim=ffn, vocab_size=c.vocab_size)


def _dtype_name(c: ml_collections.ConfigDict, value: str) -> str:
  return c.compute_dtype if value == "compute" else value


def logits_grad_dtype(c: ml_collections.ConfigDict) -> str:
  """The dtype name `logits_grad_dtype` stands for ("compute" is the compute dtype)."""
  return _dtype_name(c, c.logits_grad_dtype)


def reduce_schedule(c) -> str:
  """`reduce_schedule` of a config or a record's config dict; "xla" for records made before
  the field."""
  return c.get("reduce_schedule") or "xla"


def logits_dtype(c: ml_collections.ConfigDict) -> str:
  """The dtype name `logits_dtype` stands for ("compute" is the compute dtype)."""
  return _dtype_name(c, c.logits_dtype)


def xla_options(c: ml_collections.ConfigDict) -> dict:
  """`xla_options` as compile options, {name: bool | int | float | str}."""
  out = {}
  for item in c.xla_options.split():
    name, sep, value = item.removeprefix("--").partition("=")
    if not sep or not name.startswith("xla_"):
      raise UserError(f"--config.xla_options: {item!r} is not NAME=VALUE with an XLA option's "
                      "name, e.g. 'xla_gpu_enable_triton_gemm=false'")
    out[name] = _option_value(value)
  return out


def nccl_options(c: ml_collections.ConfigDict) -> dict[str, str]:
  """`nccl_options` as environment variables, {NCCL_NAME: value}."""
  out = {}
  for item in c.get("nccl_options", "").split():
    name, sep, value = item.partition("=")
    if not sep or not value or not name.startswith("NCCL_"):
      raise UserError(f"--config.nccl_options: {item!r} is not NAME=VALUE with an NCCL "
                      "variable's name, e.g. 'NCCL_MAX_CTAS=4'")
    out[name] = value
  return out


def apply_nccl_options(c: ml_collections.ConfigDict) -> None:
  """Puts `nccl_options` in this process's environment; a run's own setting wins over one
  the shell exported, and the record's `nccl_env` shows what NCCL saw."""
  os.environ.update(nccl_options(c))


def _option_value(text: str):
  if text.lower() in ("true", "false"):
    return text.lower() == "true"
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def model_name(c: ml_collections.ConfigDict) -> str:
  """The preset's name if the dimensions are the preset's; "<preset>-w<multiple>" if they are
  the preset's widened by `width_multiple`; else "custom"."""
  preset = model_lib.PRESETS.get(c.model)
  if preset == model_config(c):
    return c.model
  if c.width_multiple > 1 and preset == model_config(c, widen=False):
    return f"{c.model}-w{c.width_multiple}"
  return "custom"


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises UserError, naming the field to change, for a config that cannot run anywhere."""
  if c.model not in model_lib.PRESETS:
    raise UserError(f"--config.model={c.model!r} is not a preset; choose one of "
                    f"{sorted(model_lib.PRESETS)} and set num_layers/num_heads/... to customise")
  if c.strategy not in STRATEGIES:
    raise UserError(f"--config.strategy={c.strategy!r} is not one of {list(STRATEGIES)}")
  if reduce_schedule(c) not in REDUCE_SCHEDULES:
    raise UserError(f"--config.reduce_schedule={c.reduce_schedule!r} is not one of "
                    f"{list(REDUCE_SCHEDULES)}")
  if reduce_schedule(c) == "per_layer" and c.strategy not in ("ddp", "fsdp_grad_op"):
    raise UserError(f"--config.reduce_schedule=per_layer needs --config.strategy=ddp or "
                    f"fsdp_grad_op, not {c.strategy!r} (or set --config.reduce_schedule=xla)")
  for field in ("compute_dtype", "param_dtype"):
    if c[field] not in DTYPES:
      raise UserError(f"--config.{field}={c[field]!r} is not one of {list(DTYPES)}")
  for field in ("logits_grad_dtype", "logits_dtype"):
    if c[field] not in ("compute", "float32", c.compute_dtype):
      raise UserError(f"--config.{field}={c[field]!r} must be 'compute' (the compute dtype, "
                      f"{c.compute_dtype!r}) or 'float32'")
  if logits_dtype(c) != "float32" and logits_grad_dtype(c) == "float32":
    raise UserError(f"--config.logits_grad_dtype=float32 needs --config.logits_dtype=float32: "
                    f"{logits_dtype(c)} logits have a {logits_dtype(c)} gradient")
  positive = ("num_layers", "num_heads", "num_kv_heads", "head_dim", "ffn_dim", "vocab_size",
              "per_device_batch_size", "seq_len", "steps", "repeats", "ffn_pad_multiple",
              "width_multiple", "fp8_amax_history")
  for field in positive:
    if c[field] <= 0:
      raise UserError(f"--config.{field} must be positive, got {c[field]}")
  if c.num_devices < 0:
    raise UserError(f"--config.num_devices must be >= 0 (0 = all), got {c.num_devices}")
  for field in ("device_memory_gb", "price_per_device_hour", "peak_tflops"):
    if c[field] < 0:  # 0 stands for "the device's own" or "the price table's"
      raise UserError(f"--config.{field} must be >= 0 (0: the default), got {c[field]}")
  if c.profile_steps < 0:
    raise UserError(f"--config.profile_steps must be >= 0, got {c.profile_steps}")
  if c.get("pgle_steps", 0) < 0:
    raise UserError(f"--config.pgle_steps must be >= 0, got {c.pgle_steps}")
  if c.get("pgle_steps", 0) and c.get("mode", "benchmark") != "benchmark":
    raise UserError("--config.pgle_steps applies to benchmark runs (--config.mode=benchmark); "
                    "a training run compiles its step once: set --config.pgle_steps=0")
  if c.warmup_steps < 0:
    raise UserError(f"--config.warmup_steps must be >= 0, got {c.warmup_steps}")
  if c.num_heads % c.num_kv_heads:
    raise UserError(f"--config.num_heads ({c.num_heads}) must be a multiple of "
                    f"--config.num_kv_heads ({c.num_kv_heads})")
  if c.head_dim % 2:
    raise UserError(f"--config.head_dim must be even for rotary embeddings, got {c.head_dim}")
  if c.cross_entropy not in CROSS_ENTROPY:
    raise UserError(f"--config.cross_entropy={c.cross_entropy!r} is not one of "
                    f"{list(CROSS_ENTROPY)}")
  if c.fp8_scaling not in FP8_SCALINGS:
    raise UserError(f"--config.fp8_scaling={c.fp8_scaling!r} is not one of "
                    f"{list(FP8_SCALINGS)}")
  if c.mode not in MODES:
    raise UserError(f"--config.mode={c.mode!r} is not one of {list(MODES)}")
  if c.mode == "train":
    _validate_training(c)
  xla_options(c)
  nccl_options(c)
  if c.gpu not in GPU_KEYS:
    raise UserError(f"--config.gpu={c.gpu!r} is not one of {sorted(GPU_KEYS)}")


def _validate_training(c: ml_collections.ConfigDict) -> None:
  if c.train_steps <= 0 and c.dollar_budget <= 0:
    raise UserError("--config.mode=train needs a budget: set --config.train_steps or "
                    "--config.dollar_budget")
  for field in ("train_steps", "dollar_budget", "eval_every", "checkpoint_every"):
    if c[field] < 0:
      raise UserError(f"--config.{field} must be >= 0, got {c[field]}")
  for field in ("keep_checkpoints", "eval_batches", "prefetch_batches"):
    if c[field] <= 0:
      raise UserError(f"--config.{field} must be positive, got {c[field]}")
  if c.eval_every and not 0 < c.eval_fraction < 1:
    raise UserError(f"--config.eval_fraction must be in (0, 1), got {c.eval_fraction}")
  if c.data_format not in DATA_FORMATS:
    raise UserError(f"--config.data_format={c.data_format!r} is not one of "
                    f"{list(DATA_FORMATS)}")
  # AdamW turns finite gradients into a NaN update only through these and the learning rate
  # (slm_jax.trainer checks that one each step).
  if not c.adam_eps > 0 or not 0 <= c.adam_b1 < 1 or not 0 <= c.adam_b2 < 1:
    raise UserError("training needs --config.adam_eps > 0 and 0 <= adam_b1, adam_b2 < 1, got "
                    f"{c.adam_eps}, {c.adam_b1}, {c.adam_b2}")
  if c.data_files and c.dataset:
    raise UserError("set --config.data_files or --config.dataset, not both")
