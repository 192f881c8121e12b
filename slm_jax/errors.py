"""Errors a user can cause and fix: the entry points print their message alone, no traceback;
and the two ways a training run (slm_jax.trainer) ends early, which the entry point records.
They live here, not in the trainer, so that benchmark runs need not import orbax, tokenizers
and datasets."""


class UserError(ValueError):
  """A configuration, shape or device that cannot be served; the message says what to change."""


class NonFinite(Exception):
  """A step's loss, gradient norm or learning rate was NaN/Inf; the last good state is
  checkpointed."""


class Preempted(Exception):
  """SIGTERM arrived; the state was checkpointed and the same command resumes the run."""
