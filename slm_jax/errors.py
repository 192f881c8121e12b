"""Errors a user can cause and fix: the entry points print their message alone, no traceback."""


class UserError(ValueError):
  """A configuration, shape or device that cannot be served; the message says what to change."""
