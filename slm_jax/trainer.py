"""Training on text (`--config.mode=train`): build()'s step on packed token windows for a step
or dollar budget, with held-out evaluation, checkpoints, resume, preemption and NaN handling,
recording loss against dollars spent (the paper's Loss/Dollar).

Dollars are price per device-hour x devices x wall seconds of training (the loop: steps,
evaluations and the blocking part of checkpoint saves; not compiling or tokenizer training),
summed over every session of a resumed run.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from slm_jax import config as config_lib
from slm_jax import data, measure, pricing, tokenizer, train
from slm_jax.checkpoint import Checkpointer
from slm_jax.errors import UserError


class NonFinite(Exception):
  """A step's loss or gradient norm was NaN/Inf; the last good state is checkpointed."""


class Preempted(Exception):
  """SIGTERM arrived; the state was checkpointed and the same command resumes the run."""


def guarded_step(program: train.Program):
  """build()'s step that refuses a non-finite update: the state stays the last good one, and
  stays so for every later step (`healthy` is sticky), so steps already queued behind a bad
  one cannot move it."""
  repl = jax.sharding.NamedSharding(program.mesh, jax.sharding.PartitionSpec())

  def step(state, batch, healthy):
    new, metrics = program.step_fn(state, batch)
    # The parameter norm catches an update that turns finite gradients into NaN (e.g. an
    # infinite learning rate).
    ok = (healthy & jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
          & jnp.isfinite(optax.tree.norm(new.params)))
    state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
    return state, ok, dict(metrics, ok=ok)

  jitted = jax.jit(step, in_shardings=(program.state_shardings, program.abstract_batch["inputs"]
                                       .sharding, repl),
                   out_shardings=(program.state_shardings, repl, repl), donate_argnums=0)
  abstract_ok = jax.ShapeDtypeStruct((), jnp.bool_, sharding=repl)
  return jitted.lower(program.abstract_state, program.abstract_batch, abstract_ok).compile(), repl


def load_tokenizer(c: ml_collections.ConfigDict, workdir: Path):
  """(tokenizer, where it is): the user's file, or the corpus's BPE trained once and cached."""
  if c.tokenizer_path:
    return tokenizer.load(c.tokenizer_path, c.vocab_size), c.tokenizer_path
  stride = data.eval_stride(c)

  def barrier():
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("slm_jax tokenizer")

  tok, path = tokenizer.cached_bpe(
      workdir / "tokenizer", data.corpus_key(c), c.vocab_size,
      lambda: data.split(data.documents(c), "train", stride), jax.process_index() == 0, barrier)
  return tok, str(path)


class _SigTerm:
  """Notes SIGTERM (a preemption notice) for the loop to act on between steps."""

  def __init__(self):
    self.received = False
    self._old = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, *_):
    self.received = True

  def __exit__(self, *_):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def _gather_positions(pos: data.Position) -> list[list[int]]:
  """Every host's data position, in process order (each host reads its own documents)."""
  if jax.process_count() == 1:
    return [list(pos)]
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(np.asarray(pos, np.int64))).tolist()


def run(c: ml_collections.ConfigDict, *, workdir: Path,
        on_step: Callable[[int | None, int, float, float], None] = lambda *a: None,
        writer=None, out: dict | None = None) -> dict:
  """Trains `c` from its newest checkpoint (or from scratch) until a budget is spent.

  Fields go into `out` as they are known. Raises NonFinite, Preempted, train.OutOfMemory or
  UserError; each leaves a checkpoint behind except the last two.
  """
  config_lib.validate(c)
  out = {} if out is None else out
  program = train.build(c)
  devices = list(program.mesh.devices.flat)
  local = [d for d in devices if d.process_index == jax.process_index()]
  global_batch = c.per_device_batch_size * len(devices)
  tokens_per_step = global_batch * c.seq_len
  out.update(num_devices=len(devices), global_batch=global_batch,
             params=sum(x.size for x in jax.tree.leaves(program.abstract_state.params)))
  price, _ = pricing.price_per_device_hour(devices[0].device_kind, c.price_per_device_hour)
  if c.dollar_budget and not price:
    raise UserError(f"--config.dollar_budget needs a price for {devices[0].device_kind!r}; "
                    "set --config.price_per_device_hour")

  def dollars(seconds):
    return price * len(devices) * seconds / 3600 if price else None

  tok, tok_path = load_tokenizer(c, workdir)
  eos = tokenizer.eos_id(tok)
  out.update(data_source=data.describe(c), tokenizer=tok_path)

  def encode(texts):
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]

  stride = data.eval_stride(c)
  rows = c.per_device_batch_size * len(local)
  batch_sh = program.abstract_batch["inputs"].sharding

  def stream(which, start):
    return data.windows(
        lambda: data.split(data.documents(c), which, stride, jax.process_index(),
                           jax.process_count()),
        encode, eos, c.seq_len + 1, start, what=f"the {which} split of {data.describe(c)}")

  eval_batches = []
  if c.eval_every:
    held_out = data.Batches(stream("eval", data.Position()), rows)
    eval_batches = [data.to_device(next(held_out)[0], batch_sh) for _ in range(c.eval_batches)]

  try:
    t0 = time.perf_counter()
    compiled, repl = guarded_step(program)
    # Compiled now, so that no evaluation pays for it out of the budget.
    eval_loss = program.loss.lower(program.abstract_state.params,
                                   program.abstract_batch).compile()
    out["compile_s"] = time.perf_counter() - t0
  except Exception as e:
    if train.is_oom(e):
      raise train.OutOfMemory(f"compiling the step ran out of device memory: {e}") from e
    raise
  out["expected_memory_bytes"] = measure.expected_memory(compiled)

  ckpt_dir = Path(c.checkpoint_dir) if c.checkpoint_dir else workdir / "checkpoints"
  ckpt = Checkpointer(ckpt_dir, c.keep_checkpoints)
  out["checkpoint_dir"] = str(ckpt.directory)
  restored = ckpt.restore_latest(program.abstract_state)
  if restored:
    step, state, meta = restored
    if len(meta["data"]) != jax.process_count():
      raise UserError(f"the checkpoint in {ckpt.directory} was written by {len(meta['data'])} "
                      f"processes; each reads its own documents, so resume with as many")
    pos = data.Position(*meta["data"][jax.process_index()])
  else:
    step, meta, pos = 0, {"train_s": 0.0, "dollars": 0.0, "curve": [], "eval": []}, \
        data.Position()
    state = program.init(jax.random.key(c.seed))
  out["resumed_from_step"] = step if restored else None
  curve, evals = meta["curve"], meta["eval"]  # [step, seconds, dollars, loss] rows
  base_s, base_dollars = meta["train_s"], meta["dollars"]

  prefetcher = data.Prefetcher(data.Batches(stream("train", pos), rows), batch_sh,
                               c.prefetch_batches)
  try:  # the first batch waits for the corpus to open: start-up, like compiling
    loader = itertools.chain([next(prefetcher)], prefetcher)
  except BaseException:
    prefetcher.close()
    ckpt.close()
    raise
  healthy = jax.device_put(jnp.bool_(True), repl)
  times: list[float] = []
  start = time.perf_counter()

  def seconds():
    return base_s + time.perf_counter() - start

  def spent():
    d = dollars(time.perf_counter() - start)
    return None if d is None else base_dollars + d

  def over_budget():
    return ((c.train_steps and step >= c.train_steps)
            or (c.dollar_budget and spent() >= c.dollar_budget))

  def save():
    meta_now = {"train_s": seconds(), "dollars": spent() or 0.0, "curve": curve, "eval": evals,
                "data": _gather_positions(pos)}
    ckpt.save(step, state, meta_now)

  def evaluate():
    loss = float(np.mean([float(eval_loss(state.params, b)) for b in eval_batches]))
    evals.append([step, seconds(), spent(), loss])
    if writer:
      writer.scalar("eval/loss", loss, step)
      if spent() is not None:
        writer.scalar("loss_vs_dollars/eval", loss, round(spent() * 1e6))

  def segment(n):
    """Up to `n` steps, each queued before the previous one's loss is read (the device never
    waits for the host); stops early on a bad step, SIGTERM or the dollar budget."""
    nonlocal state, healthy, step, pos
    bad, pending, dispatched = None, None, 0
    last = time.perf_counter()
    while True:
      go = dispatched < n and not bad and not sigterm.received and not over_budget()
      if go:
        batch, batch_pos = next(loader)
        state, healthy, metrics = compiled(state, batch, healthy)
        dispatched += 1
      if pending is not None:
        m, p = pending
        loss, ok = float(m["loss"]), bool(m["ok"])  # waits for that step
        now = time.perf_counter()
        dt, last = now - last, now
        if not ok and bad is None:
          bad = (step + 1, loss, float(m["grad_norm"]))
        elif ok:
          step, pos = step + 1, p
          times.append(dt)
          curve.append([step, seconds(), spent(), loss])
          on_step(None, step - 1, dt, loss)
          if writer:
            writer.scalar("train/dollars", spent() or 0.0, step)
            if spent() is not None:
              writer.scalar("loss_vs_dollars/train", loss, round(spent() * 1e6))
      pending = (metrics, batch_pos) if go else None
      if pending is None:
        return bad

  def due(every):
    return every and step % every == 0

  failure = None
  with _SigTerm() as sigterm:
    try:
      if eval_batches and step == 0:
        evaluate()
      while not over_budget():
        limits = [c.train_steps - step if c.train_steps else 1 << 30]
        limits += [every - step % every for every in (c.eval_every, c.checkpoint_every) if every]
        bad = segment(min(limits))
        if bad:
          save()
          failure = NonFinite(
              f"non-finite loss ({bad[1]}) or gradient norm ({bad[2]}) at step {bad[0]}; the "
              f"last good state (after {step} steps) is checkpointed in {ckpt.directory}")
          break
        if sigterm.received:
          save()
          failure = Preempted(f"SIGTERM after {step} steps: checkpointed in {ckpt.directory}; "
                              "run the same command to resume")
          break
        if eval_batches and due(c.eval_every):
          evaluate()
        if due(c.checkpoint_every):
          save()
      if failure is None:
        if eval_batches and not due(c.eval_every):
          evaluate()
        save()
      ckpt.wait()
    except Exception as e:
      if train.is_oom(e):
        raise train.OutOfMemory(f"running the step ran out of device memory: {e}") from e
      raise
    finally:
      prefetcher.close()
      ckpt.close()
  session_s = time.perf_counter() - start

  losses = [row[3] for row in curve]
  out.update(
      mode="train",
      steps_trained=step,
      tokens_trained=step * tokens_per_step,
      train_s=base_s + session_s,
      dollars_spent=(base_dollars + dollars(session_s)) if price else None,
      losses=losses,
      final_loss=losses[-1] if losses else None,
      loss_vs_dollars=[[row[2], row[3]] for row in curve] if price else None,
      loss_vs_seconds=[[row[1], row[3]] for row in curve],
      eval_losses=[[row[0], row[2], row[3]] for row in evals],
      final_eval_loss=evals[-1][3] if evals else None,
      peak_memory_bytes=measure.peak_memory(local),
  )
  if times:
    step_time = measure.summarize(times)
    out.update(step_time_s=step_time, step_times_s=times,
               tokens_per_s=tokens_per_step / step_time["median"],
               tokens_per_s_per_device=tokens_per_step / step_time["median"] / len(devices),
               train_tokens_per_s=len(times) * tokens_per_step / session_s)
  if failure:
    raise failure
  return out
