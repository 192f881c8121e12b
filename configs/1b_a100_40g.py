"""Paper model 1b on a100_40g: context 1024, cudnn attention, 3 x 10 timed steps."""

from slm_jax.config import paper_config


def get_config():
  return paper_config("1b", "a100_40g")
