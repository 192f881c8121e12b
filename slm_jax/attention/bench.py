"""`python -m slm_jax.attention.bench`, kept working: runs slm_jax.tools.attention_bench, where the tool
lives, outside the kernels' package (it imports the training stack)."""

import runpy

if __name__ == "__main__":
  runpy.run_module("slm_jax.tools.attention_bench", run_name="__main__", alter_sys=True)
