"""The Pallas flash attention against a float64 reference: in Pallas' interpreter on a CPU,
as Triton kernels on a GPU (the same tests, `python -m pytest tests/test_pallas_attention.py`).

The interpreter fills every output with NaN before the kernels run, so a tile a kernel never
writes (a wrong loop bound, a skipped causal block) turns into NaN and fails the comparison;
`test_interpreter_poisons_unwritten_outputs` keeps that premise honest across jax versions.
"""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl

from slm_jax.attention import attend, check, pallas, pallas_tuning
from slm_jax.attention.pallas_tuning import KernelConfig, Launch
from slm_jax.errors import UserError
from test_attention import reference, random_qkv, rel_err
from test_cli import ROOT
from test_cli import main as run_cli

# Small, unequal tiles so a short sequence spans many of them: block_q > block_k in the forward
# and dQ kernels, block_q < block_k in the dK/dV kernel.
SMALL = KernelConfig(fwd=Launch(32, 16, 4, 2), dkdv=Launch(16, 32, 4, 2), dq=Launch(32, 16, 4, 2))


def reference_grads(q, k, v, do, causal):
  """Float64 dq, dk, dv of attention for output cotangent `do`; dk, dv summed over each KV
  head's query group."""
  q, k, v, do = (np.asarray(x, np.float64) for x in (q, k, v, do))
  group = q.shape[2] // k.shape[2]
  kr, vr = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
  scale = q.shape[-1] ** -0.5
  s = np.einsum("bqhd,bkhd->bhqk", q, kr) * scale
  if causal:
    s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  dp = np.einsum("bqhd,bkhd->bhqk", do, vr)
  ds = p * (dp - (p * dp).sum(-1, keepdims=True))
  dq = np.einsum("bhqk,bkhd->bqhd", ds, kr) * scale
  dk = np.einsum("bhqk,bqhd->bkhd", ds, q) * scale
  dv = np.einsum("bhqk,bqhd->bkhd", p, do)
  fold = lambda x: x.reshape(*k.shape[:2], k.shape[2], group, k.shape[3]).sum(3)
  return dq, fold(dk), fold(dv)


def pallas_and_grads(q, k, v, do, causal, config):
  def run(q, k, v, do):
    out, vjp = jax.vjp(lambda q, k, v: pallas.attend(q, k, v, causal=causal, config=config),
                       q, k, v)
    return out, vjp(do)
  return jax.jit(run)(q, k, v, do)


def assert_matches_reference(q, k, v, causal, config, tol):
  do = jax.random.normal(jax.random.key(99), q.shape, q.dtype)
  out, grads = pallas_and_grads(q, k, v, do, causal, config)
  assert out.shape == q.shape and out.dtype == q.dtype
  for name, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads),
                             (reference(q, k, v, causal), *reference_grads(q, k, v, do, causal))):
    assert got.shape == want.shape, name
    assert np.isfinite(np.asarray(got, np.float32)).all(), f"{name}: NaN/inf (an unwritten tile?)"
    assert rel_err(got, want) < tol, f"{name}: relative error {rel_err(got, want):.2e}"


def test_interpreter_poisons_unwritten_outputs():
  def writes_first_half(x_ref, o_ref):
    o_ref[pl.ds(0, 8), :] = x_ref[pl.ds(0, 8), :]
  out = pl.pallas_call(writes_first_half, out_shape=jax.ShapeDtypeStruct((16, 16), jnp.float32),
                       interpret=True)(jnp.ones((16, 16)))
  assert np.isnan(out[8:]).all() and (out[:8] == 1).all()


@pytest.mark.parametrize("b,s,h,hkv,d,causal", [
    (2, 64, 4, 4, 16, True),    # multi-head, whole tiles
    (1, 50, 6, 2, 32, True),    # grouped KV heads, seq not a multiple of any tile
    (2, 40, 4, 2, 16, False),   # padded keys masked without causal
    (1, 64, 2, 2, 64, False),
    (1, 48, 4, 1, 128, True),   # one KV head for all queries
])
def test_fp32_forward_and_gradients_match_float64(b, s, h, hkv, d, causal):
  q, k, v = random_qkv(b * 1000 + s + d, b, s, h, hkv, d, jnp.float32)
  assert_matches_reference(q, k, v, causal, SMALL, tol=2e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_within_tolerance_with_table_tiles(dtype):
  q, k, v = random_qkv(5, 1, 128, 4, 2, 64, dtype)
  config = pallas_tuning.lookup("cpu", 64, 128)  # the table's default tiles, fitted to 128
  assert_matches_reference(q, k, v, True, config, tol=2e-2)


def test_public_attend_matches_xla():
  q, k, v = random_qkv(8, 2, 32, 4, 4, 16, jnp.float32)
  with jax.default_matmul_precision("highest"):
    np.testing.assert_allclose(attend(q, k, v, impl="pallas"), attend(q, k, v, impl="xla"),
                               rtol=1e-5, atol=1e-5)


def test_causal_loops_stop_and_start_at_the_diagonal():
  ints = lambda phases: [(int(a), int(b), m) for a, b, m in phases]
  # Query rows 64..95 with 16-wide key tiles: tiles 0-3 are left of the diagonal, 4-5 cross
  # it, 6 onwards are never visited.
  assert ints(pallas._kv_phases(64, 32, 16, True, 128)) == [(0, 4, False), (4, 6, True)]
  # Key columns 64..95 with 16-tall query tiles (128 queries): tiles 0-3 are above the
  # diagonal and skipped, 4-5 cross it, 6-7 see every key of the tile.
  assert ints(pallas._q_phases(64, 16, 32, True, 128)) == [(4, 6, True), (6, 8, False)]
  # Without causal masking only the tile holding the last real key (of 40) is masked.
  assert ints(pallas._kv_phases(0, 32, 16, False, 40)) == [(0, 2, False), (2, 3, True)]


def test_unsupported_inputs_are_clear_errors():
  with pytest.raises(UserError, match="head_dim in"):
    check("pallas", dtype=jnp.bfloat16, head_dim=80, platform="gpu")
  with pytest.raises(UserError, match="bf16, fp16 or fp32"):
    check("pallas", dtype=jnp.int8, head_dim=64, platform="gpu")
  with pytest.raises(UserError, match="NVIDIA GPUs"):
    check("pallas", dtype=jnp.bfloat16, head_dim=64, platform="tpu")
  q, k, v = random_qkv(0, 1, 32, 2, 2, 16, jnp.float32)
  with pytest.raises(UserError, match="as many queries as keys"):
    attend(q[:, :16], k, v, impl="pallas")
  with pytest.raises(UserError, match="power of two"):
    Launch(48, 64, 4, 2)


def test_tuning_lookup_prefers_the_gpu_then_nearest_shape():
  entry = lambda gpu, d, s, bq: {"gpu": gpu, "head_dim": d, "seq_len": s, "fwd": [bq, 64, 4, 3],
                                 "dkdv": [32, 128, 4, 3], "dq": [128, 32, 4, 3]}
  table = [entry("default", 64, 1024, 64), entry("h200", 64, 1024, 128),
           entry("h200", 64, 4096, 32), entry("h200", 128, 1024, 16)]
  assert pallas_tuning.lookup("NVIDIA H200", 64, 1024, table).fwd.block_q == 128
  assert pallas_tuning.lookup("NVIDIA H200", 64, 3000, table).fwd.block_q == 32
  assert pallas_tuning.lookup("NVIDIA H200", 96, 1024, table).fwd.block_q == 16
  # An H100 has no entries of its own: the H200's (the same chip) serve it; an A100 the default.
  assert pallas_tuning.lookup("NVIDIA H100 80GB HBM3", 64, 1024, table).fwd.block_q == 128
  assert pallas_tuning.lookup("NVIDIA A100-SXM4-80GB", 64, 1024, table).fwd.block_q == 64
  merged = pallas_tuning.merge(table, [entry("h200", 64, 1024, 256)])
  # Short sequences shrink the tiles; 4-byte inputs get at most 2 pipeline stages.
  assert Launch(128, 64, 4, 3).fit(40, 1000) == Launch(64, 64, 4, 3)
  assert Launch(128, 64, 4, 3).fit(1024, 1024, itemsize=4).num_stages == 2
  assert len(merged) == 4 and pallas_tuning.lookup("NVIDIA H200", 64, 1024, merged).fwd.block_q == 256


def test_cli_trains_with_pallas_like_xla(tmp_path):
  losses = {}
  for impl in ("pallas", "xla"):
    proc = run_cli("--config=configs/tiny.py", f"--workdir={tmp_path / impl}",
                   f"--config.attention={impl}", "--config.steps=2", "--config.repeats=1",
                   "--config.warmup_steps=1")
    assert proc.returncode == 0, proc.stderr
    [record] = [json.loads(line) for line in (tmp_path / impl / "results.jsonl").open()]
    assert record["status"] == "ok" and record["attention"] == impl
    losses[impl] = record["losses"]
  assert np.isfinite(losses["pallas"]).all() and len(losses["pallas"]) == 3
  np.testing.assert_allclose(losses["pallas"], losses["xla"], rtol=2e-3)


def run_module(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)


def test_bench_smoke_records_every_impl(tmp_path):
  out = tmp_path / "attention.jsonl"
  proc = run_module("slm_jax.tools.attention_bench", "--tiny", "--passes=fwd,bwd", f"--out={out}")
  assert proc.returncode == 0, proc.stderr
  records = [json.loads(line) for line in out.open()]
  by = {(r["impl"], r["pass"]): r for r in records}
  assert set(by) == {(i, p) for i in ("pallas", "cudnn", "xla") for p in ("fwd", "bwd")}
  ok = by["pallas", "bwd"]
  assert ok["status"] == "ok" and ok["median_ms"] > 0 and ok["device_kind"] and ok["git_commit"]
  # Causal FLOPs: 4 * b * h * s^2 * d / 2, times 2.5 for the backward.
  assert ok["flops"] == 2.5 * 4 * 1 * 2 * 64 * 64 * 16 / 2
  assert ok["tflops"] == pytest.approx(ok["flops"] / ok["median_ms"] / 1e9)
  # Without a GPU cuDNN cannot run: recorded, and the benchmark goes on.
  assert by["cudnn", "fwd"]["status"] == ("ok" if jax.default_backend() == "gpu" else "unsupported")
  assert "pallas ms (TFLOP/s)" in proc.stdout  # the table


def test_bench_out_that_cannot_be_appended_to_is_one_error_line_before_any_run(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("kept")
  for out in (afile / "x.jsonl", tmp_path):
    proc = run_module("slm_jax.tools.attention_bench", "--tiny", f"--out={out}")
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: --out={out}: ") and "pallas" not in proc.stdout
  assert afile.read_text() == "kept"


def test_tune_smoke_merges_an_entry_for_this_device(tmp_path):
  out = tmp_path / "table.json"
  proc = run_module("slm_jax.tools.attention_tune", "--tiny", f"--out={out}")
  assert proc.returncode == 0, proc.stderr
  entries = pallas_tuning.load_table(str(out))
  kind = jax.devices()[0].device_kind
  [mine] = [e for e in entries if e["gpu"] == pallas_tuning.gpu_key(kind)]
  assert (mine["head_dim"], mine["seq_len"]) == (16, 64)
  assert pallas_tuning.lookup(kind, 16, 64, entries) == pallas_tuning.KernelConfig.from_json(mine)
  assert len(entries) == len(pallas_tuning.load_table(str(pallas_tuning.TABLE_PATH))) + 1


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="tunes for real on a GPU")
@pytest.mark.parametrize("module", ["slm_jax.tools.attention_tune", "slm_jax.attention.tune"])
def test_tune_without_a_gpu_stops_at_once_with_one_error_line(tmp_path, module):
  out = tmp_path / "table.json"
  proc = run_module(module, f"--out={out}")
  assert proc.returncode == 2
  assert proc.stderr.startswith("error: no GPU") and len(proc.stderr.splitlines()) == 1, \
      proc.stderr
  assert "--tiny" in proc.stderr and not out.exists()


def test_the_tools_former_commands_still_run_them():
  for module, flag in (("bench", "--impls"), ("tune", "--head_dims")):
    proc = run_module(f"slm_jax.attention.{module}", "--help")  # absl: help, then exit 1
    assert f"slm_jax/tools/attention_{module}.py" in proc.stdout and flag in proc.stdout


def test_batch_sharded_inputs_run_per_device_under_shard_map():
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data",)))
  q, k, v = (jax.device_put(x, sharding) for x in random_qkv(4, 4, 32, 2, 2, 16, jnp.float32))
  fn = jax.jit(lambda q, k, v: attend(q, k, v, impl="pallas", batch_sharding=sharding))
  # XLA cannot split a Triton call by batch; under shard_map each device gets its own rows.
  assert "shard_map" in str(jax.make_jaxpr(fn)(q, k, v))
  out = fn(q, k, v)
  assert out.sharding.is_equivalent_to(sharding, out.ndim)
  np.testing.assert_allclose(out, reference(q, k, v, True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("s,h,hkv,d,causal,dtype", [
    (1024, 4, 4, 64, True, jnp.bfloat16),   # the paper's case, table tiles
    (1000, 4, 2, 128, True, jnp.float16),   # padded, grouped heads
    (100, 4, 1, 16, False, jnp.float32),    # padded keys masked, fp32
])
def test_kernels_lower_to_triton_without_a_gpu(s, h, hkv, d, causal, dtype):
  # Lowering for CUDA builds every kernel's Triton IR here (power-of-two tensors, supported
  # primitives, 2-D dots); only compiling it to PTX and running it needs the GPU.
  q = jax.ShapeDtypeStruct((2, s, h, d), dtype)
  kv = jax.ShapeDtypeStruct((2, s, hkv, d), dtype)
  config = pallas_tuning.lookup("NVIDIA H200", d, s)

  def fwd_bwd(q, k, v):
    out, vjp = jax.vjp(lambda q, k, v: pallas.attend(q, k, v, causal=causal, config=config,
                                                     interpret=False), q, k, v)
    return out, vjp(out)
  # Newer JAX reads the GPU to lower for from the abstract mesh when no GPU is present.
  h200 = jax.sharding.AbstractDevice(device_kind="NVIDIA H200", num_cores=None, platform="cuda")
  with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("x",),
                                                                abstract_device=h200)):
    hlo = jax.jit(fwd_bwd).trace(q, kv, kv).lower(lowering_platforms=("cuda",)).as_text()
  for name in ("slm_flash_fwd", "slm_flash_delta", "slm_flash_dkdv", "slm_flash_dq"):
    assert name in hlo
