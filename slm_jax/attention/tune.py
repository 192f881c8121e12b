"""`python -m slm_jax.attention.tune` kept working: runs the tool, slm_jax.tools.attention_tune,
which lives outside the kernels' package as it imports the training stack."""

import runpy

if __name__ == "__main__":
  runpy.run_module("slm_jax.tools.attention_tune", run_name="__main__", alter_sys=True)
