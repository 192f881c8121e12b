import dataclasses
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from slm_jax import model


@pytest.mark.parametrize("name,expected", [
    ("100m", 130_569_920), ("500m", 526_550_016), ("1b", 970_458_240),
    ("2b", 1_969_027_008)])
def test_paper_parameter_counts(name, expected):
  assert model.count_params(model.PRESETS[name]) == expected


def test_paper_presets_match_the_reconstruction():
  widths = {n: model.PRESETS[n].d_model for n in ("100m", "500m", "1b", "2b")}
  assert widths == {"100m": 832, "500m": 1536, "1b": 1920, "2b": 2496}
  assert [model.PRESETS[n].ffn_dim for n in ("100m", "500m", "1b", "2b")] == [
      2332, 4147, 5184, 6739]


def test_counting_allocates_nothing():
  m = model.abstract_model(model.PRESETS["2b"])
  leaves = jax.tree.leaves(nnx.state(m))
  assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)


def test_grouped_kv_heads_shrink_kv_projections():
  full = model.ModelConfig(num_layers=2, num_heads=8, head_dim=16, ffn_dim=64, vocab_size=100)
  gqa = model.ModelConfig(num_layers=2, num_heads=8, head_dim=16, ffn_dim=64, vocab_size=100,
                          num_kv_heads=2)
  saved = model.count_params(full) - model.count_params(gqa)
  assert saved == 2 * 2 * 128 * (128 - 32)  # layers x (k, v) x d_model x (H - Hkv) * head_dim
  assert model.flops_per_token(full, 64) - model.flops_per_token(gqa, 64) == 6 * saved


def test_flops_per_token_formula():
  cfg = model.PRESETS["100m"]
  matmul = 9 * (4 * 832 * 832 + 3 * 832 * 2332) + 832 * 32000
  assert model.flops_per_token(cfg, 1024) == 6 * matmul + 6 * 9 * 832 * 1024


def test_logits_shape_dtype_finite_and_params_fp32():
  cfg = model.PRESETS["tiny"]
  m = model.Llama(cfg, rngs=nnx.Rngs(0))
  tokens = jax.random.randint(jax.random.key(0), (2, 24), 0, cfg.vocab_size)
  logits = m(tokens)
  assert logits.shape == (2, 24, cfg.vocab_size)
  assert logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(m, nnx.Param)))


def test_model_is_causal():
  cfg = model.PRESETS["tiny"]
  m = model.Llama(cfg, rngs=nnx.Rngs(1))
  tokens = jax.random.randint(jax.random.key(1), (1, 16), 0, cfg.vocab_size)
  changed = tokens.at[0, 12].set((tokens[0, 12] + 1) % cfg.vocab_size)
  a, b = m(tokens), m(changed)
  np.testing.assert_array_equal(a[:, :12], b[:, :12])
  assert not np.allclose(a[:, 12:], b[:, 12:])


def test_rope_is_a_rotation_and_relative():
  x = jax.random.normal(jax.random.key(2), (1, 8, 2, 16))
  pos = jnp.arange(8)
  y = model.rope(x, pos, 10_000.0)
  np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
  # <rope(q, i), rope(k, j)> depends on i - j only.
  q = jnp.broadcast_to(x[:, :1], x.shape)
  k = jnp.broadcast_to(x[:, 1:2], x.shape)
  dots = jnp.einsum("bshd,bshd->bsh", model.rope(q, pos, 1e4), model.rope(k, pos + 3, 1e4))
  np.testing.assert_allclose(dots, jnp.broadcast_to(dots[:, :1], dots.shape), rtol=1e-4)


def _same_function(a, b, tokens):
  """Asserts models `a` and `b` give the same loss and gradients on `tokens` (fp32, highest
  matmul precision); returns a's gradients and both losses' jaxprs."""
  def loss_of(m):
    graphdef, params = nnx.split(m, nnx.Param)
    loss = lambda p: jnp.mean(nnx.merge(graphdef, p)(tokens) ** 2)
    return jax.value_and_grad(loss)(params), jax.make_jaxpr(loss)(params)

  with jax.default_matmul_precision("highest"):
    ((la, ga), ja), ((lb, gb), jb) = loss_of(a), loss_of(b)
  assert jax.tree.map(jnp.shape, ga) == jax.tree.map(jnp.shape, gb)
  np.testing.assert_allclose(la, lb, rtol=1e-6)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-8), ga, gb)
  return ga, ja, jb


def test_ffn_padding_keeps_the_function_parameters_and_gradients():
  cfg = model.PRESETS["tiny"]  # ffn_dim 172: padded to 192 at compute time
  make = lambda pad: model.Llama(cfg, ffn_pad_multiple=pad, dtype=jnp.float32,
                                 rngs=nnx.Rngs(3))
  plain, padded = make(1), make(64)
  assert padded.layers[0].mlp.pad == 20 and plain.layers[0].mlp.pad == 0
  shapes = lambda m: jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(m, nnx.Param)))
  assert shapes(plain) == shapes(padded)
  tokens = jax.random.randint(jax.random.key(4), (2, 16), 0, cfg.vocab_size)
  ga, _, _ = _same_function(plain, padded, tokens)
  assert jnp.abs(ga["layers"][0]["mlp"]["down_proj"]["kernel"][...]).sum() > 0


def test_fused_projections_keep_the_function_parameters_and_gradients():
  # Grouped KV heads, so q's and k/v's kernels differ in width; padded FFN, as the default.
  cfg = dataclasses.replace(model.PRESETS["tiny"], num_kv_heads=2)
  make = lambda fuse: model.Llama(cfg, ffn_pad_multiple=64, dtype=jnp.float32,
                                  fuse_projections=fuse, rngs=nnx.Rngs(3))
  tokens = jax.random.randint(jax.random.key(4), (2, 16), 0, cfg.vocab_size)
  _, plain_jaxpr, fused_jaxpr = _same_function(make(False), make(True), tokens)
  # Per layer: q, k, v, o, gate, up, down as 7 dots, fused as 4; attention's own 2 (scores
  # and values: the `xla` kernel); and the head.
  assert len(list(_dots(plain_jaxpr.jaxpr))) == (7 + 2) * cfg.num_layers + 1
  assert len(list(_dots(fused_jaxpr.jaxpr))) == (4 + 2) * cfg.num_layers + 1


@pytest.mark.parametrize("fuse", [False, True])
def test_folded_norm_scales_keep_the_function_parameters_and_gradients(fuse):
  cfg = dataclasses.replace(model.PRESETS["tiny"], num_kv_heads=2)
  make = lambda fold: model.Llama(cfg, ffn_pad_multiple=64, dtype=jnp.float32,
                                  fuse_projections=fuse, fold_norm_scale=fold,
                                  rngs=nnx.Rngs(3))
  plain, folded = make(False), make(True)
  # Scales away from their initial ones, so a scale applied twice or not at all would show.
  for m in (plain, folded):
    for layer in m.layers:
      for norm in (layer.input_layernorm, layer.post_attention_layernorm):
        norm.scale[...] = jax.random.uniform(jax.random.key(5), norm.scale.shape) + 0.5
  tokens = jax.random.randint(jax.random.key(4), (2, 16), 0, cfg.vocab_size)
  grads, _, _ = _same_function(plain, folded, tokens)
  assert jnp.abs(grads["layers"][0]["input_layernorm"]["scale"][...]).sum() > 0

  def token_sums(m):
    """reduce_sums in the gradient that sum [batch, seq, d_model] over its tokens."""
    graphdef, params = nnx.split(m, nnx.Param)
    loss = lambda p: jnp.mean(nnx.merge(graphdef, p)(tokens) ** 2)
    jaxpr = jax.make_jaxpr(jax.grad(loss))(params).jaxpr
    return [e for e in _eqns(jaxpr) if e.primitive.name == "reduce_sum"
            and e.invars[0].aval.shape == (2, 16, cfg.d_model) and e.params["axes"] == (0, 1)]
  # Two per block (its norms' scales) and the final norm's; folded, only the final norm's.
  assert len(token_sums(plain)) == 2 * cfg.num_layers + 1
  assert len(token_sums(folded)) == 1


def _eqns(jaxpr):
  """Every equation in `jaxpr`, nested ones included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _eqns(inner)


def _dots(jaxpr):
  """Every dot_general in `jaxpr`, nested ones included."""
  return (e for e in _eqns(jaxpr) if e.primitive.name == "dot_general")


def test_a_bf16_logit_gradient_keeps_the_logits_and_runs_the_head_backward_in_bf16():
  cfg = model.PRESETS["tiny"]
  tokens = jax.random.randint(jax.random.key(6), (2, 16), 0, cfg.vocab_size)
  targets = jnp.roll(tokens, -1, axis=1)

  def loss_grad_and_head_dots(grad_dtype):
    m = model.Llama(cfg, logits_grad_dtype=grad_dtype, rngs=nnx.Rngs(5))
    graphdef, params = nnx.split(m, nnx.Param)

    def loss(p):
      logits = nnx.merge(graphdef, p)(tokens)
      return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
    jaxpr = jax.make_jaxpr(jax.grad(loss))(params)
    head = [[str(v.aval.dtype) for v in e.invars] for e in _dots(jaxpr.jaxpr)
            if any(v.aval.shape[-1] == cfg.vocab_size for v in e.invars)]
    return m(tokens), jax.grad(loss)(params), head

  logits_a, grads_a, head_a = loss_grad_and_head_dots(jnp.float32)
  logits_b, grads_b, head_b = loss_grad_and_head_dots(jnp.bfloat16)
  assert logits_a.dtype == logits_b.dtype == jnp.float32
  np.testing.assert_array_equal(logits_a, logits_b)
  # Forward, then the two backward matmuls: fp32 logit gradients in one, bf16 in the other.
  assert head_a == [["bfloat16", "bfloat16"], ["float32", "bfloat16"], ["float32", "bfloat16"]]
  assert sorted(head_b) == [["bfloat16", "bfloat16"]] * 3

  rel = lambda a, b: float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))
  errors = jax.tree.leaves(jax.tree.map(rel, grads_a, grads_b))
  assert 0 < max(errors) < 2e-2, max(errors)  # one gradient rounded to bf16, nothing else


def test_bf16_logits_are_the_fp32_logits_rounded():
  cfg = model.PRESETS["tiny"]
  tokens = jax.random.randint(jax.random.key(6), (2, 16), 0, cfg.vocab_size)
  fp32 = model.Llama(cfg, rngs=nnx.Rngs(5))(tokens)
  bf16 = model.Llama(cfg, logits_dtype=jnp.bfloat16, rngs=nnx.Rngs(5))(tokens)
  assert fp32.dtype == jnp.float32 and bf16.dtype == jnp.bfloat16
  # One rounding of each logit: within bf16's half-ulp (2^-9 relative) of the fp32 value.
  np.testing.assert_allclose(bf16.astype(jnp.float32), fp32, rtol=2 ** -8, atol=1e-6)
