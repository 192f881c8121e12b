"""The tiny model trained on the embedded corpus (the standard library's own source) on a CPU:
300 steps with a held-out loss and a checkpoint every 100."""

from slm_jax.config import tiny_config, train_config


def get_config():
  c = train_config(tiny_config(), train_steps=300, checkpoint_every=100, eval_every=50)
  c.learning_rate = 3e-3
  return c
