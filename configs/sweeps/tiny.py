"""A small grid on the tiny model for demos and tests: about a minute on a 2-core CPU."""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.base_config = "configs/tiny.py"
  c.gpu = "cpu"
  c.grid = ml_collections.ConfigDict({
      "model": ("tiny",),
      "attention": ("xla",),
      "strategy": ("single", "ddp"),
      "per_device_batch_size": (2, 8),
      "num_devices": (1, 2),
  })
  # 2 x 5 timed steps: the report draws medians of at least 10 (report.MIN_TIMED_STEPS).
  c.overrides = ml_collections.ConfigDict({"steps": 5, "repeats": 2, "warmup_steps": 1})
  c.point_timeout_s = 300.0
  return c
