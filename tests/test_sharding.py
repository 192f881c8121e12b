"""Strategies on 8 fake CPU devices (tests/conftest.py): same numbers as one device, the
promised layouts, and the collectives each one should send."""

import math
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from slm_jax import (collectives, config as config_lib, explicit_grad, hardware, results, sharding,
                     train)
from slm_jax.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ("ddp", "fsdp_full", "fsdp_grad_op", "hsdp")
pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")


def tiny(**overrides):
  c = config_lib.tiny_config()
  # fp32 compute, so that only the order of reductions differs between layouts; a larger Adam
  # eps keeps near-zero gradients (whose sign is rounding noise) from taking full-size steps.
  # Unpadded FFN: XLA reduces the gradient of the zero-padded FFN weights before slicing the
  # padding off (+11% bytes for tiny's 172 -> 192, +0.3% for 500M), which the analytic
  # counts below leave out.
  c.update(compute_dtype="float32", learning_rate=1e-2, lr_warmup_steps=1, adam_eps=1e-4,
           ffn_pad_multiple=1, **overrides)
  return c


def train_steps(c, n=4):
  program = train.build(c)
  state = program.init(jax.random.key(0))
  batch = program.batch(jax.random.key(1))
  losses = []
  for _ in range(n):
    state, metrics = program.step(state, batch)
    losses.append(float(metrics["loss"]))
  return losses, jax.device_get(state.params), program


@pytest.fixture(scope="module")
def reference():
  # One device holding the whole global batch of 8 devices x 2 rows.
  losses, params, _ = train_steps(tiny(strategy="single", per_device_batch_size=16))
  return losses, params


# The last case: optax's gather cross-entropy (the default is the one-hot select, which spans
# the vocabulary axis of batch-sharded logits and so needs no collective of its own).
@pytest.mark.parametrize("name,overrides", [(name, {}) for name in STRATEGIES]
                         + [("fsdp_full", {"cross_entropy": "gather"}),
                            ("ddp", {"reduce_schedule": "per_layer"}),
                            ("fsdp_grad_op", {"reduce_schedule": "per_layer"})])
def test_strategy_matches_single_device(name, overrides, reference):
  losses, params, program = train_steps(tiny(strategy=name, per_device_batch_size=2,
                                             **overrides))
  assert program.mesh.devices.size == 8
  np.testing.assert_allclose(losses, reference[0], rtol=2e-5)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(reference[1])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6)


def layout(name):
  program = train.build(tiny(strategy=name))
  params, opt_state = program.abstract_state.params, program.abstract_state.opt_state
  return (sharding.bytes_per_device(params, program.state_shardings.params),
          sharding.bytes_per_device(opt_state, program.state_shardings.opt_state),
          sharding.bytes_per_device(params, program.grad_shardings))


def test_shardings_hold_what_each_strategy_promises():
  ddp_p, ddp_o, ddp_g = layout("ddp")
  full_p, full_o, full_g = layout("fsdp_full")
  op_p, op_o, op_g = layout("fsdp_grad_op")
  # Norm scales (1/500 of the bytes) stay replicated, so "1/8" is 1/8 plus a sliver.
  assert full_p == pytest.approx(ddp_p / 8, rel=0.02)
  assert full_o == pytest.approx(ddp_o / 8, rel=0.02) and full_g == full_p
  # fsdp_grad_op splits every parameter on a dimension 8 divides, the norm scales included.
  assert op_p == ddp_p / 8 and op_g == op_p
  assert op_o == pytest.approx(ddp_o / 8, rel=0.001)


@pytest.mark.parametrize("name", ["fsdp_full", "hsdp"])
def test_zero3_splits_the_embedding_table_on_rows_and_the_other_weights_on_the_model_dim(name):
  # Rows keep the backward's scatter-add into the table coalesced (the table split on its
  # columns was laid out column-major on GPU); the LM head, (embed, vocab), splits on embed.
  program = train.build(tiny(strategy=name))
  specs = {jax.tree_util.keystr(path): s.spec for path, s in
           jax.tree_util.tree_flatten_with_path(program.state_shardings.params)[0]}
  table = next(v for k, v in specs.items() if "embed_tokens" in k)
  head = next(v for k, v in specs.items() if "lm_head" in k)
  assert table[0] == "fsdp" and table[1] is None, table
  assert head[0] == "fsdp" and head[1] is None, head
  q = next(v for k, v in specs.items() if "q_proj" in k)
  assert q[0] == "fsdp"


def compiled_collectives(name, **overrides):
  c = tiny(strategy=name, **overrides)
  program = train.build(c)
  compiled, _ = train.compile_step(c, program)
  params = program.abstract_state.params
  param_bytes = sum(x.size * 4 for x in jax.tree.leaves(params))
  sharded_bytes = sum(x.size * 4 for x, s in zip(jax.tree.leaves(params),
                                                 jax.tree.leaves(program.state_shardings.params
                                                                 if name != "fsdp_grad_op"
                                                                 else program.grad_shardings))
                      if not s.is_fully_replicated)
  return collectives.from_hlo(compiled.as_text(), 8), param_bytes, sharded_bytes


@pytest.mark.parametrize("name", STRATEGIES)
def test_collective_bytes_match_the_analytic_count(name):
  # Unfolded norm scales: each gradient is its own reduction (the folded case is below).
  got, param_bytes, sharded_bytes = compiled_collectives(name, fold_norm_scale=False)
  reduced = got["all-reduce"]["bytes"] + got["reduce-scatter"]["bytes"]
  # Every strategy reduces each fp32 gradient once, plus a few scalars (the loss).
  assert param_bytes <= reduced <= param_bytes + 1024
  gathered = got["all-gather"]["bytes"]
  if name == "ddp":
    assert gathered == 0
  else:
    # Sharded parameters are gathered for the forward pass and, if XLA does not keep them,
    # again for the backward pass (fsdp_grad_op gathers the updated parameters once).
    assert gathered in (sharded_bytes, 2 * sharded_bytes)
  assert got["all-to-all"]["count"] == 0


@pytest.mark.parametrize("name", ["ddp", "fsdp_full"])
def test_folded_norm_scales_add_no_kernel_sized_collectives(name):
  plain, param_bytes, _ = compiled_collectives(name, fold_norm_scale=False)
  folded, _, _ = compiled_collectives(name, fold_norm_scale=True)
  c = tiny()
  scale_bytes = 2 * c.num_layers * config_lib.model_config(c).d_model * 4  # two norms a block
  # A folded scale's gradient is a sum over its kernels' gradients, which XLA takes from the
  # reduced kernel gradient (no reduction of its own) and, when sharded, gathers at its size.
  reduced = folded["all-reduce"]["bytes"] + folded["reduce-scatter"]["bytes"]
  assert param_bytes - scale_bytes <= reduced <= param_bytes + 1024
  assert folded["all-gather"]["bytes"] <= plain["all-gather"]["bytes"] + scale_bytes
  # (fsdp_grad_op is left out: there XLA also gathers the folded kernels in the forward,
  # +41% all-gather bytes at 100M; benchmarks/PERF_NOTES.md section 8.)


def test_ring_model_on_a_known_hlo():
  hlo = """
  %ar = f32[1024,256]{1,0} all-reduce(f32[1024,256]{1,0} %g), replica_groups={{0,1,2,3}}, to_apply=%add
  %ag = (bf16[64,128]{1,0}, /*index=1*/bf16[8]{0}) all-gather-start(bf16[16,128]{1,0} %p, bf16[2]{0} %q), replica_groups=[1,4]<=[4], dimensions={0}
  %agd = (bf16[64,128]{1,0}, bf16[8]{0}) all-gather-done(%ag)
  %rs = f32[256,256]{1,0} reduce-scatter(f32[1024,256]{1,0} %g2), replica_groups={{0,1,2,3}}, dimensions={0}
  %one = f32[10]{0} all-reduce(f32[10]{0} %x), replica_groups={{0}}, to_apply=%add
  """
  got = collectives.from_hlo(hlo, 4)
  assert got["all-reduce"]["count"] == 1 and got["all-reduce"]["bytes"] == 1024 * 256 * 4
  assert got["all-reduce"]["ring_bytes"] == pytest.approx(1.5 * 1024 * 256 * 4)
  assert got["all-gather"]["count"] == 1 and got["all-gather"]["bytes"] == (64 * 128 + 8) * 2
  assert got["reduce-scatter"]["bytes"] == 1024 * 256 * 4
  seconds = collectives.predict_seconds(got, "pcie4")
  link = hardware.interconnect("pcie4")
  ring = got["all-reduce"]["ring_bytes"] + got["all-gather"]["ring_bytes"] + \
      got["reduce-scatter"]["ring_bytes"]
  assert seconds == pytest.approx(ring / 25e9 + (6 + 3 + 3) * link.latency_s)


def test_mesh_errors_are_clear():
  with pytest.raises(UserError, match="only 8 devices"):
    train.build(tiny(strategy="ddp", num_devices=16))
  with pytest.raises(UserError, match="not one of"):
    sharding.make_mesh("zero4")
  with pytest.raises(UserError, match="reduce_schedule=per_layer needs --config.strategy=ddp"):
    config_lib.validate(tiny(strategy="fsdp_full", reduce_schedule="per_layer"))
  with pytest.raises(UserError, match="reduce_schedule='overlap' is not one of"):
    config_lib.validate(tiny(strategy="ddp", reduce_schedule="overlap"))


def test_dimensions_the_mesh_does_not_divide_stay_replicated():
  mesh = sharding.make_mesh("fsdp_full", jax.devices()[:3])
  spec = sharding.spec_for(("embed", "mlp"), (64, 172), {"embed": "fsdp"}, mesh)
  assert spec == jax.sharding.PartitionSpec(None, None)  # 64 % 3 != 0
  program = train.build(tiny(strategy="fsdp_full", num_devices=3))
  assert program.mesh.devices.size == 3


def test_two_processes_through_jax_distributed_agree_with_one(tmp_path):
  """2 processes x 2 CPU devices through the local launcher == 1 process x 4 devices."""
  common = ["--config=configs/tiny.py", "--config.strategy=fsdp_full",
            "--config.compute_dtype=float32", "--config.per_device_batch_size=2",
            "--config.steps=3", "--config.repeats=1", "--config.warmup_steps=1",
            "--config.tensorboard=false"]
  multi = subprocess.run(
      [sys.executable, "launch/local.py", "--num_processes=2", "--devices_per_process=2",
       "--cpu", "--", f"--workdir={tmp_path / 'multi'}", *common],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert multi.returncode == 0, multi.stderr[-3000:]
  env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "PATH": "/usr/bin:/bin"}
  single = subprocess.run(
      [sys.executable, "-m", "slm_jax.main", f"--workdir={tmp_path / 'one'}", *common],
      cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert single.returncode == 0, single.stderr[-3000:]
  [m] = results.read(tmp_path / "multi" / "results.jsonl")  # process 0 alone writes
  [s] = results.read(tmp_path / "one" / "results.jsonl")
  assert (m["num_processes"], m["num_devices"]) == (2, 4)
  assert (s["num_processes"], s["num_devices"]) == (1, 4)
  np.testing.assert_allclose(m["losses"], s["losses"], rtol=1e-5)



@pytest.mark.parametrize("schedule", ["xla", "per_layer"])
def test_fsdp_grad_op_gathers_kernels_in_the_compute_dtype_and_reduces_as_the_backward_wrote(
    schedule):
  # The lowered step, before XLA's CPU passes (which widen bf16 collectives to fp32; a GPU
  # compile keeps them bf16): one gather and one reduce-scatter per parameter, the kernels in
  # bf16, the embedding table and norm scales in fp32 as the model uses them.
  c = config_lib.tiny_config()
  c.update(strategy="fsdp_grad_op", reduce_schedule=schedule)
  program = train.build(c)
  text = program.step.lower(program.abstract_state, program.abstract_batch).as_text()
  nbytes = lambda t: math.prod(int(d) for d in t.split("x")[:-1]) * np.dtype(
      {"bf16": "bfloat16"}.get(t.split("x")[-1], t.split("x")[-1].replace("f", "float"))).itemsize
  gathered = re.findall(r'"stablehlo.all_gather".*?-> tensor<([^>]*)>', text)
  scattered = re.findall(r'stablehlo.reduce_scatter"[\s\S]*?\}\) : \(tensor<([^>]*)>\)', text)
  params = program.abstract_state.params
  assert len(gathered) == len(scattered) == len(jax.tree.leaves(params))
  assert sum(map(nbytes, gathered)) == explicit_grad.gathered_dtype_bytes(params, "bfloat16")
  assert sum(map(nbytes, scattered)) == explicit_grad.gathered_dtype_bytes(params, "bfloat16")
  assert sum(t.endswith("bf16") for t in gathered) == 7 * c.num_layers + 1  # kernels, LM head
  reduced = re.findall(r'stablehlo.all_reduce"[\s\S]*?\}\) : \(tensor<([^>]*)>\)', text)
  assert reduced == ["f32"]  # the loss's sum, a scalar


@pytest.mark.parametrize("name,collective", [("ddp", "all-reduce"),
                                             ("fsdp_grad_op", "reduce-scatter")])
def test_per_layer_reductions_are_tied_to_the_layer_before(name, collective):
  # Each layer's gradients (the final norm's and the head's for the last) are reduced once and
  # held by a barrier with the input gradient of the layer before, which the rest of the
  # backward needs: XLA can run them beside that layer but cannot leave them to the step's end.
  c = config_lib.tiny_config()
  c.update(strategy=name, reduce_schedule="per_layer")
  program = train.build(c)
  hlo = program.step.lower(program.abstract_state, program.abstract_batch).as_text(dialect="hlo")
  shapes = dict(re.findall(r"^\s*(?:ROOT )?(\S+) = (\S+\[[\d,]*\])", hlo, re.M))
  ops = dict(re.findall(r"^\s*(?:ROOT )?(\S+) = .*? ([a-z-]+)\(", hlo, re.M))
  params = program.abstract_state.params
  reductions = [n for n, op in ops.items() if op == collective and shapes.get(n) != "f32[]"]
  assert len(reductions) == len(jax.tree.leaves(params))
  barriers = re.findall(r"= \((.*)\) opt-barrier\(", hlo)
  assert len(barriers) == c.num_layers
  d_model = config_lib.model_config(c).d_model
  activation = f"[{c.per_device_batch_size},{c.seq_len},{d_model}]"
  layer = [x for x in jax.tree.leaves(params["layers"][1])]
  # layers 1.. and the final norm with the head; the embedding and layer 0 are reduced last
  assert sorted(b.count("[") for b in barriers) == sorted(
      [len(layer) + 1] * (c.num_layers - 1) + [len(jax.tree.leaves(params["norm"]))
                                               + len(jax.tree.leaves(params["lm_head"])) + 1])
  assert all(b.count(activation) == 1 for b in barriers)
