r"""Measures the Pallas attention's tiles on this GPU and writes the best into a tuning table.

  python -m slm_jax.tools.attention_tune --out slm_jax/attention/pallas_tuning.json
  python -m slm_jax.tools.attention_tune --head_dims=64,128 --seq_lens=1024 --out /tmp/table.json
  python -m slm_jax.tools.attention_tune --tiny --out /tmp/table.json   # seconds, on a CPU

For each head_dim x seq_len (causal, bf16, --heads heads, --batch sequences at the shortest
length and proportionally fewer at longer ones) each kernel, forward, dK/dV and dQ, is timed
alone over a small grid of (block_q, block_k, num_warps, num_stages) with the others fixed, the
table's current entry among the candidates so a re-tune never picks something slower than it
measured. A candidate Triton cannot compile (too much shared memory, say) is skipped. The best
per kernel is printed and, with --out, merged into that table (created from the shipped one)
under this GPU's name. Timing is timing.time_calls: median of --runs runs of --inner calls.
Without a GPU it stops: the kernels would run interpreted, for hours at these shapes, and time
nothing a GPU does. --tiny is a smoke test of this tool there (or anywhere), not a measurement.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import statistics
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from slm_jax import errors
from slm_jax.attention import pallas, pallas_tuning
from slm_jax.attention.pallas_tuning import KERNELS, Launch
from slm_jax.tools.timing import time_calls

# (block_q, block_k) per kernel: the forward and dQ kernels hold a query tile and stream keys,
# the dK/dV kernel the reverse, so their good shapes mirror each other.
TILES = {
    "fwd": [(64, 64), (128, 32), (128, 64), (128, 128)],
    "dkdv": [(32, 64), (32, 128), (64, 64), (64, 128)],
    "dq": [(64, 32), (64, 64), (128, 32), (128, 64)],
}
WARPS = (4, 8)
STAGES = {"fwd": (2, 3, 4), "dkdv": (2, 3), "dq": (2, 3)}

_OUT = flags.DEFINE_string("out", None, "Tuning table to merge the results into (created from "
                           "the shipped table if missing); none: print only.")
_HEAD_DIMS = flags.DEFINE_list("head_dims", ["64"], "Head dimensions to tune.")
_SEQ_LENS = flags.DEFINE_list("seq_lens", ["1024", "2048", "4096"], "Sequence lengths to tune.")
_HEADS = flags.DEFINE_integer("heads", 24, "Query heads of the tuning inputs.")
_BATCH = flags.DEFINE_integer("batch", 16, "Sequences at the shortest --seq_lens.")
_RUNS = flags.DEFINE_integer("runs", 20, "Timed runs per candidate; the median is compared.")
_INNER = flags.DEFINE_integer("inner", 5, "Back-to-back calls per timed run.")
_MAX_CANDIDATES = flags.DEFINE_integer("max_candidates", 0, "Candidates per kernel, the table's "
                                       "own first (0: all).")
_TINY = flags.DEFINE_bool("tiny", False, "A smoke run of this tool, on a CPU too: head_dim 16, "
                          "seq 64, 2 heads, batch 1, 1 run of 1 call, 2 candidates per kernel "
                          "(overrides those flags).")


def candidates(kernel: str, current: Launch, limit: int) -> list[Launch]:
  grid = [Launch(bq, bk, w, s) for (bq, bk), w, s in
          itertools.product(TILES[kernel], WARPS, STAGES[kernel])]
  out = [current] + [c for c in grid if c != current]
  return out[:limit] if limit else out


def tune_shape(device_kind: str, b: int, s: int, h: int, d: int, *, runs: int, inner: int,
               limit: int) -> dict:
  """The table entry for one shape: each kernel's fastest candidate."""
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v, do = (jax.random.normal(key, (b, s, h, d), jnp.bfloat16) for key in keys)
  current = pallas_tuning.lookup(device_kind, d, s).fit(s, s)
  fns = pallas.kernel_fns(causal=True, config=current, q_len=s, kv_len=s)
  out, lse = fns["fwd"](q, k, v)
  delta = fns["delta"](out, do)
  args = {"fwd": (q, k, v), "dkdv": (q, k, v, do, lse, delta), "dq": (q, k, v, do, lse, delta)}
  best, notes = {}, []
  for kernel in KERNELS:
    timed = []
    for cand in candidates(kernel, getattr(current, kernel), limit):
      config = dataclasses.replace(current, **{kernel: cand}).fit(s, s)
      fn = pallas.kernel_fns(causal=True, config=config, q_len=s, kv_len=s)[kernel]
      try:
        times, _ = time_calls(fn, args[kernel], runs=runs, inner=inner, warmup=2)
      except Exception as e:  # noqa: BLE001 - a candidate Triton rejects is skipped
        print(f"  {kernel} {cand}: skipped ({' '.join(str(e).split())[:120]})")
        continue
      timed.append((statistics.median(times), cand))
    if not timed:
      print(f"  {kernel}: no candidate compiled; keeping the table's {getattr(current, kernel)}")
      best[kernel] = getattr(current, kernel)
      continue
    ms_current = timed[0][0] * 1e3 if timed and timed[0][1] == getattr(current, kernel) else None
    ms, winner = min(timed, key=lambda t: t[0])
    best[kernel] = winner
    was = f" (table's {ms_current:.3f} ms)" if ms_current else ""
    print(f"  {kernel:>4}: {dataclasses.astuple(winner)} {ms * 1e3:.3f} ms{was}", flush=True)
    notes.append(f"{kernel} {ms * 1e3:.3f} ms")
  entry = {"gpu": pallas_tuning.gpu_key(device_kind), "head_dim": d, "seq_len": s,
           **pallas_tuning.KernelConfig(**best).to_json()}
  entry["source"] = (f"tune {datetime.date.today()} jax {jax.__version__} b{b} h{h}: "
                     + ", ".join(notes))
  return entry


def main(argv):
  errors.reject_positional(argv)
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    head_dims, seq_lens = [int(d) for d in _HEAD_DIMS.value], [int(s) for s in _SEQ_LENS.value]
  except ValueError as e:
    raise app.UsageError(f"--head_dims and --seq_lens take integers: {e}")
  heads, batch, runs, inner, limit = (_HEADS.value, _BATCH.value, _RUNS.value, _INNER.value,
                                      _MAX_CANDIDATES.value)
  if _TINY.value:
    head_dims, seq_lens, heads, batch, runs, inner, limit = [16], [64], 2, 1, 1, 1, 2
  elif jax.default_backend() != "gpu":
    print(f"error: no GPU here ({jax.default_backend()}): tuning times the kernels on a GPU; "
          "--tiny runs a smoke test of this tool", file=sys.stderr)
    sys.exit(2)
  device_kind = jax.devices()[0].device_kind
  if jax.default_backend() != "gpu":
    print("no GPU: the kernels run interpreted, so these timings say nothing about a GPU")
  entries = []
  for d, s in itertools.product(head_dims, seq_lens):
    b = max(1, batch * min(seq_lens) // s)
    print(f"{device_kind}: head_dim {d}, seq {s}, batch {b}, heads {heads}", flush=True)
    entries.append(tune_shape(device_kind, b, s, heads, d, runs=runs, inner=inner, limit=limit))
  if _OUT.value:
    out = Path(_OUT.value)
    existing = pallas_tuning.load_table(str(out if out.exists() else pallas_tuning.TABLE_PATH))
    pallas_tuning.save_table(pallas_tuning.merge(list(existing), entries), out)
    print(f"{len(entries)} entries for {entries[0]['gpu']!r} merged into {out}")


if __name__ == "__main__":
  app.run(main)
