import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slm_jax import config as config_lib
from slm_jax import model, results, train
from slm_jax.errors import UserError
from test_model import _eqns


def tiny(**overrides):
  c = config_lib.tiny_config()
  c.update(overrides)
  return c


def test_loss_falls_on_a_repeated_batch_and_stays_finite():
  c = tiny(learning_rate=3e-3, lr_warmup_steps=1, steps=10, repeats=2, warmup_steps=0)
  out = train.run(c)
  losses = out["losses"]
  assert len(losses) == 20 and np.isfinite(losses).all()
  # Random tokens start near ln(vocab); memorising the one batch must cut that clearly.
  assert abs(losses[0] - np.log(c.vocab_size)) < 0.2
  assert losses[-1] < losses[0] - 1.0
  assert out["final_loss"] == losses[-1]
  assert len(out["step_times_s"]) == 20 and out["tokens_per_s"] > 0


def test_master_weights_and_adam_state_stay_fp32_with_bf16_compute():
  c = tiny()
  program = train.build(c)
  state = program.init(jax.random.key(0))
  state, metrics = program.step(state, program.batch(jax.random.key(0)))
  leaves = jax.tree.leaves(state)
  floats = [x for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)]
  assert floats and all(x.dtype == jnp.float32 for x in floats)
  assert metrics["loss"].dtype == jnp.float32
  assert np.isfinite(float(metrics["grad_norm"]))


def test_step_donates_its_state():
  program = train.build(tiny())
  state = program.init(jax.random.key(0))
  before = jax.tree.leaves(state.params)[0]
  program.step(state, program.batch(jax.random.key(0)))
  assert before.is_deleted()


def test_gradients_are_clipped_to_the_global_norm():
  # With eps far above |g| Adam's update is ~ lr * g / eps, so it scales with the clipped
  # gradient: a gradient of norm 100 clipped to 1 gives a 100x smaller update than unclipped.
  params = {"w": jnp.ones((10, 10))}
  grads = {"w": jnp.full((10, 10), 10.0)}  # global norm 100

  def update_norm(clip):
    opt = train.make_optimizer(tiny(grad_clip_norm=clip, adam_eps=1e4, weight_decay=0.0,
                                    lr_warmup_steps=1))
    state = opt.init(params)
    _, state = opt.update(grads, state, params)  # step 0 has learning rate 0 (warm-up)
    updates, _ = opt.update(grads, state, params)
    return float(jnp.linalg.norm(updates["w"]))

  np.testing.assert_allclose(update_norm(1.0) / update_norm(1e6), 0.01, rtol=1e-3)


def test_memory_budget_makes_an_oom_result():
  with pytest.raises(train.OutOfMemory, match="budget"):
    train.run(tiny(device_memory_gb=1e-4), dry_run=True)


def test_dry_run_reports_expected_memory_without_training():
  out = train.run(tiny(), dry_run=True)
  assert out["expected_memory_bytes"] > 0 and out["compile_s"] > 0
  assert "tokens_per_s" not in out


@pytest.mark.parametrize("field,value,match", [
    ("num_kv_heads", 3, "multiple of"), ("strategy", "zero9", "strategy"),
    ("per_device_batch_size", 0, "positive"), ("model", "7b", "not a preset"),
    ("compute_dtype", "int8", "compute_dtype"), ("logits_grad_dtype", "float16", "'compute'"),
    ("logits_dtype", "float16", "'compute'"), ("cross_entropy", "fused", "cross_entropy"),
    ("width_multiple", 0, "positive")])
def test_impossible_configs_are_user_errors(field, value, match):
  with pytest.raises(UserError, match=match):
    train.run(tiny(**{field: value}), dry_run=True)


def test_width_multiple_widens_the_paper_models_into_named_variants():
  widened = {}
  for size in ("100m", "500m", "1b", "2b"):
    c = config_lib.paper_config(size, "h200")
    assert config_lib.model_name(c) == size  # off by default: the paper's model
    c.width_multiple = 128
    m = config_lib.model_config(c)
    widened[size] = (config_lib.model_name(c), m.num_heads, m.kv_heads, m.ffn_dim)
  assert widened == {"100m": ("100m-w128", 14, 14, 2432), "500m": ("500m-w128", 24, 24, 4224),
                     "1b": ("1b-w128", 30, 30, 5248), "2b": ("2b-w128", 40, 40, 6784)}
  # Grouped KV heads: the KV width is widened and each KV head keeps its query heads.
  m = config_lib.model_config(tiny(num_heads=4, num_kv_heads=2, width_multiple=128))
  assert (m.kv_heads, m.num_heads, m.head_dim, m.ffn_dim) == (8, 16, 16, 256)
  # A custom model stays "custom", widened or not.
  assert config_lib.model_name(tiny(num_layers=3, width_multiple=128)) == "custom"


def test_a_widened_model_trains_and_is_recorded_as_its_variant():
  c = tiny(width_multiple=128, steps=2, repeats=1, warmup_steps=0)
  record = results.make_record(c, status="ok", measured=train.run(c))
  assert record["model"] == "tiny-w128" and np.isfinite(record["final_loss"])
  wide = config_lib.model_config(c)
  assert (wide.num_heads, wide.ffn_dim) == (8, 256)  # 4 x 16 -> 8 x 16 wide, 172 -> 256
  assert record["params"] == model.count_params(wide) > model.count_params(model.PRESETS["tiny"])


def test_logits_grad_dtype_compute_follows_the_compute_dtype():
  assert config_lib.logits_grad_dtype(tiny()) == "bfloat16"
  assert config_lib.logits_grad_dtype(tiny(compute_dtype="float32")) == "float32"
  assert config_lib.logits_grad_dtype(tiny(logits_grad_dtype="float32")) == "float32"


def test_a_float32_logit_gradient_of_bf16_logits_is_a_user_error():
  with pytest.raises(UserError, match="needs --config.logits_dtype=float32"):
    train.run(tiny(logits_dtype="compute", logits_grad_dtype="float32"), dry_run=True)


def test_bf16_logits_train_as_the_fp32_ones_do():
  # The loss upcasts bf16 logits itself, so it and the run follow the fp32 logits' closely.
  c = dict(learning_rate=3e-3, lr_warmup_steps=1, steps=8, repeats=1, warmup_steps=0)
  fp32, bf16 = (train.run(tiny(logits_dtype=d, **c))["losses"] for d in ("float32", "compute"))
  np.testing.assert_allclose(bf16, fp32, rtol=2e-2)
  assert bf16[-1] < bf16[0] - 0.5


def test_the_loss_of_bf16_logits_reduces_over_the_vocabulary_in_fp32():
  c = tiny(logits_dtype="compute")
  program = train.build(c)
  params = program.abstract_state.params
  jaxpr = jax.make_jaxpr(program.loss)(params, program.abstract_batch).jaxpr
  eqns = list(_eqns(jaxpr))
  head = [e for e in eqns if e.primitive.name == "dot_general"
          and e.outvars[0].aval.shape[-1] == c.vocab_size]
  assert [e.outvars[0].aval.dtype for e in head] == [jnp.bfloat16]
  over_vocab = [e for e in eqns if e.primitive.name in ("reduce_max", "reduce_sum")
                and e.invars[0].aval.shape[-1] == c.vocab_size]
  assert over_vocab and all(e.invars[0].aval.dtype == jnp.float32 for e in over_vocab)


def _primitives(fn, *args):
  return {e.primitive.name for e in _eqns(jax.make_jaxpr(fn)(*args).jaxpr)}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_the_select_cross_entropy_is_the_gather_one_without_a_scatter(dtype):
  logits = (3 * jax.random.normal(jax.random.key(0), (2, 5, 37))).astype(dtype)
  targets = jax.random.randint(jax.random.key(1), (2, 5), 0, 37)
  loss = {k: jax.value_and_grad(lambda x, k=k: train.cross_entropy(x, targets, k))
          for k in ("gather", "select")}
  (want, want_grad), (got, got_grad) = loss["gather"](logits), loss["select"](logits)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got_grad.dtype == dtype
  np.testing.assert_allclose(np.float32(got_grad), np.float32(want_grad), rtol=1e-5, atol=1e-7)
  # The point of "select": its gradient has no scatter for XLA to stop its fusions at.
  assert "scatter-add" in _primitives(loss["gather"], logits)
  assert not {p for p in _primitives(loss["select"], logits) if "scatter" in p or "gather" in p}


def test_a_select_cross_entropy_run_follows_the_gather_one():
  c = dict(learning_rate=3e-3, lr_warmup_steps=1, steps=4, repeats=1, warmup_steps=0)
  gather, select = (train.run(tiny(cross_entropy=k, **c))["losses"] for k in ("gather", "select"))
  np.testing.assert_allclose(select, gather, rtol=1e-4)


@pytest.mark.parametrize("field", ["device_memory_gb", "price_per_device_hour", "peak_tflops"])
def test_a_negative_budget_price_or_peak_is_one_clear_error(field):
  config_lib.validate(tiny(**{field: 0.0}))  # 0: the device's own, or the price table's
  with pytest.raises(UserError, match=f"--config.{field} must be >= 0 .0: the default., got -1"):
    config_lib.validate(tiny(**{field: -1.0}))
