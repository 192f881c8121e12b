"""`python -m slm_jax.attention.bench` kept working: runs the tool, slm_jax.tools.attention_bench,
which lives outside the kernels' package as it imports the training stack."""

import runpy

if __name__ == "__main__":
  runpy.run_module("slm_jax.tools.attention_bench", run_name="__main__", alter_sys=True)
