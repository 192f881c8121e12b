"""Paper model 100m on h200 trained on text for Loss/Dollar: a held-out loss every 100 steps,
a checkpoint every 500; set the budget with --config.dollar_budget or --config.train_steps."""

from slm_jax.config import paper_config, train_config


def get_config():
  return train_config(paper_config("100m", "h200"), train_steps=1000, checkpoint_every=500,
                      eval_every=100)
