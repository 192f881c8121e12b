r"""Measures one config on both stacks on this machine, ours (JAX) and the paper's (PyTorch +
HuggingFace, slm_jax.torch_ref), and prints how they compare.

  python -m slm_jax.compare --config=configs/1b_h100.py
  python -m slm_jax.compare --config=configs/1b_h100.py --torch_attention=eager,sdpa \
      --torch_compile=false,true --config.per_device_batch_size=8
  python -m slm_jax.compare --config=configs/1b_h100.py --batches=16,32,64   # each at its best

A number for one stack says little without the other's from the same machine. Both stacks run
the same config (model, batch, strategy, dtypes, optimizer), the same tokens, the same timing
method, FLOPs formula and price table; torch's attention is the one matching
--config.attention (xla: eager, cudnn: sdpa) unless --torch_attention says otherwise. Each
measurement is its own process, one after another, so none holds memory another needs; all
append to <workdir>/results.jsonl (default runs/compare; tagged <--tag or compare/id>/jax and
.../torch-<attention>[-compile], plus /b<batch> with --batches) and the table is read from
there; with --batches each stack variant runs at every batch and its row is its best, so each
stack is compared at the batch that suits it (torch's eager attention, say, runs out of memory
where JAX's fits). --dry_run compares what
each stack builds (parameters, FLOPs) without training. Exit code 0 when every run gave a
result (ok or oom), 1 otherwise, 2 for a config that cannot run.
"""

import os

# Children get the environment as it was; this process reads configs and records only.
_CHILD_ENV = dict(os.environ)
os.environ["JAX_PLATFORMS"] = "cpu"

import subprocess
import sys

from absl import app, flags
from ml_collections import config_flags

from slm_jax import config as config_lib
from slm_jax import main as jax_main  # its flags (--workdir, --tag, --dry_run), one-line errors
from slm_jax import errors, results, torch_ref
from slm_jax import workdir as workdir_lib
from slm_jax.errors import UserError

FLAGS = flags.FLAGS
_CONFIG = None
_ATTENTION = flags.DEFINE_list(
    "torch_attention", [], f"Torch attentions to run, from {list(torch_ref.ATTENTION)}; "
    "default: the one matching --config.attention.")
_COMPILE = flags.DEFINE_list("torch_compile", ["false"], "torch.compile for the torch runs: "
                             "false, true, or false,true for both.")
_FP8 = flags.DEFINE_list("torch_fp8", [], "torchao float8 training for the torch runs: false, "
                         "true, or false,true for both; default: as --config.fp8 (like for like).")

_SDPA_BACKEND = flags.DEFINE_string(
    "torch_sdpa_backend", "auto", "Passed to the torch runs: auto (the fastest fused SDPA "
    "kernel, measured), flash, cudnn, efficient or math.")
_COMPILE_SCOPE = flags.DEFINE_string(
    "torch_compile_scope", "model+loss", "Passed to the torch runs: model+loss, model or "
    "layers+loss (FSDP strategies run layers+loss for model+loss).")
_COMPILE_MODE = flags.DEFINE_string(
    "torch_compile_mode", "default", "Passed to the torch runs: torch.compile's mode.")

_BATCHES = flags.DEFINE_list("batches", [], "Per-device batches to measure every run at, e.g. "
                             "16,32,64; each stack's row is then its best batch (default: the "
                             "config's only).")

_BOOLS = {"false": False, "off": False, "0": False, "true": True, "on": True, "1": True}

COLUMNS = (
    ("stack", "stack", "{}"), ("attention", "attention", "{}"), ("compiler", "compiler", "{}"),
    ("status", "status", "{}"), ("per_device_batch", "batch/dev", "{}"),
    ("params", "params", "{:,}"),
    ("step_time_s.median", "step ms (median)", "{:.1f}", 1e3),
    ("tokens_per_s", "tokens/s", "{:,.0f}"), ("mfu", "MFU %", "{:.1f}", 100),
    ("peak_memory_bytes", "peak GiB", "{:.1f}", 2**-30), ("compile_s", "compile s", "{:.1f}"),
    ("token_per_dollar", "Token/$", "{:,.0f}"), ("final_loss", "final loss", "{:.4f}"),
    ("torch_sdpa_backend", "SDPA kernel", "{}"), ("torch_compile_scope", "compiled", "{}"),
    ("fp8", "fp8", "{}"), ("jax_speedup", "JAX speed-up", "{:.2f}x"))


def _define_config_flag():
  """Defines --config; config_flags applies the --config.FIELD overrides in sys.argv here."""
  global _CONFIG
  _CONFIG = jax_main.define_config_flag(
      None, "Config file (configs/*.py); fields can be overridden with --config.FIELD=VALUE "
      "and are passed on to both stacks.")


def config_args() -> list[str]:
  """--config and its overrides as given, for the two stacks' own command lines."""
  out = [f"--config={config_flags.get_config_filename(flags.FLAGS['config'])}"]
  for key, value in config_flags.get_override_values(flags.FLAGS["config"]).items():
    out.append(f"--config.{key}={str(value).lower() if isinstance(value, bool) else value}")
  return out


def runs(c, tag: str) -> list[dict]:
  """Every measurement to make: JAX once, then each torch attention x compile x fp8 setting."""
  attentions = [torch_ref.attention_for(c.attention, a) for a in _ATTENTION.value or [""]]
  compiles, fp8s = [], []
  for flag, values, out in (("torch_compile", _COMPILE.value, compiles),
                            ("torch_fp8", _FP8.value or [str(c.fp8)], fp8s)):
    for value in values:
      if value.lower() not in _BOOLS:
        raise UserError(f"--{flag}={value!r}: say false, true or false,true")
      out.append(_BOOLS[value.lower()])
  try:
    batches = [int(b) for b in _BATCHES.value]
  except ValueError:
    raise UserError(f"--batches={','.join(_BATCHES.value)}: say per-device batches, e.g. 16,32")
  # fp8: "off", or the scaling that picks the scales (torchao's float8 is current scaling).
  variants = [{"stack": "jax", "attention": c.attention, "compiler": "XLA", "tag": f"{tag}/jax",
               "fp8": c.fp8_scaling if c.fp8 else "off", "module": "slm_jax.main", "args": []}]
  for attention in dict.fromkeys(attentions):
    for compile in dict.fromkeys(compiles):
      for fp8 in dict.fromkeys(fp8s):
        compiler = "torch.compile" if compile else "none"
        variants.append({"stack": "torch", "attention": attention, "compiler": compiler,
                         "fp8": "current" if fp8 else "off",
                         "tag": (f"{tag}/torch-{attention}" + ("-compile" if compile else "")
                                 + ("-fp8" if fp8 else "")),
                         "module": "slm_jax.torch_ref.main",
                         "args": [f"--torch_attention={attention}",
                                  f"--torch_compile={str(compile).lower()}",
                                  f"--torch_fp8={str(fp8).lower()}",
                                  f"--torch_sdpa_backend={_SDPA_BACKEND.value}",
                                  f"--torch_compile_scope={_COMPILE_SCOPE.value}",
                                  f"--torch_compile_mode={_COMPILE_MODE.value}"]})
  if not batches:
    return variants
  # Given last, the batch overrides any --config.per_device_batch_size before it.
  return [dict(v, tag=f"{v['tag']}/b{b}", args=v["args"] + [f"--config.per_device_batch_size={b}"])
          for v in variants for b in batches]


def best_per_variant(rows: list[dict]) -> list[dict]:
  """One row per (stack, attention, compiler, fp8): its fastest ok batch, else its first
  result."""
  out: dict[tuple, dict] = {}
  for row in rows:
    key = (row["stack"], row["attention"], row["compiler"], row.get("fp8"))
    held = out.get(key)
    faster = (row.get("status") == "ok" and
              (held is None or held.get("status") != "ok" or
               row.get("tokens_per_s", 0) > held.get("tokens_per_s", 0)))
    if held is None or faster:
      out[key] = row
  return list(out.values())


def table(rows: list[dict]) -> str:
  """The ratio table: JAX speed-up is JAX's tokens/s over the row's (same devices and price,
  so it is the Token/Dollar ratio too)."""
  jax_tps = rows[0].get("tokens_per_s") if rows[0].get("status") == "ok" else None
  for row in rows:
    tps = row.get("tokens_per_s")
    row["jax_speedup"] = jax_tps / tps if jax_tps and tps and row.get("status") == "ok" else None
  lines = [results.markdown_table(rows, COLUMNS)]
  params = {row["params"] for row in rows if row.get("params")}
  if len(params) > 1:
    lines.append(f"warning: the stacks' models differ in size: {sorted(params)} parameters")
  for row in rows[1:]:
    if row["jax_speedup"]:
      lines.append(f"JAX ({rows[0]['attention']}) / torch ({row['attention']}, compiler "
                   f"{row['compiler']}): {row['jax_speedup']:.2f}x the tokens/s and Token/Dollar")
  return "\n".join(lines)


def main(argv):
  errors.reject_positional(argv)
  if FLAGS.coordinator_address:
    raise UserError("slm_jax.compare runs on one host; --coordinator_address is for slm_jax.main")
  if _CONFIG.value is None:
    raise UserError("--config is required, e.g. --config=configs/1b_h100.py")
  c = _CONFIG.value
  config_lib.validate(c)
  torch_ref.require()
  # Both stacks' records share one campaign: the one given, else the commit.
  _CHILD_ENV[results.CAMPAIGN_ENV] = FLAGS.campaign or results.campaign()
  workdir = workdir_lib.prepare(FLAGS.workdir)
  tag = FLAGS.tag or f"compare/{results.new_run_id()}"
  todo = runs(c, tag)
  path = workdir / "results.jsonl"
  before = len(results.read(path)) if path.exists() else 0  # a reused --tag: only new records
  codes = {}
  for run in todo:
    print(f"== {run['stack']}: attention {run['attention']}, compiler {run['compiler']}",
          flush=True)
    cmd = [sys.executable, "-m", run["module"], *config_args(), f"--workdir={workdir}",
           f"--tag={run['tag']}", *run["args"], *(["--dry_run"] if FLAGS.dry_run else [])]
    codes[run["tag"]] = subprocess.run(cmd, env=_CHILD_ENV).returncode
  found = {r.get("tag"): r for r in (results.read(path)[before:] if path.exists() else [])}
  rows = []
  for run in todo:
    row = found.get(run["tag"]) or {"status": f"no record (exit code {codes[run['tag']]})"}
    rows.append({**row, **{k: run[k] for k in ("stack", "attention", "compiler", "fp8")}})
  every = rows
  rows = best_per_variant(rows)
  batch = (f"best of batches {','.join(_BATCHES.value)}/device" if _BATCHES.value
           else f"batch {c.per_device_batch_size}/device")
  print(f"\n{c.model} on {rows[0].get('device_kind') or rows[-1].get('device_kind') or '?'}, "
        f"{c.strategy}, {batch}, seq {c.seq_len} "
        f"(records in {path}, tags {tag}/...)\n")
  print(table(rows))
  done = ("dry_run",) if FLAGS.dry_run else ("ok", "oom")
  return 0 if all(row["status"] in done for row in every) else 1


def _main(argv):
  try:
    sys.exit(main(argv))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  _define_config_flag()
  FLAGS.set_default("workdir", "runs/compare")
  app.run(_main, flags_parser=jax_main._parse_flags)
