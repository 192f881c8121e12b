"""The PyTorch reference stack (slm_jax.torch_ref) against ours: same model, same numbers.

Needs the `torch` extra; CI installs a CPU-only torch so these run there."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

torch = pytest.importorskip("torch", reason="the torch extra is not installed: "
                            'pip install -e ".[torch]"')
pytest.importorskip("transformers", reason='the torch extra is not installed: '
                    'pip install -e ".[torch]"')

from slm_jax import config as config_lib  # noqa: E402
from slm_jax import model, results  # noqa: E402
from slm_jax import train as jax_train  # noqa: E402
from slm_jax.errors import UserError  # noqa: E402
from slm_jax.torch_ref import convert  # noqa: E402
from slm_jax.torch_ref import model as torch_model  # noqa: E402
from slm_jax.torch_ref import train as torch_train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--config.steps=3", "--config.repeats=2", "--config.warmup_steps=1"]
SMALL = model.ModelConfig(num_layers=2, num_heads=4, head_dim=16, ffn_dim=172, vocab_size=512)
SMALL_GQA = model.ModelConfig(num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                              ffn_dim=172, vocab_size=512)


def cpu_only(**extra) -> dict:
  """The environment of a run here: a CPU run (gloo) wherever the tests run, a machine with
  GPUs included."""
  return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu", **extra}


def run_module(module, *args, timeout=300):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout, env=cpu_only())


def rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("name,expected", [
    ("100m", 130_569_920), ("500m", 526_550_016), ("1b", 970_458_240),
    ("2b", 1_969_027_008), ("tiny", 164_672)])
def test_parameter_counts_are_the_same_model(name, expected):
  cfg = model.PRESETS[name]
  assert torch_model.count_params(cfg) == model.count_params(cfg) == expected


def test_huggingface_model_has_the_flax_models_parameters_by_name_and_shape():
  flax_params = nnx.to_pure_dict(nnx.state(model.abstract_model(SMALL_GQA), nnx.Param))
  names = {convert.torch_name(path): tuple(reversed(x.shape)) if path[-1] == "kernel"
           else tuple(x.shape) for path, x in convert._flatten(flax_params)}
  hf = {n: tuple(p.shape) for n, p in torch_model.build(SMALL_GQA, device="meta")
        .named_parameters()}
  assert names == hf


def _tokens(cfg, seed=1):
  tokens = np.asarray(jax.random.randint(jax.random.key(seed), (2, 33), 0, cfg.vocab_size))
  return tokens[:, :-1], tokens[:, 1:]


def _flax_logits_loss(m, inputs, targets):
  logits = m(jnp.asarray(inputs))
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(targets)).mean()
  return np.asarray(logits), float(loss)


def _torch_logits_loss(m, inputs, targets):
  with torch.no_grad():
    logits = m(input_ids=torch.tensor(inputs, dtype=torch.long)).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1),
                                             torch.tensor(targets, dtype=torch.long).flatten())
  return logits.numpy(), float(loss)


@pytest.mark.parametrize("cfg", [SMALL, SMALL_GQA], ids=["mha", "gqa"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_flax_weights_in_torch_give_the_same_logits_and_loss(cfg, attention):
  flax_model = model.Llama(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(flax_model, nnx.Param))
  hf = torch_model.build(cfg, attention)
  hf.load_state_dict(convert.flax_to_torch(params), strict=True)
  inputs, targets = _tokens(cfg)
  jax_logits, jax_loss = _flax_logits_loss(flax_model, inputs, targets)
  torch_logits, torch_loss = _torch_logits_loss(hf, inputs, targets)
  assert torch_logits.shape == jax_logits.shape == (2, 32, cfg.vocab_size)
  assert rel_err(torch_logits, jax_logits) < 1e-4
  assert abs(torch_loss - jax_loss) / jax_loss < 1e-4


@pytest.mark.parametrize("cfg", [SMALL, SMALL_GQA], ids=["mha", "gqa"])
def test_torch_weights_in_flax_give_the_same_logits_and_loss(cfg):
  torch.manual_seed(3)
  hf = torch_model.build(cfg, "eager")
  flax_model = model.Llama(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0))
  state = nnx.state(flax_model, nnx.Param)
  nnx.replace_by_pure_dict(state, convert.torch_to_flax(hf.state_dict()))
  nnx.update(flax_model, state)
  inputs, targets = _tokens(cfg, seed=2)
  torch_logits, torch_loss = _torch_logits_loss(hf, inputs, targets)
  jax_logits, jax_loss = _flax_logits_loss(flax_model, inputs, targets)
  assert rel_err(jax_logits, torch_logits) < 1e-4
  assert abs(jax_loss - torch_loss) / torch_loss < 1e-4


def test_conversion_round_trips_exactly_in_fp32_and_bf16():
  params = nnx.to_pure_dict(nnx.state(model.Llama(SMALL_GQA, rngs=nnx.Rngs(0)), nnx.Param))
  for dtype in (jnp.float32, jnp.bfloat16):
    cast = jax.tree.map(lambda x: x.astype(dtype), params)
    back = convert.torch_to_flax(convert.flax_to_torch(cast))
    assert jax.tree.structure(back) == jax.tree.structure(cast)
    for a, b in zip(jax.tree.leaves(cast), jax.tree.leaves(back)):
      assert b.dtype == a.dtype and np.array_equal(np.asarray(a), b)


def test_torch_trains_on_the_tokens_jax_trains_on():
  c = config_lib.tiny_config()
  jax_batch = jax_train.build(c).batch(jax.random.key(c.seed + 1))
  ours = torch_train.batch(c, torch_train.Placement(0, 1, torch.device("cpu")))
  for key in ("inputs", "targets"):
    assert np.array_equal(ours[key].numpy(), np.asarray(jax_batch[key]))
  # Rank 1 of 2 gets the second half of the global batch, as JAX's second device does.
  c.per_device_batch_size = 4
  second = torch_train.batch(c, torch_train.Placement(1, 2, torch.device("cpu")))
  assert np.array_equal(second["inputs"].numpy(), np.asarray(jax_batch["inputs"])[4:])


def test_out_of_memory_is_raised_as_a_result():
  c = config_lib.tiny_config()
  c.steps, c.repeats, c.warmup_steps = 1, 1, 0
  original = torch.nn.functional.cross_entropy

  def boom(*a, **k):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

  torch.nn.functional.cross_entropy = boom
  try:
    out = {}
    with pytest.raises(jax_train.OutOfMemory, match="out of memory"):
      torch_train.run(c, setup=torch_train.TorchSetup(attention="eager"), out=out)
    assert out["params"] == 164_672  # what was learnt before the failure is kept
  finally:
    torch.nn.functional.cross_entropy = original


def test_tiny_torch_run_writes_a_valid_record(tmp_path):
  proc = run_module("slm_jax.torch_ref.main", "--config=configs/tiny.py",
                    f"--workdir={tmp_path}", *FAST)
  assert proc.returncode == 0, proc.stderr
  assert "tokens/s" in proc.stdout and "Traceback" not in proc.stderr
  [record] = results.read(tmp_path / "results.jsonl")
  assert set(results.REQUIRED) <= set(record)
  assert record["stack"] == "torch" and record["status"] == "ok" and record["model"] == "tiny"
  assert record["params"] == 164_672 and record["attention"] == "eager"
  assert record["torch_compile"] is False and record["num_devices"] == 1
  assert record["global_batch"] == 8 and record["seq_len"] == 128
  st = record["step_time_s"]
  assert 0 < st["min"] <= st["median"] <= st["max"]
  assert len(record["step_times_s"]) == 6 and len(record["losses"]) == 1 + 6
  assert record["tokens_per_s"] == pytest.approx(8 * 128 / st["median"])
  assert record["flops_per_token"] == model.flops_per_token(model.PRESETS["tiny"], 128)
  assert record["compile_s"] > 0 and record["final_loss"] > 0
  assert record["versions"]["torch"] and record["versions"]["transformers"]
  [run_dir] = (tmp_path / "tensorboard").glob("*/*")
  assert run_dir.name == record["run_id"] and run_dir.parent.name == "tiny_eager_single_b8"


def test_more_processes_than_gpus_is_one_error(monkeypatch):
  monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
  monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
  c = config_lib.tiny_config()
  c.update(strategy="ddp", num_devices=2)
  with pytest.raises(UserError, match=r"num_devices=2 but only 1 GPUs are present"):
    torch_train.device_count(c)
  # torchrun started by hand with more processes than the node has GPUs
  monkeypatch.setenv("RANK", "1")
  monkeypatch.setenv("LOCAL_RANK", "1")
  monkeypatch.setenv("WORLD_SIZE", "2")
  c.num_devices = 0
  with pytest.raises(UserError, match=r"local process 1 of its node, which has 1 GPUs"):
    torch_train.place(c)


# Two processes, and a learning rate at which each of 6 steps moves the loss by 0.1 or more: a
# lost, doubled or mis-scaled update shows in the losses.
TWO = ["--config.num_devices=2", "--config.tensorboard=false", "--config.learning_rate=3e-3",
       "--config.lr_warmup_steps=1", *FAST]


def _two_process_run(workdir, strategy):
  proc = run_module("slm_jax.torch_ref.main", "--config=configs/tiny.py",
                    f"--workdir={workdir}", f"--config.strategy={strategy}", *TWO)
  assert proc.returncode == 0, proc.stderr
  [record] = results.read(workdir / "results.jsonl")  # rank 0 alone writes
  return record


@pytest.fixture(scope="module")
def ddp_record(tmp_path_factory):
  return _two_process_run(tmp_path_factory.mktemp("ddp"), "ddp")


def test_ddp_over_two_gloo_processes(ddp_record):
  record = ddp_record
  assert record["status"] == "ok" and record["strategy"] == "ddp"
  assert record["num_devices"] == record["num_processes"] == 2
  assert record["global_batch"] == 16
  assert record["tokens_per_s"] == pytest.approx(16 * 128 / record["step_time_s"]["median"])
  assert record["torch_fsdp"] is None


@pytest.mark.parametrize("strategy,reshards,mesh", [
    ("fsdp_full", True, {"shard": 2}), ("fsdp_grad_op", False, {"shard": 2}),
    # One host of two processes: sharded over both, one replica.
    ("hsdp", True, {"replicate": 1, "shard": 2})])
def test_fsdp2_over_two_gloo_processes_trains_as_ddp_does(tmp_path, ddp_record, strategy,
                                                          reshards, mesh):
  record = _two_process_run(tmp_path, strategy)
  assert record["status"] == "ok" and record["strategy"] == strategy
  assert record["num_devices"] == 2 and record["global_batch"] == 16
  assert record["torch_fsdp"] == {"api": "fully_shard", "param_dtype": "bfloat16",
                                  "reduce_dtype": "float32", "reshard_after_forward": reshards,
                                  "mesh": mesh}
  assert record["torch_compile_scope"] == "none"
  # FSDP2 computes with bf16 copies of the weights where ddp's autocast rounds each op's
  # operands to bf16: the same steps up to bf16 rounding, so each loss is held to ddp's within
  # bf16's unit roundoff, 2^-8 relative (0.02 at these losses; measured: under 3e-4 relative).
  # The loss falls by 0.1 or more a step: a wrong update could not hide in that.
  losses, ddp_losses = np.asarray(record["losses"]), np.asarray(ddp_record["losses"])
  assert np.all(np.diff(ddp_losses[1:]) < -0.1)
  np.testing.assert_allclose(losses, ddp_losses, rtol=2**-8)


# One forward and backward of the tiny model under a strategy, then its clip; each rank writes
# what it saw to <argv[2]>/<rank>.json: the dtype a decoder projection computed with, the norm, the clipped gradients'
# norm, its parameters' names and how many the optimizer does not decay.
_PROBE = """
import json, sys
from pathlib import Path
import torch
from slm_jax import config as config_lib
from slm_jax.torch_ref import model as model_lib, train as torch_train

c = config_lib.tiny_config()
c.strategy = sys.argv[1]
c.grad_clip_norm = 0.1  # under the tiny model's first gradient norm (about 0.3): clipping clips
where = torch_train.place(c)
torch.manual_seed(c.seed)
model = model_lib.build(config_lib.model_config(c), "eager", c.seq_len)
no_decay = {n for n, p in model.named_parameters() if p.ndim < 2}
seen = []
model.model.layers[0].mlp.down_proj.register_forward_pre_hook(
    lambda m, args: seen.append(str(m.weight.dtype).removeprefix("torch.")))
module, clip = torch_train._wrap(model, c, where, {})
groups = torch_train._optimizer(c, module, no_decay).param_groups
data = torch_train.batch(c, where)
with torch.autocast("cpu", dtype=torch.bfloat16):
  logits = module(input_ids=data["inputs"]).logits
torch_train._upcast_cross_entropy(logits, data["targets"]).backward()
norm = clip()
clipped = torch.nn.utils.get_total_norm([p.grad for p in module.parameters()])
full = lambda t: float(t.full_tensor() if hasattr(t, "full_tensor") else t)
Path(sys.argv[2], f"{where.rank}.json").write_text(json.dumps({
    "rank": where.rank, "norm": full(norm), "clipped": full(clipped), "computed_in": seen,
    "no_decay": len(groups[1]["params"]),
    "names": sorted(n for n, _ in module.named_parameters())}))
torch.distributed.destroy_process_group()
"""


def _probe(tmp_path, strategy) -> list[dict]:
  script, out = tmp_path / "probe.py", tmp_path / strategy
  script.write_text(_PROBE)
  out.mkdir()
  proc = subprocess.run(
      [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
       str(script), strategy, str(out)], cwd=ROOT, capture_output=True, text=True,
      timeout=300, env=cpu_only(PYTHONPATH=str(ROOT)))
  assert proc.returncode == 0, proc.stderr
  return [json.loads((out / f"{rank}.json").read_text()) for rank in range(2)]


def test_fsdp2_gathers_bf16_weights_and_clips_by_the_global_norm(tmp_path):
  ddp = _probe(tmp_path, "ddp")
  fsdp = _probe(tmp_path, "fsdp_full")
  assert [r["rank"] for r in fsdp] == [0, 1]
  assert {x for r in ddp for x in r["computed_in"]} == {"float32"}  # autocast casts per op
  assert {x for r in fsdp for x in r["computed_in"]} == {"bfloat16"}
  # The norm of all the gradients, not of a rank's shard (each rank's would differ, and be
  # smaller): the same on both ranks, and ddp's up to bf16 rounding.
  assert fsdp[0]["norm"] == fsdp[1]["norm"] == pytest.approx(ddp[0]["norm"], rel=2**-6)
  assert fsdp[0]["norm"] > 0.1  # so the clip had work to do, and scaled them all to the norm:
  for r in ddp + fsdp:
    assert r["clipped"] == pytest.approx(0.1, rel=1e-5)
  # FSDP2 keeps the model's own names, so the decay mask finds the norm scales.
  assert fsdp[0]["names"] == sorted(n for n, _ in torch_model.build(
      model.PRESETS["tiny"], device="meta").named_parameters())
  assert fsdp[0]["no_decay"] == ddp[0]["no_decay"] == 2 * 2 + 1  # two per layer, the final


def test_compare_runs_both_stacks_and_prints_the_ratio_table(tmp_path):
  proc = run_module("slm_jax.compare", "--config=configs/tiny.py", f"--workdir={tmp_path}",
                    "--config.tensorboard=false", *FAST)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  lines = proc.stdout.strip().splitlines()
  header = next(i for i, line in enumerate(lines) if line.startswith("| stack |"))
  assert "JAX speed-up" in lines[header] and lines[header + 1].startswith("|---|")
  jax_row, torch_row = lines[header + 2:header + 4]
  assert jax_row.startswith("| jax | xla | XLA | ok | 8 | 164,672 |") and "1.00x" in jax_row
  assert torch_row.startswith("| torch | eager | none | ok | 8 | 164,672 |")
  records = results.read(tmp_path / "results.jsonl")
  assert [r["stack"] for r in records] == ["jax", "torch"]
  assert all(r["status"] == "ok" for r in records)
  assert records[0]["config"]["steps"] == records[1]["config"]["steps"] == 3
  ratio = records[0]["tokens_per_s"] / records[1]["tokens_per_s"]
  assert f"{ratio:.2f}x" in torch_row


def test_compare_rejects_an_unknown_torch_attention(tmp_path):
  proc = run_module("slm_jax.compare", "--config=configs/tiny.py", f"--workdir={tmp_path}",
                    "--torch_attention=flash")
  assert proc.returncode == 2 and "--torch_attention='flash' is not one of" in proc.stderr
  assert "Traceback" not in proc.stderr and not (tmp_path / "results.jsonl").exists()


def test_compare_over_batches_keeps_each_stack_s_best(tmp_path):
  proc = run_module("slm_jax.compare", "--config=configs/tiny.py", f"--workdir={tmp_path}",
                    "--config.tensorboard=false", "--batches=1,4", "--tag=t", *FAST)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  records = results.read(tmp_path / "results.jsonl")
  assert sorted(r["tag"] for r in records) == ["t/jax/b1", "t/jax/b4", "t/torch-eager/b1",
                                               "t/torch-eager/b4"]
  best = {r["stack"]: max((x for x in records if x["stack"] == r["stack"]),
                          key=lambda x: x["tokens_per_s"]) for r in records}
  lines = proc.stdout.strip().splitlines()
  header = next(i for i, line in enumerate(lines) if line.startswith("| stack |"))
  jax_row, torch_row = lines[header + 2:header + 4]
  assert lines[header + 4:header + 5] == [] or not lines[header + 4].startswith("| ")
  assert jax_row.startswith(f"| jax | xla | XLA | ok | {best['jax']['per_device_batch']} |")
  assert torch_row.startswith(f"| torch | eager | none | ok | {best['torch']['per_device_batch']} |")
  assert "best of batches 1,4/device" in proc.stdout


def _sdpa_calls_when_compiled(hf_model, tokens) -> list[dict]:
  """The keyword arguments of every SDPA call in the graph torch.compile traces from tokens to
  the loss (the same scope slm_jax.torch_ref.train compiles)."""
  calls = []

  def backend(gm, example_inputs):
    for node in gm.graph.nodes:
      if node.op == "call_function" and "scaled_dot_product_attention" in str(node.target):
        calls.append(dict(node.kwargs, num_args=len(node.args)))
    return gm.forward

  def loss_of(inputs):
    logits = hf_model(input_ids=inputs).logits
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), inputs.flatten())

  torch._dynamo.reset()
  torch.compile(loss_of, backend=backend, fullgraph=True)(tokens)
  return calls


def test_compiled_torch_sdpa_is_causal_without_a_mask():
  tokens = torch.randint(0, SMALL.vocab_size, (2, 32))
  calls = _sdpa_calls_when_compiled(torch_model.build(SMALL, "sdpa", seq_len=32), tokens)
  assert len(calls) == SMALL.num_layers
  for call in calls:
    assert call["num_args"] == 3 and call.get("attn_mask") is None
    assert call["is_causal"] is True
  # HuggingFace's own `sdpa`, traced the same way, hands SDPA a mask: the handicap the
  # registered attention removes (skipped once transformers stops building it while tracing).
  stock = transformers_llama(SMALL, "sdpa")
  stock_calls = _sdpa_calls_when_compiled(stock, tokens)
  if all(c.get("attn_mask") is None for c in stock_calls):
    pytest.skip("this transformers no longer builds a mask for sdpa under torch.compile")
  assert all(c.get("is_causal") is not True for c in stock_calls)


def transformers_llama(cfg, attn_implementation):
  from transformers import LlamaForCausalLM

  hf = torch_model.hf_config(cfg, "eager", seq_len=32)
  hf._attn_implementation = attn_implementation
  return LlamaForCausalLM(hf).float()


def test_causal_sdpa_gives_huggingface_sdpa_s_logits():
  torch.manual_seed(0)
  ours = torch_model.build(SMALL_GQA, "sdpa", seq_len=32)
  stock = transformers_llama(SMALL_GQA, "sdpa")
  stock.load_state_dict(ours.state_dict())
  tokens = torch.randint(0, SMALL_GQA.vocab_size, (2, 32))
  with torch.no_grad():
    assert rel_err(ours(input_ids=tokens).logits, stock(input_ids=tokens).logits) < 1e-6


def test_sdpa_backends_are_timed_and_the_fastest_is_pinned():
  c = config_lib.tiny_config()
  timings = torch_train.time_sdpa_backends((2, 4, 32, 16), torch.float32, torch.device("cpu"),
                                           backends=torch_train.SDPA_BACKENDS, iters=2)
  # A CPU has no cuDNN or memory-efficient kernel: those are left out, not failed.
  assert "math" in timings and "cudnn" not in timings and "efficient" not in timings
  assert all(ms > 0 for ms in timings.values())
  where = torch_train.Placement(0, 1, torch.device("cpu"))
  out = {}
  try:
    chosen = torch_train.choose_sdpa_backend(torch_train.TorchSetup(sdpa_backend="auto"), c,
                                             config_lib.model_config(c), where, out)
    assert chosen == min(out["torch_sdpa_backend_ms"], key=out["torch_sdpa_backend_ms"].get)
    assert chosen in torch_train.FUSED_SDPA_BACKENDS
    assert torch_train.choose_sdpa_backend(torch_train.TorchSetup(attention="eager"), c,
                                           config_lib.model_config(c), where, {}) == "none"
    assert torch_train.choose_sdpa_backend(torch_train.TorchSetup(sdpa_backend="math"), c,
                                           config_lib.model_config(c), where, {}) == "math"
    assert torch.backends.cuda.math_sdp_enabled() and not torch.backends.cuda.flash_sdp_enabled()
  finally:
    for name in ("flash", "mem_efficient", "math", "cudnn"):
      getattr(torch.backends.cuda, f"enable_{name}_sdp")(True)


def test_torch_records_say_how_torch_ran(tmp_path):
  proc = run_module("slm_jax.torch_ref.main", "--config=configs/tiny.py", f"--workdir={tmp_path}",
                    "--torch_attention=sdpa", "--config.tensorboard=false", *FAST)
  assert proc.returncode == 0, proc.stderr
  [record] = results.read(tmp_path / "results.jsonl")
  assert record["torch_sdpa_backend"] in torch_train.FUSED_SDPA_BACKENDS
  assert record["torch_sdpa_backend"] == min(record["torch_sdpa_backend_ms"],
                                             key=record["torch_sdpa_backend_ms"].get)
  assert record["torch_compile_scope"] == "none" and record["torch_compile_mode"] is None
  assert record["campaign"] == record["git_commit"]


def test_a_bad_torch_setting_is_one_error_line(tmp_path):
  proc = run_module("slm_jax.torch_ref.main", "--config=configs/tiny.py", f"--workdir={tmp_path}",
                    "--torch_compile_scope=everything")
  assert proc.returncode == 2 and "--torch_compile_scope='everything'" in proc.stderr
  assert "Traceback" not in proc.stderr and not (tmp_path / "results.jsonl").exists()


def test_fsdp_strategies_compile_per_layer_and_the_loss():
  c = config_lib.tiny_config()
  for scope in torch_train.COMPILE_SCOPES:
    setup = torch_train.TorchSetup(compile=True, compile_scope=scope)
    setup.check()  # layers+loss is accepted under any strategy
    for strategy in ("fsdp_full", "fsdp_grad_op", "hsdp"):
      c.strategy = strategy
      assert torch_train.compile_scope(c, setup) == "layers+loss"
    for strategy in ("single", "ddp"):
      c.strategy = strategy
      assert torch_train.compile_scope(c, setup) == scope
    assert torch_train.compile_scope(c, setup._replace(compile=False)) == "none"
