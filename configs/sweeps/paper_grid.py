"""The paper's grid on the GPUs present: 4 sizes x 2 attentions x 3 schemes x batch 4..64 x
device counts 1, 2, 4, ... (those present); 3 x 10 timed steps per point."""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  # {model} and {gpu} are filled per point; gpu "auto" is read off the device.
  c.base_config = "configs/{model}_{gpu}.py"
  c.gpu = "auto"
  c.grid = ml_collections.ConfigDict({
      "model": ("100m", "500m", "1b", "2b"),
      "attention": ("xla", "cudnn"),
      "strategy": ("ddp", "fsdp_full", "fsdp_grad_op"),
      "per_device_batch_size": (4, 8, 16, 32, 64),
      "num_devices": "present",
  })
  # profile_steps > 0 adds each point's step breakdown (collective time and overlap included).
  c.overrides = ml_collections.ConfigDict({"steps": 10, "repeats": 3, "profile_steps": 0})
  c.point_timeout_s = 900.0
  return c
