"""FP8 projections (--config.fp8): numerics against a float64 quantize-dequantize reference,
the GEMMs XLA is handed, training, delayed scaling's state under every strategy and in
checkpoints, the device check and the records."""

import re
import types
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from slm_jax import config as config_lib
from slm_jax import fp8, results, train, trainer
from slm_jax.checkpoint import Checkpointer
from slm_jax.errors import UserError
from test_trainer import cfg as text_cfg, leaves, restore, text  # noqa: F401 (a fixture)

E4M3_MAX, E5M2_MAX = 448.0, 57344.0


def qdq64(x, dtype, scale, compute=np.float32):
  """The reference: x / scale rounded to the fp8 format (clipped to its range), times scale,
  in float64. The quantization divides in the compute dtype (flax's ops), so for bf16 the
  scale and the quotient are rounded to bf16 first."""
  limit = E4M3_MAX if dtype == ml_dtypes.float8_e4m3fn else E5M2_MAX
  scale = np.float32(scale).astype(compute).astype(np.float32)
  scaled = (np.asarray(x, np.float32) / scale).astype(compute).astype(np.float32)
  return np.clip(scaled, -limit, limit).astype(dtype).astype(np.float64) * np.float64(scale)


def amax_scale(x, limit):
  return np.float32(np.max(np.abs(np.asarray(x, np.float32))) / limit)


def operands(dtype=jnp.float32):
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (2, 8, 64), dtype)
  w = (0.02 * jax.random.normal(kw, (64, 48))).astype(dtype)
  g = (1e-4 * jax.random.normal(kg, (2, 8, 48))).astype(dtype)
  return x, w, g


def rel_err(got, want):
  return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want)))


def test_current_scaling_matches_a_float64_quantize_dequantize_reference():
  x, w, g = operands()
  y, vjp = jax.vjp(fp8.current_dot, x, w)
  dx, dw = vjp(g)
  e4, e5 = ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2
  qx = qdq64(x, e4, amax_scale(x, E4M3_MAX))
  qw = qdq64(w, e4, amax_scale(w, E4M3_MAX))
  qg = qdq64(g, e5, amax_scale(g, E5M2_MAX))
  assert rel_err(y, qx @ qw) < 1e-5
  assert rel_err(dx, qg @ qw.T) < 1e-5
  assert rel_err(dw, np.einsum("bsk,bsn->kn", qx, qg)) < 1e-5
  # ...and it is quantized: the exact product is far off (e4m3 keeps 3 mantissa bits).
  exact = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
  assert rel_err(y, exact) > 1e-3
  assert y.dtype == dx.dtype == dw.dtype == jnp.float32


def test_current_scaling_in_bf16_stays_within_bf16_rounding_of_the_reference():
  x, w, g = operands(jnp.bfloat16)
  y, vjp = jax.vjp(fp8.current_dot, x, w)
  dx, dw = vjp(g)
  e4, e5 = ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2
  bf16 = ml_dtypes.bfloat16
  qx = qdq64(x, e4, amax_scale(x, E4M3_MAX), bf16)
  qw = qdq64(w, e4, amax_scale(w, E4M3_MAX), bf16)
  qg = qdq64(g, e5, amax_scale(g, E5M2_MAX), bf16)
  assert y.dtype == dx.dtype == dw.dtype == jnp.bfloat16
  # The products written in bf16, then multiplied by the bf16 scales: two bf16 roundings.
  assert rel_err(y, qx @ qw) < 2**-7
  assert rel_err(dx, qg @ qw.T) < 2**-7
  assert rel_err(dw, np.einsum("bsk,bsn->kn", qx, qg)) < 2**-7


def test_an_all_zero_operand_gives_zeros_not_nans():
  x, w, _ = operands()
  y = fp8.current_dot(jnp.zeros_like(x), w)
  assert not np.any(np.asarray(y))


def delayed_dot(history):
  dot = fp8.Dot("delayed", amax_history=history)
  graphdef, state = nnx.split(dot, fp8.Fp8State)
  return graphdef, nnx.to_pure_dict(state)


def test_delayed_scaling_uses_the_history_s_amax_and_returns_the_next_state_as_gradient():
  x, w, g = operands()
  graphdef, state = delayed_dot(4)
  # Histories as if earlier steps had seen these amaxes; the input's is below this x's, so
  # this step clips the input at its history's range.
  amax = {"input": 2.0, "kernel": 0.1, "output_grad": 1e-3}
  for name, value in amax.items():
    # flax keeps the newest amax at index 0 (the oldest is the next to go).
    state[f"{name}_amax_history"] = jnp.array([value, value / 2, 0.0, 0.0])

  def f(x, w, state):
    return nnx.merge(graphdef, state)(x, w)

  y, vjp = jax.vjp(f, x, w, state)
  dx, dw, new = vjp(g)
  e4, e5 = ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2
  sx, sw, sg = (np.float32(amax[n] / m) for n, m in
                (("input", E4M3_MAX), ("kernel", E4M3_MAX), ("output_grad", E5M2_MAX)))
  qx, qw, qg = qdq64(x, e4, sx), qdq64(w, e4, sw), qdq64(g, e5, sg)
  assert np.max(np.abs(x)) > amax["input"]  # so clipping is part of what is checked
  assert rel_err(y, qx @ qw) < 1e-5
  assert rel_err(dx, qg @ qw.T) < 1e-5
  assert rel_err(dw, np.einsum("bsk,bsn->kn", qx, qg)) < 1e-5
  # The state's "gradient" is its next value: this step's amax joins the history, and the
  # scale is the one this step used.
  for name, t in (("input", x), ("kernel", w), ("output_grad", g)):
    np.testing.assert_allclose(new[f"{name}_amax_history"][0], np.max(np.abs(t)), rtol=1e-6)
    assert amax[name] in np.asarray(new[f"{name}_amax_history"])
  for name, s in (("input", sx), ("kernel", sw), ("output_grad", sg)):
    np.testing.assert_allclose(new[f"{name}_scale"], [s], rtol=1e-6)


def tiny(**overrides):
  c = config_lib.tiny_config()
  c.update(learning_rate=3e-3, lr_warmup_steps=1, steps=10, repeats=2, warmup_steps=0)
  c.update(overrides)
  return c


def step_hlo(c):
  program = train.build(c)
  return program.step.lower(program.abstract_state, program.abstract_batch).as_text()


def fp8_dots(hlo):
  return [l for l in hlo.splitlines() if "dot_general" in l and "xf8" in l]


@pytest.mark.parametrize("fuse", [False, True])
def test_the_projections_and_only_they_become_fp8_gemms(fuse):
  c = tiny(fp8=True, fuse_projections=fuse)
  dots = fp8_dots(step_hlo(c))
  # Forward, input gradient and weight gradient of each GEMM: 7 projections a layer (4 when
  # q/k/v and gate/up are fused), e4m3 operands forward, e5m2 gradients backward.
  assert len(dots) == 3 * c.num_layers * (4 if fuse else 7)
  assert sum("xf8E5M2" in l for l in dots) == 2 * len(dots) // 3
  assert all("xf8E4M3FN" in l for l in dots)
  assert not fp8_dots(step_hlo(tiny()))


def _fp8_gpu() -> bool:
  try:
    fp8.check_device(jax.devices()[0])
  except UserError:
    return False
  return jax.devices()[0].platform == "gpu"


# On an H200 with jax 0.11.2, current scaling compiled 30 of the tiny model's 42 projection GEMMs
# as FP8 calls while the 1B step ran all 399 as FP8 kernels (benchmarks/PERF_NOTES.md section 15,
# open questions): expected to fail until the 12 are found; not strict, so a fix shows as XPASS.
_TINY_CURRENT = pytest.mark.xfail(reason="tiny model, current scaling: 30 of 42 FP8 on an H200",
                                  strict=False)


@pytest.mark.skipif(not _fp8_gpu(), reason="needs a GPU with FP8 tensor cores")
@pytest.mark.parametrize("scaling", [pytest.param("current", marks=_TINY_CURRENT), "delayed"])
def test_on_an_fp8_gpu_every_projection_gemm_is_a_cublaslt_fp8_gemm(scaling):
  # As the Hopper presets compile (cuBLAS, not Triton, for XLA's GEMMs).
  c = tiny(fp8=True, fp8_scaling=scaling, xla_options="xla_gpu_enable_triton_gemm=false")
  program = train.build(c)
  compiled = train.compile_step(c, program)[0].as_text()
  targets = re.findall(r'custom_call_target="([^"]*)"', compiled)
  f8 = [t for t in targets if "f8" in t]
  assert len(f8) == 3 * 7 * c.num_layers, sorted(set(targets))


@pytest.mark.parametrize("scaling", ["current", "delayed"])
def test_fp8_training_lowers_the_loss_with_finite_gradients(scaling):
  out = train.run(tiny(fp8=True, fp8_scaling=scaling))
  losses = out["losses"]
  assert np.isfinite(losses).all()
  assert losses[-1] < losses[0] - 1.0
  program = train.build(tiny(fp8=True, fp8_scaling=scaling))
  state = program.init(jax.random.key(0))
  batch = program.batch(jax.random.key(1))
  for _ in range(2):  # the second step: delayed scaling past its empty first history
    state, metrics = program.step(state, batch)
    assert np.isfinite(float(metrics["grad_norm"])) and float(metrics["grad_norm"]) > 0
  assert (state.fp8 is None) == (scaling == "current")


def test_fp8_follows_the_bf16_model_closely():
  bf16 = train.run(tiny(steps=5, repeats=1))["losses"]
  ours = train.run(tiny(steps=5, repeats=1, fp8=True))["losses"]
  np.testing.assert_allclose(ours, bf16, rtol=0.01)
  assert ours != bf16


def test_the_delayed_state_is_float32_beside_the_unchanged_parameters():
  program = train.build(tiny(fp8=True, fp8_scaling="delayed", fp8_amax_history=16))
  bf16 = train.build(tiny())
  state = program.abstract_state
  assert jax.tree.structure(state.params) == jax.tree.structure(bf16.abstract_state.params)
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(bf16.abstract_state.opt_state)
  fp8_leaves = jax.tree.leaves(state.fp8)
  # 6 arrays (scale and amax history of input, kernel, output gradient) per projection.
  assert len(fp8_leaves) == 6 * 7 * 2
  assert {x.shape for x in fp8_leaves} == {(1,), (16,)}
  assert all(x.dtype == jnp.float32 for x in fp8_leaves)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")
@pytest.mark.parametrize("strategy,schedule", [("ddp", "xla"), ("fsdp_full", "xla"),
                                               ("fsdp_grad_op", "xla"), ("ddp", "per_layer")])
def test_delayed_state_is_replicated_and_agrees_with_one_device(strategy, schedule):
  def run(**kw):
    c = tiny(fp8=True, fp8_scaling="delayed", fp8_amax_history=8, compute_dtype="float32",
             ffn_pad_multiple=1, **kw)
    program = train.build(c)
    state = program.init(jax.random.key(0))
    batch = program.batch(jax.random.key(1))
    losses = []
    for _ in range(3):
      state, metrics = program.step(state, batch)
      losses.append(float(metrics["loss"]))
    return program, state, losses

  _, one, one_losses = run(strategy="single", per_device_batch_size=16)
  program, state, losses = run(strategy=strategy, per_device_batch_size=2,
                               reduce_schedule=schedule)
  for s in jax.tree.leaves(program.state_shardings.fp8):
    assert s.is_fully_replicated and len(s.device_set) == 8
  for x in jax.tree.leaves(state.fp8):
    assert x.sharding.is_fully_replicated
  # The amaxes are of the global tensors, so the histories are one device's.
  for got, want in zip(jax.tree.leaves(state.fp8), jax.tree.leaves(one.fp8)):
    np.testing.assert_allclose(got, want, rtol=1e-3)
  np.testing.assert_allclose(losses, one_losses, rtol=1e-3)


def test_a_delayed_run_resumes_bit_for_bit_with_its_scales(text, tmp_path):  # noqa: F811
  kw = dict(fp8=True, fp8_scaling="delayed", fp8_amax_history=4)
  straight = trainer.run(text_cfg(text, **kw), workdir=tmp_path / "a")
  trainer.run(text_cfg(text, train_steps=3, **kw), workdir=tmp_path / "b")
  resumed = trainer.run(text_cfg(text, **kw), workdir=tmp_path / "b")
  assert resumed["resumed_from_step"] == 3
  assert resumed["losses"] == straight["losses"] and resumed["eval_losses"] == straight["eval_losses"]
  (_, a, _), (_, b, _) = (restore(tmp_path / d / "checkpoints", text_cfg(text, **kw))
                          for d in ("a", "b"))
  assert a.fp8 is not None and float(np.max(leaves(a.fp8)[0])) > 0
  for x, y in zip(leaves(a), leaves(b)):
    np.testing.assert_array_equal(x, y)
  # A checkpoint cannot be resumed with another fp8 state: one error, as for another model.
  with pytest.raises(UserError, match="checkpoint"):
    restore(tmp_path / "a/checkpoints", text_cfg(text))


class _TwoFieldState(NamedTuple):  # the train state as checkpoints held it before FP8
  params: Any
  opt_state: Any


def test_checkpoints_of_a_state_without_fp8_fields_stay_readable(tmp_path):
  program = train.build(tiny())
  state = program.init(jax.random.key(0))
  ckpt = Checkpointer(tmp_path, 2)
  ckpt.save(1, _TwoFieldState(state.params, state.opt_state), {"data": [[0, 0]]})
  ckpt.close()
  ckpt = Checkpointer(tmp_path, 2)
  step, restored, _ = ckpt.restore_latest(program.abstract_state)
  ckpt.close()
  assert step == 1 and restored.fp8 is None
  for x, y in zip(leaves(state), leaves(restored)):
    np.testing.assert_array_equal(x, y)


def device(platform, kind, cc=None):
  return types.SimpleNamespace(platform=platform, device_kind=kind, compute_capability=cc)


@pytest.mark.parametrize("dev", [device("gpu", "NVIDIA A100-SXM4-80GB", "8.0"),
                                 device("gpu", "Tesla V100-SXM2-16GB", "7.0"),
                                 device("tpu", "TPU v4")])
def test_a_device_without_fp8_tensor_cores_is_one_user_error(dev):
  with pytest.raises(UserError, match="--config.fp8=false") as e:
    fp8.check_device(dev)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("dev", [device("gpu", "NVIDIA H100 80GB HBM3", "9.0"),
                                 device("gpu", "NVIDIA L40S", "8.9"),
                                 device("gpu", "NVIDIA B200", "10.0"), device("cpu", "cpu")])
def test_fp8_devices_and_the_cpu_emulation_pass_the_check(dev):
  fp8.check_device(dev)


def test_an_unknown_scaling_is_a_user_error():
  with pytest.raises(UserError, match="fp8_scaling"):
    config_lib.validate(tiny(fp8=True, fp8_scaling="dynamic"))
  with pytest.raises(UserError, match="fp8_amax_history"):
    config_lib.validate(tiny(fp8=True, fp8_amax_history=0))


def test_records_carry_fp8_and_its_mfu_against_the_fp8_peak():
  h100 = [results.DeviceInfo("NVIDIA H100 80GB HBM3", "gpu")]
  measured = {"tokens_per_s": 1e6, "tokens_per_s_per_device": 1e6}
  on = results.make_record(tiny(fp8=True), status="ok", measured=dict(measured), devices=h100)
  off = results.make_record(tiny(), status="ok", measured=dict(measured), devices=h100)
  assert on["config"]["fp8"] is True and on["config"]["fp8_scaling"] == "current"
  assert on["mfu"] == off["mfu"] == pytest.approx(on["achieved_tflops_per_device"] / 989.0)
  assert on["peak_fp8_tflops"] == 1979.0
  assert on["mfu_fp8"] == pytest.approx(on["achieved_tflops_per_device"] / 1979.0)
  assert off["mfu_fp8"] is None and off["peak_fp8_tflops"] is None
  assert "of the FP8 peak" in results.summary(on) and "FP8" not in results.summary(off)


def test_the_report_keeps_fp8_runs_off_the_paper_s_figures_and_labels_their_curves():
  from slm_jax import report
  from test_report import record, train_record

  bf16, ours = record(tps_per_device=100), record(tps_per_device=200)
  ours["config"] = {"fp8": True, "fp8_scaling": "current"}
  assert [r["tokens_per_s_per_device"] for r in report.prepare([bf16, ours])] == [100]
  curve = train_record("100m", "NVIDIA H100 80GB HBM3", 3.0, 1.0)
  curve["config"] = {"fp8": True, "fp8_scaling": "delayed"}
  [c] = report.train_curves([curve])
  assert "fp8 delayed" in c["label"]
