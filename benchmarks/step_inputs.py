"""Does where the step's inputs live change how long it takes? Issue 8's open question.

The training loop's step was 3.5-4.2 ms slower than the synthetic benchmark of the same config
(h200_loss_dollar.jsonl). The two differ in what they hand the step: the benchmark one batch
buffer for every step; the trainer a new batch buffer and a new `healthy` flag each step. XLA
runs the step as CUDA graphs, and a graph whose buffers moved is updated before its launch.
This times the same compiled step with each way of feeding it, the ways alternated in rounds
on one device, and writes one JSON line per (way, round) to --out:

  python3 benchmarks/step_inputs.py --config=configs/100m_h200_train.py --out=step_inputs.jsonl

Ways: `same` (one batch, as the benchmark), `rotate` (as many device batches as the trainer
prefetches, in turn), `fresh` (each batch placed from the host just before its step, as the
trainer), `stable` (fresh, then copied into one donated buffer: its address never moves);
each for the plain step and for the trainer's guarded step, and with XLA's command buffers
(CUDA graphs) off for the step (`-nographs`).
"""

from __future__ import annotations

import datetime
import json
import statistics
import sys

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from slm_jax import data, measure, results, sharding, train, trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=False)
_OUT = flags.DEFINE_string("out", "step_inputs.jsonl", "JSONL file the timings go to.")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps per way and round.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds; each times every way once, in turn.")

NO_GRAPHS = {"xla_gpu_enable_command_buffer": ""}


def main(_):
  c = _CONFIG.value
  program = train.build(c)
  batch_sh = program.abstract_batch["inputs"].sharding
  rng = np.random.default_rng(0)
  shape = program.abstract_batch["inputs"].shape

  def host_batch():
    tokens = rng.integers(0, c.vocab_size, (shape[0], shape[1] + 1), dtype=np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}

  def compiled(guarded: bool, graphs: bool):
    options = None if graphs else NO_GRAPHS
    if guarded:
      return trainer.guarded_step(c, program, compiler_options=options)
    lowered = program.step.lower(program.abstract_state, program.abstract_batch)
    return lowered.compile(compiler_options=options)

  steps = {(g, graphs): compiled(g, graphs) for g in (False, True) for graphs in (True, False)}
  fixed = data.to_device(host_batch(), batch_sh)
  ring = [data.to_device(host_batch(), batch_sh) for _ in range(c.prefetch_batches + 2)]
  healthy = jax.device_put(np.bool_(True), sharding.replicated(program.mesh))
  state = program.init(jax.random.key(0))

  def feeder(way):
    if way == "same":
      return lambda i: fixed
    if way == "rotate":
      return lambda i: ring[i % len(ring)]
    if way == "fresh":
      return lambda i: data.to_device(host_batch(), batch_sh)
    stable = data.StableBuffer()
    return lambda i: stable(data.to_device(host_batch(), batch_sh))

  ways = [(g, graphs, way) for g in (False, True) for graphs in (True, False)
          for way in ("same", "rotate", "fresh", "stable")]
  for r in range(_ROUNDS.value):
    for guarded, graphs, way in ways:
      step, feed = steps[(guarded, graphs)], feeder(way)
      if guarded:
        def run(s, i, step=step, feed=feed):
          nonlocal healthy
          s, healthy, m = step(s, feed(i), healthy)
          return s, m
      else:
        def run(s, i, step=step, feed=feed):
          return step(s, feed(i))
      counter = iter(range(1 << 30))
      state, times, _ = measure.time_steps(lambda s, _b: run(s, next(counter)), state, None,
                                           _STEPS.value + 5, lambda *a: None)
      times = times[5:]  # the first steps after a switch pay for the other way's graphs
      name = f"{'guarded' if guarded else 'plain'}/{way}{'' if graphs else '-nographs'}"
      row = dict(way=name, round=r, median_ms=statistics.median(times) * 1e3,
                 min_ms=min(times) * 1e3, steps=len(times), model=c.model,
                 per_device_batch=c.per_device_batch_size, device_kind=jax.devices()[0].device_kind,
                 git_commit=results.git_commit(), versions=results.versions(),
                 timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(
                     timespec="seconds"))
      print(json.dumps({k: row[k] for k in ("way", "round", "median_ms", "min_ms")}),
            flush=True)
      with open(_OUT.value, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  sys.exit(app.run(main))
