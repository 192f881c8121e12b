"""A two-layer model for CPU runs and tests: compiles and trains in seconds."""

from slm_jax.config import tiny_config


def get_config():
  return tiny_config()
