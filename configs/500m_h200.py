"""Paper model 500m on h200: context 1024, cudnn attention, 3 x 10 timed steps."""

from slm_jax.config import paper_config


def get_config():
  return paper_config("500m", "h200")
