"""Checkpoints of a training run with orbax: the train state plus a JSON of everything else the
run needs to go on exactly (data positions, spent time, the loss history).

Saves are asynchronous: the state is copied to host memory before `save` returns (so the next
step may reuse its buffers) and written in the background to a temporary directory that orbax
renames when complete. A save cut short (SIGKILL, a full disk) therefore never replaces the
previous checkpoint; `restore_latest` also steps back past any checkpoint it cannot read.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from slm_jax.errors import UserError


def warn(message: str) -> None:
  print(f"warning: {message}", file=sys.stderr, flush=True)


def _reason(e: Exception) -> str:
  """A reader's error in one short line: tensorstore appends its whole spec (about 1.3 KB)."""
  text = " ".join(str(e).split()).split(" [tensorstore_spec=")[0]
  text = f"{type(e).__name__}: {text}"
  return text if len(text) <= 300 else text[:297] + "..."


def _quiet_closed_loop_callbacks() -> None:
  """After orbax gives up on a damaged checkpoint, its other pending tensorstore reads still
  finish, and each one's callback into the closed asyncio loop raises "Event loop is closed"
  as an unraisable exception (a traceback apiece, over a hundred per checkpoint). Those are
  noise once the failure is reported; every other unraisable exception still prints."""
  previous = sys.unraisablehook
  if getattr(previous, "_slm_jax_quiet", False):
    return

  def hook(unraisable):
    e = unraisable.exc_value
    if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
      return
    previous(unraisable)

  hook._slm_jax_quiet = True
  sys.unraisablehook = hook
  # The same reads' tasks, when garbage-collected first, are reported through asyncio's logger
  # instead ("Task exception was never retrieved", with the reader's error and its spec).
  logging.getLogger("asyncio").addFilter(_drop_unretrieved_read_errors)


def _drop_unretrieved_read_errors(record: logging.LogRecord) -> bool:
  message = record.getMessage()
  if not message.startswith(("Task exception was never retrieved",
                             "Future exception was never retrieved")):
    return True
  exc = record.exc_info[1] if record.exc_info else None
  return "DATA_LOSS" not in message and "DATA_LOSS" not in str(exc or "")


class Checkpointer:
  """The checkpoints of one run in `directory`, the newest `keep` kept."""

  def __init__(self, directory: Path, keep: int):
    self.directory = Path(directory).absolute()
    for tmp in sorted(self.directory.glob("*.orbax-checkpoint-tmp*")):
      warn(f"{tmp} is a save that never finished (the process was killed while writing); "
           "it is ignored")
    # Handlers named up front so a checkpoint's metadata (shapes) can be read without its arrays.
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=True, create=True,
            cleanup_tmp_directories=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

  def save(self, step: int, state, meta: dict) -> None:
    """Starts saving `state` and `meta` as `step`; returns once the state is off the device."""
    if step in self._manager.all_steps():
      return  # already saved (e.g. the last periodic save was also the final step)
    # The JSON is written in the background too, and the caller goes on appending to the lists
    # in `meta` (the loss curve): the checkpoint takes them as they are now.
    meta = json.loads(json.dumps(meta))
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_fields(state)), meta=ocp.args.JsonSave(meta)), force=True)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def restore_latest(self, abstract_state) -> tuple[int, object, dict] | None:
    """(step, state, meta) of the newest readable checkpoint, placed by `abstract_state`'s
    shardings (so any device count or strategy can resume), or None when there is none.
    Raises UserError when none can be read: starting over would soon delete them all."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    if steps:  # before reading: a failed read's callbacks may fire while the error propagates
      _quiet_closed_loop_callbacks()
    for i, step in enumerate(steps):
      try:
        self._check_shapes(step, abstract_state)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_fields(abstract_state)),
            meta=ocp.args.JsonRestore()))
      except Exception as e:  # a damaged checkpoint: any error its reader raises
        why = _reason(e)
        if i + 1 == len(steps):
          raise UserError(
              f"no checkpoint in {self.directory} can be read for this config (step {step}: "
              f"{why}); a changed model needs another --workdir or --config.checkpoint_dir"
          ) from e
        aside = self._set_aside(step)
        warn(f"checkpoint step {step} in {self.directory} is unreadable ({why}); falling "
             f"back to step {steps[i + 1]} (the damaged one is kept as {aside.name})")
        continue
      return step, _rebuilt(abstract_state, restored.state), restored.meta
    return None

  def _set_aside(self, step: int) -> Path:
    """Renames unreadable checkpoint `step` out of the run's steps: left in place it would
    count towards `keep` (deleting good ones) and stop this run saving that step again."""
    aside = self.directory / f"{step}.unreadable"
    n = 1
    while aside.exists():
      n += 1
      aside = self.directory / f"{step}.unreadable{n}"
    # The folder is shared between processes: every one names the new folder before the first
    # renames it, and reloads the steps after.
    self._sync(f"slm_jax checkpoint {step} named")
    if jax.process_index() == 0:
      (self.directory / str(step)).rename(aside)
    self._sync(f"slm_jax checkpoint {step} set aside")
    self._manager.reload()
    return aside

  @staticmethod
  def _sync(name: str) -> None:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(name)

  def latest_meta(self) -> tuple[int, dict] | None:
    """(step, meta) of the newest checkpoint, without its arrays; None when there is none or
    its meta cannot be read (restore_latest then says why)."""
    steps = self._manager.all_steps()
    if not steps:
      return None
    try:
      restored = self._manager.restore(max(steps), args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))
    except Exception:  # a damaged checkpoint; restore_latest reports it
      return None
    return max(steps), restored.meta

  def _check_shapes(self, step: int, abstract_state) -> None:
    """Raises ValueError when checkpoint `step` cannot hold `abstract_state` (another model),
    judged from its metadata alone: orbax, asked to read arrays of other shapes, fails halfway
    and leaves its pending reads to print tracebacks when they are collected. The stored tree
    orders and names its leaves its own way, so the shapes are compared as multisets."""
    stored = collections.Counter(
        tuple(x.shape) for x in jax.tree.leaves(self._manager.item_metadata(step)["state"]))
    wanted = collections.Counter(tuple(x.shape) for x in jax.tree.leaves(abstract_state))
    if stored != wanted:
      shape = next(s for s in sorted(stored.keys() | wanted.keys()) if stored[s] != wanted[s])
      raise ValueError(f"this config's state has {wanted[shape]} arrays of shape {shape}, the "
                       f"checkpoint {stored[shape]}")

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _fields(state):
  """A train state (a NamedTuple) as the dict of its fields that hold something, which is how
  orbax stores it: a field that is None (TrainState.fp8 without FP8 delayed scaling) is left
  out, so checkpoints written before the field existed stay readable. Other states as they
  are."""
  if not hasattr(state, "_asdict"):
    return state
  return {k: v for k, v in state._asdict().items() if v is not None}


def _rebuilt(abstract_state, restored):
  """`restored` in `abstract_state`'s structure. orbax gives optax's named-tuple states back as
  plain tuples; the leaves are in order within each field."""
  def like(abstract, tree):
    return jax.tree.unflatten(jax.tree.structure(abstract), jax.tree.leaves(tree))

  fields = _fields(abstract_state)
  if fields is abstract_state:
    return like(abstract_state, restored)
  return abstract_state._replace(**{k: like(v, restored[k]) for k, v in fields.items()})
