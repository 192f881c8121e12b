"""Tools that time and tune slm_jax's kernels (`python -m slm_jax.tools.attention_bench`,
`python -m slm_jax.tools.attention_tune`). They run the stack; the kernels never import them."""
