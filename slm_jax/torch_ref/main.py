r"""Trains and measures one configuration on the PyTorch stack (the paper's); appends a record
with `stack: "torch"` to <workdir>/results.jsonl, beside slm_jax.main's records.

  python -m slm_jax.torch_ref.main --config=configs/1b_h100.py --workdir=runs/1b
  python -m slm_jax.torch_ref.main --config=configs/1b_h100.py --torch_attention=eager
  python -m slm_jax.torch_ref.main --config=configs/1b_h100.py --config.strategy=fsdp_full

The flags are slm_jax.main's (--config, --workdir, --tag, --dry_run) plus --torch_attention,
--torch_compile and --torch_fp8 (and the other --torch_* below). A strategy other than
`single` needs one process per device: started here through torchrun, on all GPUs or
--config.num_devices of them (on several hosts, start this module under torchrun yourself).
"""

import os

# JAX does only accounting here (the batch, the schedule, parameter counts), on the CPU, so it
# takes none of the GPU memory that torch is measured on.
os.environ["JAX_PLATFORMS"] = "cpu"

import subprocess
import sys
from pathlib import Path

from absl import app, flags

from slm_jax import config as config_lib
from slm_jax import main as jax_main  # its flags, progress lines and TensorBoard summary
from slm_jax import errors, results, torch_ref
from slm_jax import train as jax_train
from slm_jax import workdir as workdir_lib
from slm_jax.errors import UserError
from slm_jax import tensorboard_writer as tb
from slm_jax.tensorboard_writer import Writer

FLAGS = flags.FLAGS
_ATTENTION = flags.DEFINE_string(
    "torch_attention", "", "eager (vanilla: materialised scores) or sdpa (fused, flash on the "
    "GPU); default: the one matching --config.attention (xla: eager, cudnn: sdpa).")
_COMPILE = flags.DEFINE_bool("torch_compile", False, "Run the step through torch.compile "
                             "(the paper did not).")
_COMPILE_SCOPE = flags.DEFINE_string(
    "torch_compile_scope", "model+loss", "What torch.compile compiles: model+loss (one "
    "function from tokens to the loss: LM head, upcast and cross-entropy fused, their backward "
    "compiled), model (the module alone, the loss eager) or layers+loss (each decoder layer, "
    "and the upcast and cross-entropy apart: what the FSDP strategies run, as torchtitan).")
_COMPILE_MODE = flags.DEFINE_string(
    "torch_compile_mode", "default", "torch.compile's mode: default, max-autotune-no-cudagraphs, "
    "max-autotune or reduce-overhead.")
_FP8 = flags.DEFINE_bool("torch_fp8", None, "The decoder's projections as torchao float8 "
                         "training (torchao.float8); default: as --config.fp8.")
_SDPA_BACKEND = flags.DEFINE_string(
    "torch_sdpa_backend", "auto", "SDPA kernel for sdpa attention: auto (the fastest of flash, "
    "cudnn and efficient, measured at start-up on the model's attention shape), flash, cudnn, "
    "efficient or math.")
_CONFIG = None


def _define_config_flag():
  global _CONFIG
  _CONFIG = jax_main.define_config_flag(str(Path(__file__).with_name("default_config.py")))


def rank() -> int:
  return int(os.environ.get("RANK", "0"))


def device_info() -> results.DeviceInfo:
  import torch

  if torch.cuda.is_available():
    local = int(os.environ.get("LOCAL_RANK", "0"))
    # A process started past the node's GPUs names GPU 0 in its error record.
    return results.DeviceInfo(
        torch.cuda.get_device_name(local if local < torch.cuda.device_count() else 0), "gpu")
  return results.DeviceInfo("cpu", "cpu")


def versions(info: results.DeviceInfo) -> dict:
  import torch
  import transformers

  out = results.versions(info)  # python and the JAX side's packages (they do the accounting)
  out.update(torch=torch.__version__, transformers=transformers.__version__,
             platform_version=f"cuda {torch.version.cuda}" if torch.cuda.is_available() else None)
  if torch.cuda.is_available():
    out["cudnn"] = torch.backends.cudnn.version()
    try:
      out["nccl"] = ".".join(str(v) for v in torch.cuda.nccl.version())
    except Exception:  # a build without NCCL; the record matters more than this field
      out["nccl"] = None
  return out


def setup_from_flags(attention: str):
  from slm_jax.torch_ref import train as torch_train

  return torch_train.TorchSetup(attention=attention, compile=_COMPILE.value,
                                compile_scope=_COMPILE_SCOPE.value,
                                compile_mode=_COMPILE_MODE.value,
                                sdpa_backend=_SDPA_BACKEND.value)


def execute(c, workdir: Path, *, setup, dry_run: bool,
            tag: str | None = None, fp8: bool | None = None) -> tuple[dict, int]:
  """Runs `c` on torch and writes its record (rank 0 only); returns (record, exit code).

  Statuses and exit codes are slm_jax.main's: oom is a result (0), a config that cannot run
  is an error (2), an internal failure keeps its traceback in <workdir>/errors (1)."""
  from slm_jax.torch_ref import train as torch_train

  c = torch_train.torch_config(c, setup.attention, fp8)
  writes = rank() == 0
  writer, run_id = None, results.new_run_id()
  progress = jax_main.Progress(c, None) if writes else (lambda *a: None)
  status, message, measured, code = "ok", "", {}, 0
  try:
    if c.tensorboard and not dry_run and writes:
      logdir, tb_name = jax_main.tensorboard_dir(c, workdir, tag, run_id,
                                                 torch_train.device_count(c))
      writer = Writer(logdir)
      progress = jax_main.Progress(c, writer)
    torch_train.run(c, setup=setup, dry_run=dry_run, on_step=progress, out=measured)
    status = "dry_run" if dry_run else "ok"
  except jax_train.OutOfMemory as e:
    status, message = "oom", (f"does not fit: {str(e).splitlines()[0]}; try a smaller "
                              "--config.per_device_batch_size or another strategy")
  except UserError as e:
    status, message, code = "error", str(e), 2
  except Exception as e:  # an internal failure: keep the record, point at the traceback
    log = jax_main.error_log(workdir, f"{run_id}-torch-{os.getpid()}")
    status, code = "error", 1
    message = (f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
               + (f" (traceback: {log})" if log else ""))
  if hasattr(progress, "done"):
    progress.done()
  info = device_info()
  measured["versions"] = versions(info)
  record = results.make_record(c, status=status, message=message, measured=measured,
                               devices=[info], tag=tag, run_id=run_id, stack="torch")
  if writes:
    results.append(workdir / "results.jsonl", record)
  if writer:
    tb.write_record(writer, record, tb_name)
  return record, code


def launch(num_processes: int) -> int:
  """Runs this same command in `num_processes` processes through torchrun; their exit code."""
  cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={num_processes}", "-m", "slm_jax.torch_ref.main", *sys.argv[1:]]
  return subprocess.run(cmd).returncode


def main(argv):
  errors.reject_positional(argv)
  jax_main.set_campaign()
  c = jax_main.loaded_config(_CONFIG)
  from slm_jax.torch_ref import train as torch_train

  workdir = Path(FLAGS.workdir)
  try:
    workdir_lib.prepare(workdir)
    if FLAGS.coordinator_address:
      raise UserError("--coordinator_address is for JAX runs; start torch on several hosts "
                      "with torchrun (--nnodes, --rdzv-endpoint) around this module")
    config_lib.validate(c)
    config_lib.apply_nccl_options(c)  # torchrun's processes inherit them
    attention = torch_ref.attention_for(c.attention, _ATTENTION.value)
    setup = setup_from_flags(attention)
    setup.check()  # here, not once in each process torchrun would start
    if c.strategy != "single" and "RANK" not in os.environ and not FLAGS.dry_run:
      sys.exit(launch(torch_train.device_count(c)))
    record, code = execute(c, workdir, setup=setup, dry_run=FLAGS.dry_run, tag=FLAGS.tag,
                           fp8=_FP8.value)
  except UserError as e:  # the config itself is wrong: nothing was run or written
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  jax_main.print_outcome(record, workdir, rank() == 0)
  sys.exit(code)


if __name__ == "__main__":
  try:
    torch_ref.require()
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  _define_config_flag()
  app.run(main, flags_parser=jax_main._parse_flags)
