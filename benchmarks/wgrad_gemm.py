"""The paper models' weight-gradient GEMMs, one dot against a batched dot over token chunks.

PERF_NOTES.md sections 11-12. A projection's weight gradient x^T g contracts over every token
of the step into an output as small as the weight, and a GEMM's parallelism is its output
tiles: at 1B batch 64 these GEMMs ran slower in the step than the forward's (section 11).
Splitting the tokens into chunks gives a batched GEMM chunks times the tiles, at the cost of
summing chunks fp32 partial products. For each model's projection shapes (q/k/v/o:
d x d; gate/up: d x ffn; down: ffn x d, ffn padded as the model pads it) at that model's
benchmark batch, this times `weight_grad` with each of --chunks (1: the one dot autodiff
emits), the chunk counts alternated in --rounds on one device. One JSON line per (model, shape,
chunks, round) is appended to --out:

  python3 benchmarks/wgrad_gemm.py --out=F
  python3 benchmarks/wgrad_gemm.py --tiny --out=/tmp/w.jsonl   # seconds, on a CPU
"""

from __future__ import annotations

import json
import statistics
import sys

import jax
import jax.numpy as jnp
from absl import app, flags

from slm_jax import model as model_lib
from slm_jax import results
from slm_jax.tools.timing import time_calls

_OUT = flags.DEFINE_string("out", None, "JSONL file to append records to (none: print only).")
_MODELS = flags.DEFINE_list("models", ["500m:64", "1b:64", "2b:32"],
                            "model:batch pairs (sequences of --seq_len).")
_CHUNKS = flags.DEFINE_list("chunks", ["1", "2", "4", "8", "16"], "Token chunk counts.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 1024, "Tokens per sequence.")
_PAD = flags.DEFINE_integer("ffn_pad_multiple", 64, "As the model's config (default 64).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds; each times every chunk count once.")
_RUNS = flags.DEFINE_integer("runs", 10, "Timed runs per measurement; the median is reported.")
_INNER = flags.DEFINE_integer("inner", 10, "Back-to-back calls per timed run.")
_TINY = flags.DEFINE_bool("tiny", False, "A CPU smoke run: the tiny model, 2 x 64 tokens.")


def weight_grad(x: jax.Array, g: jax.Array, chunks: int) -> jax.Array:
  """x^T g over every leading axis of x [..., m] and g [..., n], as [m, n] in g's dtype.

  chunks > 1: the tokens in `chunks` equal runs (a reshape, no copy), each run's product
  accumulated in fp32 as one member of a batched GEMM, the runs summed in fp32 before the
  one rounding."""
  if chunks <= 1:
    axes = tuple(range(x.ndim - 1))
    return jax.lax.dot_general(x, g, ((axes, axes), ((), ())))
  tokens = x.size // x.shape[-1]
  xs = x.reshape(chunks, tokens // chunks, x.shape[-1])
  gs = g.reshape(chunks, tokens // chunks, g.shape[-1])
  parts = jax.lax.dot_general(xs, gs, (((1,), (1,)), ((0,), (0,))),
                              preferred_element_type=jnp.float32)
  return parts.sum(axis=0).astype(g.dtype)


def shapes(cfg: model_lib.ModelConfig, pad_multiple: int) -> dict[str, tuple[int, int]]:
  """{name: (m, n)} of x [tokens, m] and g [tokens, n] for each distinct weight gradient."""
  d, ffn = cfg.d_model, cfg.ffn_dim + -cfg.ffn_dim % max(pad_multiple, 1)
  out = {"qo": (d, d), "gate_up": (d, ffn), "down": (ffn, d)}
  if cfg.kv_heads != cfg.num_heads:
    out["kv"] = (d, cfg.kv_heads * cfg.head_dim)
  return out


def main(_):
  models = [("tiny", 2)] if _TINY.value else [
      (name, int(batch)) for name, batch in (m.split(":") for m in _MODELS.value)]
  seq = 64 if _TINY.value else _SEQ_LEN.value
  runs, inner = (2, 1) if _TINY.value else (_RUNS.value, _INNER.value)
  chunks = [int(c) for c in _CHUNKS.value]
  device = jax.devices()[0]
  common = dict(device_kind=device.device_kind, git_commit=results.git_commit(),
                versions=results.versions(device), seq_len=seq)
  fns = {c: jax.jit(lambda x, g, c=c: weight_grad(x, g, c)) for c in chunks}
  for name, batch in models:
    tokens = batch * seq
    for shape_name, (m, n) in shapes(model_lib.PRESETS[name], _PAD.value).items():
      kx, kg = jax.random.split(jax.random.key(0))
      x = jax.random.normal(kx, (batch, seq, m), jnp.bfloat16)
      g = jax.random.normal(kg, (batch, seq, n), jnp.bfloat16)
      ref = fns[chunks[0]](x, g).astype(jnp.float32)
      for r in range(_ROUNDS.value):
        for c in chunks:
          times, _ = time_calls(fns[c], (x, g), runs=runs, inner=inner, warmup=2)
          err = float(jnp.max(jnp.abs(fns[c](x, g).astype(jnp.float32) - ref)) /
                      jnp.max(jnp.abs(ref)))
          med = statistics.median(times)
          row = dict(common, model=name, batch=batch, shape=shape_name, m=m, n=n,
                     tokens=tokens, chunks=c, round=r, median_ms=med * 1e3,
                     min_ms=min(times) * 1e3, tflops=2 * tokens * m * n / med / 1e12,
                     max_rel_diff_vs_first=err, timestamp=results.utc_now())
          print(json.dumps({k: row[k] for k in ("model", "shape", "chunks", "round",
                                                "median_ms", "tflops")}), flush=True)
          if _OUT.value:
            results.append_line(_OUT.value, row)


if __name__ == "__main__":
  sys.exit(app.run(main))
