"""Does what the step is fed change how long it takes?

The training loop's step was slower than the synthetic benchmark of the same config
(h200_loss_dollar.jsonl, PERF_NOTES.md section 3). This times one compiled step fed in
different ways, the ways alternated in rounds on one device, and writes one JSON line per
(way, round) to --out:

  python3 benchmarks/step_inputs.py --config=configs/100m_h200_train.py --workdir=W --out=F

Ways, for the plain step and the trainer's guarded one: `uniform` (the benchmark's tokens:
uniform over the vocabulary) or `text` (the trainer's: windows of the config's corpus, through
its tokenizer, cached in --workdir as the trainer caches it); `same` (one batch for every
step, as the benchmark) or `fresh` (each placed from the host before its step, as the
trainer); `-nographs` with XLA's command buffers (CUDA graphs) off for the step. Then the
embedding lookup's backward alone (`embed-grad/<table dtype>/<tokens>`), the scatter-add of
every token's row into the table, with the model's table in bf16 and fp32.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from slm_jax import config as config_lib
from slm_jax import data, measure, results, sharding, tokenizer, train, trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", "step_inputs", "Where the corpus's tokenizer is cached.")
_OUT = flags.DEFINE_string("out", "step_inputs.jsonl", "JSONL file the timings go to.")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps per way and round.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds; each times every way once, in turn.")
_GRAPHS_OFF = flags.DEFINE_bool("graphs_off", False, "Also time each way without CUDA graphs.")

NO_GRAPHS = "xla_gpu_enable_command_buffer="


def token_sources(c, program):
  """{name: () -> host batch}: the benchmark's uniform tokens and the trainer's text."""
  shape = program.abstract_batch["inputs"].shape
  rng = np.random.default_rng(0)

  def uniform():
    tokens = rng.integers(0, c.vocab_size, (shape[0], shape[1] + 1), dtype=np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}

  tok, _ = trainer.load_tokenizer(c, Path(_WORKDIR.value))
  text = itertools.cycle(trainer.text_batches(
      c, tokenizer.CachedEncoder(tok), tokenizer.eos_id(tok), "train", data.Position(),
      shape[0]))  # cycled: a few hundred batches cover the timed steps
  return {"uniform": uniform, "text": lambda: next(text)[0]}


def time_embed_grad(c, ids: np.ndarray, dtype) -> float:
  """Median seconds of the lookup's backward: a [tokens, d_model] gradient scattered into a
  [vocab, d_model] table of `dtype` (as the model's lookup differentiates)."""
  table = jnp.zeros((c.vocab_size, config_lib.model_config(c).d_model), jnp.float32)
  ids = jnp.asarray(ids)
  cot = jnp.ones(ids.shape + table.shape[1:], jnp.bfloat16)

  @jax.jit
  def grad(table, ids, cot):
    _, vjp = jax.vjp(lambda t: jnp.take(t.astype(dtype), ids, axis=0).astype(jnp.bfloat16),
                     table)
    return vjp(cot)[0]

  jax.block_until_ready(grad(table, ids, cot))
  times = []
  for _ in range(30):
    t0 = time.perf_counter()
    for _ in range(10):
      out = grad(table, ids, cot)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - t0) / 10)
  return statistics.median(times)


def main(_):
  c = _CONFIG.value
  program = train.build(c)
  batch_sh = program.abstract_batch["inputs"].sharding
  sources = token_sources(c, program)
  graphs = (True, False) if _GRAPHS_OFF.value else (True,)

  def compiled(guarded: bool, graphs: bool):
    lowered = (trainer.guarded_step(c, program) if guarded else
               program.step.lower(program.abstract_state, program.abstract_batch))
    # With the config's own XLA options, as the trainer compiles its step.
    run_c = c.copy_and_resolve_references()
    if not graphs:
      run_c.xla_options = f"{c.xla_options} {NO_GRAPHS}"
    return train.compile_with_options(run_c, lowered)

  steps = {(g, gr): compiled(g, gr) for g in (False, True) for gr in graphs}
  fixed = {name: data.to_device(make(), batch_sh) for name, make in sources.items()}
  healthy = jax.device_put(np.bool_(True), sharding.replicated(program.mesh))
  state = program.init(jax.random.key(0))
  common = dict(model=c.model, per_device_batch=c.per_device_batch_size,
                device_kind=jax.devices()[0].device_kind, git_commit=results.git_commit(),
                versions=results.versions())

  def write(row):
    row = dict(row, **common, timestamp=results.utc_now())
    print(json.dumps({k: row[k] for k in ("way", "round", "median_ms", "min_ms")}), flush=True)
    results.append_line(_OUT.value, row)

  ways = [(g, gr, src, how) for g in (False, True) for gr in graphs for src in sources
          for how in ("same", "fresh")]
  for r in range(_ROUNDS.value):
    for guarded, gr, src, how in ways:
      step = steps[(guarded, gr)]
      feed = ((lambda src=src: fixed[src]) if how == "same" else
              (lambda src=src: data.to_device(sources[src](), batch_sh)))

      def run(s, _batch, step=step, feed=feed, guarded=guarded):
        nonlocal healthy
        if not guarded:
          return step(s, feed())
        s, healthy, m = step(s, feed(), healthy)
        return s, m

      state, times, _ = measure.time_steps(run, state, None, _STEPS.value + 5, lambda *a: None)
      times = times[5:]  # the first steps after a switch pay for the other way's graphs
      name = f"{'guarded' if guarded else 'plain'}/{src}-{how}{'' if gr else '-nographs'}"
      write(dict(way=name, round=r, median_ms=statistics.median(times) * 1e3,
                 min_ms=min(times) * 1e3, steps=len(times)))
  ids = {name: make()["inputs"] for name, make in sources.items()}
  for r in range(_ROUNDS.value):
    for dtype in (jnp.bfloat16, jnp.float32):
      for src, tokens in ids.items():
        t = time_embed_grad(c, tokens, dtype)
        top = int(np.bincount(tokens.ravel()).max())
        write(dict(way=f"embed-grad/{jnp.dtype(dtype).name}/{src}", round=r, median_ms=t * 1e3,
                   min_ms=None, most_repeated_token_count=top))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  sys.exit(app.run(main))
