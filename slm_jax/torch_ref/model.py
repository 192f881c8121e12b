"""HuggingFace `LlamaForCausalLM` with the dimensions of a slm_jax `ModelConfig`.

The paper trained HuggingFace's own Llama class, so that class (not a re-implementation) is the
reference. Everything the two models could disagree on is pinned here rather than left to
transformers' defaults, which change between releases: untied LM head, no biases, SwiGLU,
RMSNorm eps, RoPE theta, explicit head_dim, N(0, 0.02) initialisation (as slm_jax.model).
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface

from slm_jax.model import ModelConfig
from slm_jax.torch_ref import ATTENTION

# `sdpa` as HuggingFace runs it builds an explicit [b, 1, s, s] causal mask whenever dynamo
# traces the model (transformers' _ignore_causal_mask_sdpa answers False while tracing), and
# SDPA given a mask cannot use its flash or cuDNN kernels nor skip the tiles above the diagonal.
# Every sequence here is a full window without padding, so causality alone is the mask: this
# attention, registered in transformers' own attention and mask registries, builds no mask and
# calls HuggingFace's SDPA function with is_causal=True, compiled or eager (exactly the same
# function; tests/test_torch_parity.py checks both the values and the traced call).
CAUSAL_SDPA = "slm_jax_causal_sdpa"


def _causal_sdpa(module, query, key, value, attention_mask, **kwargs):
  kwargs.pop("is_causal", None)
  return sdpa_attention_forward(module, query, key, value, None, is_causal=True, **kwargs)


def _no_mask(*args, **kwargs):
  return None


AttentionInterface.register(CAUSAL_SDPA, _causal_sdpa)
AttentionMaskInterface.register(CAUSAL_SDPA, _no_mask)


def hf_config(cfg: ModelConfig, attention: str = "sdpa", seq_len: int = 2048) -> LlamaConfig:
  if attention not in ATTENTION:
    raise ValueError(f"torch attention {attention!r} is not one of {ATTENTION}")
  return LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_dim,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.kv_heads, head_dim=cfg.head_dim,
      max_position_embeddings=max(seq_len, 2048), rms_norm_eps=cfg.norm_eps,
      rope_theta=cfg.rope_theta, hidden_act="silu", tie_word_embeddings=False,
      attention_bias=False, mlp_bias=False, initializer_range=0.02,
      # Training only: a KV cache would hold every layer's keys and values for nothing.
      use_cache=False, attn_implementation=CAUSAL_SDPA if attention == "sdpa" else attention)


def build(cfg: ModelConfig, attention: str = "sdpa", seq_len: int = 2048,
          device: str | torch.device | None = None) -> LlamaForCausalLM:
  """The model with fp32 weights on `device` ("meta" allocates nothing)."""
  with torch.device(device or "cpu"):
    return LlamaForCausalLM(hf_config(cfg, attention, seq_len)).float()


def count_params(cfg: ModelConfig) -> int:
  """Parameters of the HuggingFace model, counted on the meta device (nothing allocated)."""
  return sum(p.numel() for p in build(cfg, device="meta").parameters())
