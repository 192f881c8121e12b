"""Errors a user can cause and fix: the entry points print their message alone, no traceback;
and the ways a training run (slm_jax.trainer) ends early, which the entry point records (or,
for NothingToDo, reports without a record).
They live here, not in the trainer, so that benchmark runs need not import orbax, tokenizers
and datasets."""

import sys


class UserError(ValueError):
  """A configuration, shape or device that cannot be served; the message says what to change."""


class WorkdirInUse(UserError):
  """Another running process holds the workdir: nothing was run, so nothing is recorded (an
  error record there would sit among the other run's records)."""


class NonFinite(Exception):
  """A step's loss, gradient norm or learning rate was NaN/Inf; the last good state is
  checkpointed."""


class Preempted(Exception):
  """SIGTERM (a preemption notice) or SIGINT (Ctrl-C) arrived; the state was checkpointed and
  the same command resumes the run. `signal_name` says which."""

  def __init__(self, message: str, signal_name: str = "SIGTERM"):
    super().__init__(message)
    self.signal_name = signal_name


class NothingToDo(Exception):
  """The workdir's run has already spent its budget: nothing is trained and nothing recorded
  (a second `ok` record would count the run twice)."""


def reject_positional(argv: list[str]) -> None:
  """Exits with one line where absl left words that are not flags (absl's own UsageError would
  print every flag's help after it)."""
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}: give flags as --name=value (--help lists "
          "them)", file=sys.stderr)
    sys.exit(2)
