r"""Times attention implementations, forward, backward and both, at the paper's shapes.

  python -m slm_jax.tools.attention_bench --out benchmarks/attention_h200.jsonl
  python -m slm_jax.tools.attention_bench --impls=pallas,cudnn --seq_lens=1024 --batch=16
  python -m slm_jax.tools.attention_bench --tiny --out /tmp/attention.jsonl   # seconds, on a CPU

Shapes: head_dim 64, causal, bf16, each of --heads at each of --seq_lens, with --batch
sequences at the shortest length and proportionally fewer at longer ones (constant tokens).
Each (impl, shape, pass) is the median over --runs timed runs of --inner back-to-back calls of
one jitted function (after compiling and warm-up), wall clock to block_until_ready. TFLOP/s
counts causal attention: forward 4*b*h*s*s*d/2 (QK^T and PV, half skipped), backward 2.5x
that (FlashAttention-2's count), forward+backward 3.5x. One JSON line per (impl, shape, pass) is
appended to --out; an impl that cannot run there records its status and the rest go on.
"""

from __future__ import annotations

import datetime
import json
import statistics
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from slm_jax import errors, results
from slm_jax.attention import attend, pallas_tuning
from slm_jax.errors import UserError
from slm_jax.tools.timing import time_calls
from slm_jax.train import is_oom

PASSES = {"fwd": 1.0, "bwd": 2.5, "fwd_bwd": 3.5}  # FLOPs as multiples of the forward's

_OUT = flags.DEFINE_string("out", None, "JSONL file to append records to (none: print only).")
_IMPLS = flags.DEFINE_list("impls", ["pallas", "cudnn", "xla"], "Implementations to time.")
_HEADS = flags.DEFINE_list("heads", ["13", "24", "30", "39"],
                           "Query heads (the paper's 100M, 500M, 1B, 2B models).")
_KV_HEADS = flags.DEFINE_integer("kv_heads", 0, "KV heads (0: as many as query heads).")
_SEQ_LENS = flags.DEFINE_list("seq_lens", ["1024", "2048", "4096"], "Sequence lengths.")
_BATCH = flags.DEFINE_integer("batch", 16, "Sequences at the shortest --seq_lens; longer ones "
                              "get proportionally fewer, at least 1.")
_HEAD_DIM = flags.DEFINE_integer("head_dim", 64, "Head dimension.")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float16", "float32"],
                           "Input dtype.")
_PASSES = flags.DEFINE_list("passes", list(PASSES), "Passes to time: fwd, bwd, fwd_bwd.")
_RUNS = flags.DEFINE_integer("runs", 50, "Timed runs per measurement; the median is reported.")
_INNER = flags.DEFINE_integer("inner", 5, "Back-to-back calls per timed run.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls after compiling.")
_TINY = flags.DEFINE_bool("tiny", False, "A CPU smoke run: batch 1, 2 heads, seq 64, head_dim "
                          "16, 2 runs of 1 call (overrides those flags).")


def forward_flops(batch: int, heads: int, seq: int, head_dim: int) -> float:
  return 4 * batch * heads * seq * seq * head_dim / 2


def pass_functions(impl: str):
  """Jitted (fn, make_args) per pass; make_args(q, k, v, do) builds the timed call's inputs."""
  def fwd(q, k, v):
    return attend(q, k, v, causal=True, impl=impl)

  def fwd_bwd(q, k, v, do):
    out, vjp = jax.vjp(fwd, q, k, v)
    return out, vjp(do)

  vjp_of = jax.jit(lambda q, k, v: jax.vjp(fwd, q, k, v)[1])
  return {
      "fwd": (jax.jit(fwd), lambda q, k, v, do: (q, k, v)),
      # The backward alone: the residuals are computed once, outside the timed calls.
      "bwd": (jax.jit(lambda vjp, do: vjp(do)), lambda q, k, v, do: (vjp_of(q, k, v), do)),
      "fwd_bwd": (jax.jit(fwd_bwd), lambda q, k, v, do: (q, k, v, do)),
  }


def measure(impl: str, shape: dict, passes, *, runs, inner, warmup) -> list[dict]:
  b, s, h, hkv, d = (shape[key] for key in ("batch", "seq_len", "heads", "kv_heads", "head_dim"))
  keys = jax.random.split(jax.random.key(0), 4)
  dtype = jnp.dtype(shape["dtype"])
  q = jax.random.normal(keys[0], (b, s, h, d), dtype)
  k, v = (jax.random.normal(key, (b, s, hkv, d), dtype) for key in keys[1:3])
  do = jax.random.normal(keys[3], (b, s, h, d), dtype)
  fns = pass_functions(impl)
  records = []
  for name in passes:
    record = {**shape, "impl": impl, "pass": name, "status": "ok", "message": ""}
    try:
      fn, make_args = fns[name]
      times, record["compile_s"] = time_calls(fn, make_args(q, k, v, do), runs=runs,
                                              inner=inner, warmup=warmup)
    except UserError as e:
      record.update(status="unsupported", message=str(e))
    except Exception as e:  # noqa: BLE001 - one failing kernel must not end the benchmark
      record.update(status="oom" if is_oom(e) else "error",
                    message=" ".join(str(e).split())[:500])
    else:
      flops = forward_flops(b, h, s, d) * PASSES[name]
      median = statistics.median(times)
      record.update(median_ms=median * 1e3, min_ms=min(times) * 1e3, max_ms=max(times) * 1e3,
                    runs=runs, inner=inner, flops=flops, tflops=flops / median / 1e12)
    if impl == "pallas":
      record["pallas_config"] = pallas_tuning.lookup(jax.devices()[0].device_kind, d, s).to_json()
    records.append(record)
    print(_line(record), flush=True)
  return records


def shapes(heads, seq_lens, batch, head_dim, kv_heads, dtype) -> list[dict]:
  shortest = min(seq_lens)
  return [{"batch": max(1, batch * shortest // s), "seq_len": s, "heads": h,
           "kv_heads": kv_heads or h, "head_dim": head_dim, "dtype": dtype, "causal": True}
          for s in seq_lens for h in heads]


def _line(r: dict) -> str:
  shape = f"b{r['batch']} s{r['seq_len']} h{r['heads']}/{r['kv_heads']} d{r['head_dim']}"
  result = (f"{r['median_ms']:9.3f} ms {r['tflops']:7.1f} TFLOP/s" if r["status"] == "ok"
            else f"{r['status']}: {r['message'][:80]}")
  return f"{r['impl']:>7} {r['pass']:>8} {shape:<24} {result}"


def table(records: list[dict]) -> str:
  """Markdown: one row per (shape, pass), each impl's ms and TFLOP/s, pallas vs cudnn."""
  impls = list(dict.fromkeys(r["impl"] for r in records))
  by_key = {}
  for r in records:
    key = (r["batch"], r["seq_len"], r["heads"], r["kv_heads"], r["head_dim"], r["pass"])
    by_key.setdefault(key, {})[r["impl"]] = r
  head = ["b", "s", "h", "d", "pass", *(f"{i} ms (TFLOP/s)" for i in impls),
          "pallas speed vs cudnn"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for (b, s, h, _, d, name), row in by_key.items():
    cells = [str(b), str(s), str(h), str(d), name]
    for impl in impls:
      r = row.get(impl)
      cells.append("-" if r is None else f"{r['median_ms']:.3f} ({r['tflops']:.0f})"
                   if r["status"] == "ok" else r["status"])
    ok = [row.get(i, {}).get("status") == "ok" for i in ("pallas", "cudnn")]
    cells.append(f"{row['cudnn']['median_ms'] / row['pallas']['median_ms']:.2f}x"
                 if all(ok) else "-")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def context() -> dict:
  """Where and with what the numbers were taken, shared by every record of a run."""
  device = jax.devices()[0]
  versions = results.versions(device)
  return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "git_commit": results.git_commit(), "jax": versions["jax"],
          "jaxlib": versions["jaxlib"], "platform_version": versions["platform_version"],
          "device_kind": device.device_kind, "platform": device.platform}


def _check_out(path: Path) -> None:
  """Before any kernel runs: a path records cannot be appended to would otherwise fail only
  after the first measurement."""
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    _out_error(path, f"cannot make its folder {path.parent} ({e.strerror})")
  try:
    with path.open("a"):
      pass
  except OSError as e:
    _out_error(path, f"cannot append to it ({e.strerror})")


def _out_error(path: Path, why: str) -> None:
  print(f"error: --out={path}: {why}; name a JSONL file in a folder that exists or can be made",
        file=sys.stderr)
  sys.exit(2)


def main(argv):
  errors.reject_positional(argv)
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep JAX's start-up chatter off the table
  try:
    heads, seq_lens = [int(h) for h in _HEADS.value], [int(s) for s in _SEQ_LENS.value]
  except ValueError as e:
    raise app.UsageError(f"--heads and --seq_lens take integers: {e}")
  batch, head_dim, runs, inner = _BATCH.value, _HEAD_DIM.value, _RUNS.value, _INNER.value
  if _TINY.value:
    heads, seq_lens, batch, head_dim, runs, inner = [2], [64], 1, 16, 2, 1
  unknown = set(_PASSES.value) - set(PASSES)
  if unknown:
    raise app.UsageError(f"--passes: {sorted(unknown)} not in {list(PASSES)}")
  if _OUT.value:
    _check_out(Path(_OUT.value))
  ctx = context()
  print(f"{ctx['device_kind']} ({ctx['platform']}), jax {ctx['jax']}, commit {ctx['git_commit']}")
  records = []
  for shape in shapes(heads, seq_lens, batch, head_dim, _KV_HEADS.value, _DTYPE.value):
    for impl in _IMPLS.value:
      new = [{**ctx, **r} for r in measure(impl, shape, _PASSES.value, runs=runs, inner=inner,
                                            warmup=0 if _TINY.value else _WARMUP.value)]
      if _OUT.value:
        with open(_OUT.value, "a") as f:  # as it goes: a crash keeps what was measured
          f.writelines(json.dumps(r) + "\n" for r in new)
      records += new
  print("\n" + table(records))
  if _OUT.value:
    print(f"\n{len(records)} records appended to {_OUT.value}")
  sys.exit(0 if all(r["status"] != "error" for r in records) else 1)


if __name__ == "__main__":
  app.run(main)
