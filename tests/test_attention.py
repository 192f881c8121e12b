import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slm_jax.attention import attend, check
from slm_jax.errors import UserError


def reference(q, k, v, causal):
  """Float64 NumPy attention with grouped KV heads repeated explicitly."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  group = q.shape[2] // k.shape[2]
  k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
  s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  if causal:
    sq, sk = q.shape[1], k.shape[1]
    mask = np.arange(sq)[:, None] + (sk - sq) >= np.arange(sk)[None, :]
    s = np.where(mask, s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", p, v)


def random_qkv(seed, b, s, h, hkv, d, dtype):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kq, (b, s, h, d), dtype),
          jax.random.normal(kk, (b, s, hkv, d), dtype),
          jax.random.normal(kv, (b, s, hkv, d), dtype))


def rel_err(out, ref):
  out = np.asarray(out, np.float64)
  return np.linalg.norm(out - ref) / np.linalg.norm(ref)


@pytest.mark.parametrize("b,s,h,hkv,d,causal", [
    (2, 16, 4, 4, 16, True), (1, 33, 6, 2, 32, True), (3, 8, 3, 1, 8, False),
    (2, 64, 8, 8, 64, False)])
def test_xla_matches_float64_reference(b, s, h, hkv, d, causal):
  q, k, v = random_qkv(b * 100 + s, b, s, h, hkv, d, jnp.float32)
  with jax.default_matmul_precision("highest"):  # GPUs would use TF32 for fp32 otherwise
    out = attend(q, k, v, causal=causal, impl="xla")
  assert out.shape == q.shape and out.dtype == q.dtype
  assert rel_err(out, reference(q, k, v, causal)) < 1e-5


def test_xla_bf16_within_bf16_tolerance():
  q, k, v = random_qkv(7, 2, 128, 4, 2, 64, jnp.bfloat16)
  out = attend(q, k, v, causal=True, impl="xla")
  assert out.dtype == jnp.bfloat16
  assert rel_err(out, reference(q, k, v, True)) < 1e-2


def test_causal_output_ignores_future_keys():
  q, k, v = random_qkv(3, 1, 16, 2, 2, 8, jnp.float32)
  out = attend(q, k, v, impl="xla")
  k2, v2 = k.at[:, 10:].set(100.0), v.at[:, 10:].set(-100.0)
  out2 = attend(q, k2, v2, impl="xla")
  np.testing.assert_array_equal(out[:, :10], out2[:, :10])
  assert not np.allclose(out[:, 10:], out2[:, 10:])


def test_unknown_impl_and_bad_shapes_are_clear_errors():
  q, k, v = random_qkv(0, 1, 8, 4, 4, 8, jnp.float32)
  with pytest.raises(UserError, match="not one of"):
    attend(q, k, v, impl="flash9000")
  with pytest.raises(UserError, match="multiple of kv heads"):
    attend(q, k[:, :, :3], v[:, :, :3], impl="xla")


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the CPU refusal")
def test_cudnn_refuses_cpu_with_a_clear_message():
  q, k, v = random_qkv(0, 1, 8, 4, 4, 8, jnp.bfloat16)
  with pytest.raises(UserError, match="needs an NVIDIA GPU"):
    attend(q, k, v, impl="cudnn")


def test_cudnn_shape_and_dtype_constraints_named():
  with pytest.raises(UserError, match="bf16 or fp16"):
    check("cudnn", dtype=jnp.float32, head_dim=64, platform="gpu")
  with pytest.raises(UserError, match="multiple of 8"):
    check("cudnn", dtype=jnp.bfloat16, head_dim=60, platform="gpu")


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU")
@pytest.mark.parametrize("h,hkv,d", [(13, 13, 64), (8, 2, 128)])
def test_cudnn_matches_reference_on_gpu(h, hkv, d):
  q, k, v = random_qkv(11, 2, 256, h, hkv, d, jnp.bfloat16)
  out = attend(q, k, v, causal=True, impl="cudnn")
  assert rel_err(out, reference(q, k, v, True)) < 1e-2
