"""Training on text (`--config.mode=train`): build()'s step on packed token windows for a step
or dollar budget, with held-out evaluation, checkpoints, resume, preemption and NaN handling,
recording loss against dollars spent (the paper's Loss/Dollar).

Dollars are price per device-hour x devices x wall seconds of training (the loop: steps,
evaluations and the blocking part of checkpoint saves; not compiling or tokenizer training),
summed over every session of a resumed run.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
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
from slm_jax import data, measure, pricing, sharding, tokenizer, train
from slm_jax import workdir as workdir_lib
from slm_jax.checkpoint import Checkpointer
from slm_jax.errors import NonFinite, NothingToDo, Preempted, UserError, WorkdirInUse


def _learning_rate(c: ml_collections.ConfigDict, opt_state) -> jax.Array:
  """The learning rate this step's update uses (the schedule at its update count)."""
  counts = [s.count for s in jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState))
            if isinstance(s, optax.ScaleByScheduleState)]
  return train.make_schedule(c)(counts[0])


def guarded_step(c: ml_collections.ConfigDict, program: train.Program):
  """build()'s step that refuses a non-finite update: the state stays the last good one, and
  stays so for every later step (`healthy` is sticky), so steps already queued behind a bad
  one cannot move it. Returned lowered, for the caller to compile."""
  repl = sharding.replicated(program.mesh)

  def step(state, batch, healthy):
    new, metrics = program.step_fn(state, batch)
    # From finite gradients AdamW makes a non-finite update only through the learning rate
    # (or eps, b1, b2, which validation keeps sane). Checking scalars known before the update,
    # not the updated parameters, lets XLA fuse the choice into the update itself: a check of
    # the new parameters would cost another pass over the state, ~3% of a 100M step.
    ok = (healthy & jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
          & jnp.isfinite(_learning_rate(c, state.opt_state)))
    state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
    return state, ok, dict(metrics, ok=ok)

  batch_sh = program.abstract_batch["inputs"].sharding
  jitted = jax.jit(step, in_shardings=(program.state_shardings, batch_sh, repl),
                   out_shardings=(program.state_shardings, repl, repl), donate_argnums=0)
  abstract_ok = jax.ShapeDtypeStruct((), jnp.bool_, sharding=repl)
  return jitted.lower(program.abstract_state, program.abstract_batch, abstract_ok)


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


def text_batches(c: ml_collections.ConfigDict, encode, eos: int, which: str,
                 start: data.Position, rows: int) -> data.Batches:
  """This host's batches of `rows` token windows from the `which` ("train" or "eval") split
  of the config's corpus, from `start`."""
  stride = data.eval_stride(c)
  return data.Batches(data.windows(
      lambda: data.split(data.documents(c), which, stride, jax.process_index(),
                         jax.process_count()),
      encode, eos, c.seq_len + 1, start, what=f"the {which} split of {data.describe(c)}"), rows)


class _Signals:
  """Notes SIGTERM (a preemption notice) and SIGINT (Ctrl-C at a terminal) for the loop to act
  on between steps: both checkpoint and end the run as `preempted`. A second Ctrl-C exits at
  once, without waiting for the checkpoint (a save cut short never replaces the previous one).

  Over several processes every one must stop at the same step, or their checkpoint saves
  disagree (orbax checks that they meet): a notice often reaches one host only, or reaches
  them while they are at different steps. There JAX's preemption service (jax.distributed)
  takes SIGTERM itself, spreads it to every process and names the one step all stop at;
  Ctrl-C is passed to it as a SIGTERM."""

  def __init__(self):
    self._local: str | None = None  # the first signal this process got
    self._stopped = False
    self._checked: tuple[int, bool] | None = None
    self._interrupts = 0
    self._old = {}
    self.shared = jax.process_count() > 1 and _preemption_service() is not None

  @property
  def received(self) -> str | None:
    """The signal that stops the run (over several processes: once all agreed to stop)."""
    if self.shared:
      return (self._local or "SIGTERM") if self._stopped else None
    return self._local

  def stop(self, step: int) -> bool:
    """Whether to stop before dispatching step `step` (counted from the run's start). Over
    several processes, called for every step in order, as JAX's preemption service needs."""
    if not self.shared:
      return self._local is not None
    if self._checked is None or self._checked[0] != step:
      from jax.experimental import multihost_utils

      self._stopped = self._stopped or multihost_utils.reached_preemption_sync_point(step)
      self._checked = (step, self._stopped)
    return self._stopped

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      # Over several processes SIGTERM stays with JAX's preemption service.
      names = (signal.SIGINT,) if self.shared else (signal.SIGTERM, signal.SIGINT)
      self._old = {s: signal.signal(s, self._handle) for s in names}
    return self

  def _handle(self, signum, _):
    if signum == signal.SIGINT:
      self._interrupts += 1
      if self._interrupts > 1:
        print("\ninterrupted again: exiting now, without this checkpoint", file=sys.stderr,
              flush=True)
        os._exit(130)  # at once: no waiting for threads or a save in progress
      print("\ninterrupted: checkpointing after this step (Ctrl-C again exits at once)",
            file=sys.stderr, flush=True)
      if self.shared:  # the service listens for SIGTERM and tells every process
        os.kill(os.getpid(), signal.SIGTERM)
    self._local = self._local or signal.Signals(signum).name

  def __exit__(self, *_):
    for s, old in self._old.items():
      signal.signal(s, old)
    self._old = {}


def _preemption_service():
  """JAX's preemption sync manager, where jax.distributed started one; else None."""
  from jax._src import distributed  # no public handle says whether it runs

  return getattr(distributed.global_state, "preemption_sync_manager", None)


# Fields that change what a run learns from where it is: a run resumed with another value goes
# on as another run would (the record states the new value), so resuming says so.
TRAJECTORY_FIELDS = ("learning_rate", "lr_warmup_steps", "weight_decay", "adam_b1", "adam_b2",
                     "adam_eps", "grad_clip_norm", "seed", "data_files", "data_format",
                     "text_field", "dataset", "dataset_split", "tokenizer_path", "eval_fraction",
                     "seq_len", "compute_dtype", "param_dtype", "fp8", "fp8_scaling",
                     "logits_dtype", "logits_grad_dtype")


def _warn_if_changed(c, saved: dict, directory: Path, step: int) -> None:
  changed = [f"{k} {saved[k]!r} -> {c[k]!r}" for k in TRAJECTORY_FIELDS
             if k in saved and saved[k] != c[k]]
  if changed and jax.process_index() == 0:
    print(f"warning: resuming the checkpoint of step {step} in {directory}, written with other "
          f"settings: {', '.join(changed)}; use another --workdir for a separate run",
          file=sys.stderr, flush=True)


def _gather_positions(pos: data.Position) -> list[list[int]]:
  """Every host's data position, in process order (each host reads its own documents)."""
  if jax.process_count() == 1:
    return [list(pos)]
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(np.asarray(pos, np.int64))).tolist()


class Session:
  """One process's stretch of a training run, from a checkpoint (or the start) until a budget,
  a bad step, SIGTERM or SIGINT: the state, the data position, the clock and the loss history."""

  def __init__(self, c, program: train.Program, compiled, eval_loss, eval_batches, ckpt,
               price: float | None, writer, on_step, tokens_per_step: int):
    self.c, self.program, self.compiled, self.eval_loss = c, program, compiled, eval_loss
    self.tokens_per_step = tokens_per_step
    self.eval_batches, self.ckpt, self.writer, self.on_step = eval_batches, ckpt, writer, on_step
    self.num_devices = program.mesh.devices.size
    self.price = price
    self.times: list[float] = []  # this session's step times
    self.signals = _Signals()
    restored = ckpt.restore_latest(program.abstract_state)
    if restored:
      self.step, self.state, meta = restored
      if len(meta["data"]) != jax.process_count():
        raise UserError(f"the checkpoint in {ckpt.directory} was written by "
                        f"{len(meta['data'])} processes; each reads its own documents, so "
                        "resume with as many")
      self.pos = data.Position(*meta["data"][jax.process_index()])
      _warn_if_changed(c, meta.get("config") or {}, ckpt.directory, self.step)
    else:
      self.step, self.pos, self.state = 0, data.Position(), program.init(jax.random.key(c.seed))
      meta = {"train_s": 0.0, "dollars": 0.0, "tokens": 0, "curve": [], "eval": []}
    self.resumed_from = self.step if restored else None
    # Tokens of the sessions before, whose global batch may differ from this one's (resumed on
    # another device count); checkpoints that hold no count were written at this batch.
    self.base_step = self.step
    self.base_tokens = meta.get("tokens", self.step * tokens_per_step)
    # Rows of [step, seconds, dollars, loss] over every session.
    self.curve, self.evals = meta["curve"], meta["eval"]
    self.base_s, self.base_dollars = meta["train_s"], meta["dollars"]
    self.start = time.perf_counter()
    self.stopped: float | None = None  # the clock's end, once the session is over

  # -- the clock: seconds and dollars of the whole run so far
  def session_s(self) -> float:
    return (self.stopped or time.perf_counter()) - self.start

  def seconds(self) -> float:
    return self.base_s + self.session_s()

  def tokens(self) -> int:
    return self.base_tokens + (self.step - self.base_step) * self.tokens_per_step

  def dollars(self) -> float | None:
    if not self.price:
      return None
    return self.base_dollars + self.price * self.num_devices * self.session_s() / 3600

  def over_budget(self) -> bool:
    c = self.c
    return bool((c.train_steps and self.step >= c.train_steps)
                or (c.dollar_budget and self.dollars() >= c.dollar_budget))

  def due(self, every: int) -> bool:
    return bool(every) and self.step % every == 0

  # -- the parts of the loop
  def save(self) -> None:
    self.ckpt.save(self.step, self.state, {
        "train_s": self.seconds(), "dollars": self.dollars() or 0.0, "tokens": self.tokens(),
        "curve": self.curve, "eval": self.evals, "data": _gather_positions(self.pos),
        "config": {k: self.c[k] for k in TRAJECTORY_FIELDS}})

  def evaluate(self) -> None:
    fp8 = () if self.state.fp8 is None else (self.state.fp8,)  # delayed scaling's scales
    loss = float(np.mean([float(self.eval_loss(self.state.params, b, *fp8))
                          for b in self.eval_batches]))
    self.evals.append([self.step, self.seconds(), self.dollars(), loss])
    self._scalars("eval", loss)

  def _scalars(self, kind: str, loss: float) -> None:
    if not self.writer:
      return
    if kind == "eval":
      self.writer.scalar("eval/loss", loss, self.step)
    else:
      self.writer.scalar("train/dollars", self.dollars() or 0.0, self.step)
    if self.price:  # TensorBoard's x axis is an integer step, so micro-dollars; say so
      self.writer.scalar(f"loss_vs_dollars/{kind} (step = micro-USD)", loss,
                         round(self.dollars() * 1e6))

  def segment(self, loader, n: int, healthy):
    """Up to `n` steps, each queued before the previous one's loss is read (the device never
    waits for the host); stops early on a bad step, SIGTERM or the dollar budget. Returns
    (healthy, (step, loss, grad norm) of a bad step or None)."""
    bad, pending, dispatched, first = None, None, 0, self.step
    last = time.perf_counter()
    while True:
      go = (dispatched < n and not bad and not self.over_budget()
            and not self.signals.stop(first + dispatched))
      if go:
        batch, batch_pos = next(loader)
        self.state, healthy, metrics = self.compiled(self.state, batch, healthy)
        dispatched += 1
      if pending is not None:
        m, pos = pending
        loss, ok = float(m["loss"]), bool(m["ok"])  # waits for that step
        now = time.perf_counter()
        dt, last = now - last, now
        if not ok and bad is None:
          bad = (self.step + 1, loss, float(m["grad_norm"]))
        elif ok:  # steps queued behind a bad one are no-ops (`healthy` is sticky)
          self.step, self.pos = self.step + 1, pos
          self.times.append(dt)
          self.curve.append([self.step, self.seconds(), self.dollars(), loss])
          self.on_step(None, self.step - 1, dt, loss)
          self._scalars("train", loss)
      pending = (metrics, batch_pos) if go else None
      if pending is None:
        return healthy, bad

  def train(self, loader) -> Exception | None:
    """Runs to the end of the budget; returns the NonFinite or Preempted that ended it early.
    Stops between segments for evaluations and checkpoints, whose state must be in hand.
    The caller holds `self.signals` open around this and the last save's wait."""
    c = self.c
    healthy = jax.device_put(jnp.bool_(True), sharding.replicated(self.program.mesh))
    if self.eval_batches and self.step == 0:
      self.evaluate()
    while not self.over_budget():
      limits = [c.train_steps - self.step if c.train_steps else 1 << 30]
      limits += [every - self.step % every
                 for every in (c.eval_every, c.checkpoint_every) if every]
      healthy, bad = self.segment(loader, min(limits), healthy)
      if bad:
        self.save()
        return NonFinite(
            f"non-finite loss ({bad[1]}) or gradient norm ({bad[2]}) at step {bad[0]}; the "
            f"last good state (after {self.step} steps) is checkpointed in "
            f"{self.ckpt.directory}")
      if self.signals.received:
        self.save()
        name = self.signals.received
        return Preempted(f"{name} after {self.step} steps: checkpointed in "
                         f"{self.ckpt.directory}; run the same command to resume", name)
      if self.eval_batches and self.due(c.eval_every):
        self.evaluate()
      if self.due(c.checkpoint_every):
        self.save()
    if self.eval_batches and not self.due(c.eval_every):  # the budget ended between evals
      self.evaluate()
    self.save()
    return None

  def fields(self) -> dict:
    """The record's training fields, with the clock stopped so they all agree."""
    self.stopped = self.stopped or time.perf_counter()
    curve, evals = self.curve, self.evals
    losses = [row[3] for row in curve]
    out = dict(
        mode="train", resumed_from_step=self.resumed_from, steps_trained=self.step,
        tokens_trained=self.tokens(), train_s=self.seconds(),
        dollars_spent=self.dollars(), losses=losses,
        final_loss=losses[-1] if losses else None,
        loss_vs_dollars=[[row[2], row[3]] for row in curve] if self.price else None,
        loss_vs_seconds=[[row[1], row[3]] for row in curve],
        eval_losses=[[row[0], row[2], row[3]] for row in evals],
        final_eval_loss=evals[-1][3] if evals else None)
    if self.times:
      step_time = measure.summarize(self.times)
      tokens_per_s = self.tokens_per_step / step_time["median"]
      out.update(step_time_s=step_time, step_times_s=self.times, tokens_per_s=tokens_per_s,
                 tokens_per_s_per_device=tokens_per_s / self.num_devices,
                 train_tokens_per_s=len(self.times) * self.tokens_per_step / self.session_s())
    return out


def _lock(workdir: Path) -> workdir_lib.Lock | None:
  """Process 0 locks the workdir for the run; every process learns whether it could, so a
  refused multi-process run stops everywhere instead of waiting on process 0."""
  lock, refused = None, ""
  if jax.process_index() == 0:
    try:
      lock = workdir_lib.Lock(workdir)
      lock.acquire()
    except WorkdirInUse as e:
      lock, refused = None, str(e)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    if not int(multihost_utils.broadcast_one_to_all(np.int32(0 if refused else 1))):
      refused = refused or f"{workdir} is in use by another run (process 0 names it)"
  if refused:
    raise WorkdirInUse(refused)
  return lock


def _budget_spent(c: ml_collections.ConfigDict, ckpt: Checkpointer) -> str | None:
  """Why there is nothing left to train, when the newest checkpoint has spent the budget."""
  latest = ckpt.latest_meta()
  if latest is None:
    return None
  step, meta = latest
  if c.train_steps and step >= c.train_steps:
    spent = f"{step} steps (--config.train_steps={c.train_steps})"
  elif c.dollar_budget and meta.get("dollars", 0.0) >= c.dollar_budget:
    spent = f"${meta['dollars']:.4f} (--config.dollar_budget={c.dollar_budget})"
  else:
    return None
  return (f"nothing to train: the run checkpointed in {ckpt.directory} has already trained "
          f"{spent}; raise the budget to train on, or give another --workdir for a new run")


def run(c: ml_collections.ConfigDict, *, workdir: Path,
        on_step: Callable[[int | None, int, float, float], None] = lambda *a: None,
        writer=None, out: dict | None = None) -> dict:
  """Trains `c` from its newest checkpoint (or from scratch) until a budget is spent.

  Fields go into `out` as they are known. Raises NonFinite, Preempted, train.OutOfMemory or
  UserError (the first two leave a checkpoint behind), or NothingToDo when the checkpoints
  have already spent the budget. The workdir is locked for the run's length.
  """
  config_lib.validate(c)
  lock = _lock(Path(workdir))
  try:
    return _run(c, Path(workdir), on_step, writer, {} if out is None else out)
  finally:
    if lock:
      lock.release()


def _run(c, workdir: Path, on_step, writer, out: dict) -> dict:
  ckpt = Checkpointer(Path(c.checkpoint_dir) if c.checkpoint_dir else workdir / "checkpoints",
                      c.keep_checkpoints)
  prefetcher = None
  try:
    spent = _budget_spent(c, ckpt)
    if spent:
      raise NothingToDo(spent)
    program = train.build(c)
    devices = list(program.mesh.devices.flat)
    local = train.local_devices(program)
    out.update(train.placement_fields(c, program))
    tokens_per_step = out["global_batch"] * c.seq_len
    price, _ = pricing.price_per_device_hour(devices[0].device_kind, c.price_per_device_hour)
    if c.dollar_budget and not price:
      raise UserError(f"--config.dollar_budget needs a price for {devices[0].device_kind!r}; "
                      "set --config.price_per_device_hour")

    tok, tok_path = load_tokenizer(c, workdir)
    eos = tokenizer.eos_id(tok)
    out.update(data_source=data.describe(c), tokenizer=tok_path)
    encode = tokenizer.CachedEncoder(tok)  # shared by the held-out and training streams
    rows = c.per_device_batch_size * len(local)  # this host's rows of each batch
    batch_sh = program.abstract_batch["inputs"].sharding

    def batches(which, start):
      return text_batches(c, encode, eos, which, start, rows)

    held_out = batches("eval", data.Position()) if c.eval_every else None
    eval_batches = [data.to_device(next(held_out)[0], batch_sh)
                    for _ in range(c.eval_batches if held_out else 0)]

    with train.out_of_memory_is_a_result("compiling the step"):
      t0 = time.perf_counter()
      compiled = train.compile_with_options(c, guarded_step(c, program))
      # Compiled now, so that no evaluation pays for it out of the budget; with the step's XLA
      # options, which may be what lets this model compile at all.
      fp8 = program.abstract_state.fp8  # delayed scaling's scales, which the held-out loss reads
      eval_loss = train.compile_with_options(
          c, program.loss.lower(program.abstract_state.params, program.abstract_batch,
                                *(() if fp8 is None else (fp8,))))
      out["compile_s"] = time.perf_counter() - t0
    out["expected_memory_bytes"] = measure.expected_memory(compiled)

    out["checkpoint_dir"] = str(ckpt.directory)
    with train.out_of_memory_is_a_result("running the step"):
      session = Session(c, program, compiled, eval_loss, eval_batches, ckpt, price, writer,
                        on_step, tokens_per_step)
      out["resumed_from_step"] = session.resumed_from
      if session.over_budget():  # the newest checkpoint's meta was unreadable, an older one not
        raise NothingToDo(f"nothing to train: the run checkpointed in {ckpt.directory} has "
                          f"already spent its budget ({session.step} steps); raise it to train "
                          "on, or give another --workdir for a new run")
      prefetcher = data.Prefetcher(batches("train", session.pos), batch_sh, c.prefetch_batches)
      # The first batch waits for the corpus to open: start-up, like compiling.
      loader = itertools.chain([next(prefetcher)], prefetcher)
      session.start = time.perf_counter()
      with session.signals:  # also over the last save's wait: Ctrl-C there is handled too
        failure = session.train(loader)
        ckpt.wait()
  finally:
    if prefetcher:
      prefetcher.close()
    ckpt.close()
  out.update(session.fields(), peak_memory_bytes=measure.peak_memory(local))
  if failure:
    raise failure
  return out
