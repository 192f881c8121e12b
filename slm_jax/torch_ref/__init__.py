"""The paper's stack beside ours: HuggingFace `LlamaForCausalLM` on PyTorch, built from the same
config, trained on the same tokens, timed, priced and recorded the same way (`stack: "torch"`).

The paper measured HuggingFace + PyTorch; a JAX number means little without the PyTorch number
from the same machine, so this package is the other half of `python -m slm_jax.compare`.
It is an optional extra (`pip install -e ".[torch]"`): the modules below import torch and
transformers at import time, so callers that must fail politely call `require()` first.
"""

from __future__ import annotations

import importlib.util

from slm_jax.errors import UserError

ATTENTION = ("eager", "sdpa")  # vanilla (materialised scores) and PyTorch's fused/flash kernels
# The torch attention that does the job of each of ours: materialised scores, or a fused flash
# kernel (sdpa picks FlashAttention-2 on the GPU for bf16).
ATTENTION_FOR = {"xla": "eager", "cudnn": "sdpa", "pallas": "sdpa"}

# A plain `pip install torch` pulls several GB of CUDA wheels; say how to get the small one.
INSTALL_HINT = ('pip install -e ".[torch]" (CPU only: pip install torch transformers '
                "--extra-index-url https://download.pytorch.org/whl/cpu)")


def require() -> None:
  """Raises UserError, saying how to install them, when torch or transformers is missing."""
  missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
  if missing:
    raise UserError(f"the PyTorch stack needs {' and '.join(missing)}: {INSTALL_HINT}")


def attention_for(jax_attention: str, override: str = "") -> str:
  """The torch attention to run: `override`, or the one matching the config's attention."""
  if override and override not in ATTENTION:
    raise UserError(f"--torch_attention={override!r} is not one of {list(ATTENTION)}")
  if not override and jax_attention not in ATTENTION_FOR:
    raise UserError(f"no torch attention matches --config.attention={jax_attention!r}; pass "
                    f"--torch_attention, one of {list(ATTENTION)}")
  return override or ATTENTION_FOR[jax_attention]
