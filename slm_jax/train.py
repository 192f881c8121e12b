"""The training step (fp32 master weights and AdamW state, bf16 compute, fp32 loss) and the
measured run that `slm_jax.main` drives: build, compile, warm up, time, record."""

from __future__ import annotations


import contextlib
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from slm_jax import config as config_lib
from slm_jax import collectives, explicit_grad, fp8 as fp8_lib, measure, pgle, profile, sharding
from slm_jax.attention import check as check_attention
from slm_jax.errors import UserError
from slm_jax.model import Llama


class TrainState(NamedTuple):
  params: Any     # nested dict of fp32 arrays, HuggingFace-style names
  opt_state: Any  # optax state, fp32
  # FP8 delayed scaling's scales and amax histories (slm_jax.fp8.Fp8State, replicated);
  # None without them, so such a state is the two fields it always was.
  fp8: Any = None


class OutOfMemory(Exception):
  """The configuration does not fit in device memory; a result, not a failure."""


def make_schedule(c: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning rate by update count: linear warm-up, then cosine decay to 10%."""
  return optax.warmup_cosine_decay_schedule(
      0.0, c.learning_rate, warmup_steps=max(c.lr_warmup_steps, 1),
      decay_steps=max(c.lr_warmup_steps + 1, 100_000), end_value=0.1 * c.learning_rate)


def cross_entropy(logits: jax.Array, targets: jax.Array, label_logit: str = "select") -> jax.Array:
  """Mean softmax cross-entropy of [..., vocab] logits against integer targets, in fp32.

  The upcast is here whatever dtype the head wrote the logits in, so XLA folds it into the
  loss's own fusions. "gather" is optax's integer-label loss: its gradient scatter-adds -1 at
  each label into the fp32 softmax gradient, and XLA fuses neither the scatter nor the cast
  to the head's dtype after it, so the [tokens, vocab] gradient is written in fp32, then read
  and rewritten in bf16 (benchmarks/PERF_NOTES.md section 10). "select" sums a one-hot select
  over the vocabulary instead: the same value, and a gradient that is a select, which fuses with
  the rest into one elementwise pass."""
  logits = logits.astype(jnp.float32)
  if label_logit == "gather":
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
  vocab = jax.lax.broadcasted_iota(targets.dtype, logits.shape, logits.ndim - 1)
  label_logits = jnp.sum(jnp.where(vocab == targets[..., None], logits, 0.0), axis=-1)
  return (jax.nn.logsumexp(logits, axis=-1) - label_logits).mean()


def synthetic_batch(c: ml_collections.ConfigDict, key: jax.Array, global_batch: int) -> dict:
  """Uniform random tokens: throughput does not depend on their values. The torch stack
  (slm_jax.torch_ref) trains on the same tokens."""
  tokens = jax.random.randint(key, (global_batch, c.seq_len + 1), 0, c.vocab_size, jnp.int32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}


def make_optimizer(c: ml_collections.ConfigDict) -> optax.GradientTransformation:
  schedule = make_schedule(c)
  return optax.chain(
      optax.clip_by_global_norm(c.grad_clip_norm),
      # Norm scales (1-D) are not decayed.
      optax.adamw(schedule, b1=c.adam_b1, b2=c.adam_b2, eps=c.adam_eps,
                  weight_decay=c.weight_decay,
                  mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)))


class Program(NamedTuple):
  """Everything compiled for one config: how to make the state, the step, and a batch."""
  mesh: jax.sharding.Mesh
  state_shardings: TrainState
  grad_shardings: Any
  init: Callable[[jax.Array], TrainState]
  step: Callable[[TrainState, dict], tuple[TrainState, dict]]
  batch: Callable[[jax.Array], dict]
  abstract_state: TrainState
  abstract_batch: dict
  step_fn: Callable[[TrainState, dict], tuple[TrainState, dict]]  # `step` before jit
  # Mean loss of params on a batch (evaluation); loss(params, batch, fp8) where the state has
  # fp8 scales (TrainState.fp8 not None).
  loss: Callable[..., jax.Array]


def build(c: ml_collections.ConfigDict, devices=None, hosts: int | None = None) -> Program:
  """Builds the jitted init, step and batch functions for `c`; nothing is allocated yet.
  `hosts`: hsdp's replica axis size, default the processes holding the devices."""
  mesh = sharding.make_mesh(c.strategy, devices, c.num_devices, hosts)
  strategy = sharding.strategy(c.strategy)
  mcfg = config_lib.model_config(c)
  dtype, param_dtype = jnp.dtype(c.compute_dtype), jnp.dtype(c.param_dtype)
  check_attention(c.attention, dtype=dtype, head_dim=c.head_dim,
                  platform=mesh.devices.flat[0].platform)
  if c.fp8:
    fp8_lib.check_device(mesh.devices.flat[0])

  batch_sh = sharding.batch_sharding(mesh)

  def new_model(rngs, activation_sharding=batch_sh):
    return Llama(mcfg, attention=c.attention, ffn_pad_multiple=c.ffn_pad_multiple, dtype=dtype,
                 param_dtype=param_dtype, activation_sharding=activation_sharding,
                 logits_grad_dtype=jnp.dtype(config_lib.logits_grad_dtype(c)),
                 logits_dtype=jnp.dtype(config_lib.logits_dtype(c)),
                 fuse_projections=c.fuse_projections, fold_norm_scale=c.fold_norm_scale,
                 fp8=c.fp8_scaling if c.fp8 else "", fp8_amax_history=c.fp8_amax_history,
                 rngs=rngs)

  abstract = nnx.eval_shape(lambda: new_model(nnx.Rngs(0)))
  graphdef, abstract_vars, abstract_fp8 = nnx.split(abstract, nnx.Param, fp8_lib.Fp8State)
  has_fp8_state = bool(jax.tree.leaves(abstract_fp8))
  optimizer = make_optimizer(c)

  param_sh = sharding.shardings(abstract_vars, mesh, strategy.params)
  # Gradients take the optimizer state's layout: where it is sharded, their reduction is a
  # reduce-scatter.
  grad_sh = sharding.shardings(abstract_vars, mesh, strategy.opt_state)
  abstract_params = nnx.to_pure_dict(abstract_vars)
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  opt_sh = optax.tree_map_params(optimizer, lambda _, s: s, abstract_opt, grad_sh,
                                 transform_non_params=lambda _: sharding.replicated(mesh))
  # Scales and amax histories are scalars and short vectors, the same on every device (the
  # amaxes are of the global tensors): replicated under every strategy.
  fp8_sh = sharding.shardings(abstract_fp8, mesh, {}) if has_fp8_state else None
  state_sh = TrainState(param_sh, opt_sh, fp8_sh)

  def init(key) -> TrainState:
    # The key is an argument, not a constant: with a constant seed XLA would try to
    # constant-fold the whole random initialisation at compile time (minutes for 500M on GPU).
    _, variables, fp8_vars = nnx.split(new_model(nnx.Rngs(params=key)), nnx.Param,
                                       fp8_lib.Fp8State)
    params = nnx.to_pure_dict(variables)
    return TrainState(params, optimizer.init(params),
                      nnx.to_pure_dict(fp8_vars) if has_fp8_state else None)

  def make_loss_fn(graphdef):
    def loss_fn(params, batch, fp8_state=None, boundary=None):
      states = (params,) if fp8_state is None else (params, fp8_state)
      logits = nnx.merge(graphdef, *states)(batch["inputs"], boundary=boundary)
      with jax.named_scope("cross_entropy"):  # the scopes name slm_jax.profile's categories
        return cross_entropy(logits, batch["targets"], c.cross_entropy)
    return loss_fn

  loss_fn = make_loss_fn(graphdef)
  per_layer = config_lib.reduce_schedule(c) == "per_layer"
  explicit = strategy.explicit or per_layer
  if explicit:
    # One device's rows with gathered weights: the same model, placing nothing itself.
    local_graphdef = nnx.split(nnx.eval_shape(lambda: new_model(nnx.Rngs(0), None)),
                               nnx.Param, fp8_lib.Fp8State)[0]
    value_and_grad = explicit_grad.value_and_grad(
        make_loss_fn(local_graphdef), mesh, param_sh, batch_sh, dtype, fp8_sh,
        per_layer=per_layer)

  def step(state: TrainState, batch: dict):
    if explicit:
      loss, grads, fp8_state = value_and_grad(state.params, batch, state.fp8)
    elif state.fp8 is None:
      loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
      fp8_state = None
    else:  # the fp8 state's "gradient" is its next value (slm_jax.fp8)
      loss, (grads, fp8_state) = jax.value_and_grad(loss_fn, argnums=(0, 2))(
          state.params, batch, state.fp8)
    grads = jax.lax.with_sharding_constraint(grads, grad_sh)
    with jax.named_scope("optimizer"):
      updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
    return (TrainState(params, opt_state, fp8_state),
            {"loss": loss, "grad_norm": optax.tree.norm(grads)})

  global_batch = c.per_device_batch_size * mesh.devices.size

  def batch(key):
    # Generated inside jit with the batch's sharding, so every device (and host) makes only
    # its own rows.
    return synthetic_batch(c, key, global_batch)

  abstract_batch = {k: jax.ShapeDtypeStruct((global_batch, c.seq_len), jnp.int32,
                                            sharding=batch_sh)
                    for k in ("inputs", "targets")}
  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      TrainState(abstract_params, abstract_opt,
                 nnx.to_pure_dict(abstract_fp8) if has_fp8_state else None), state_sh)
  return Program(
      mesh=mesh, state_shardings=state_sh, grad_shardings=grad_sh,
      init=jax.jit(init, out_shardings=state_sh),
      step=jax.jit(step, in_shardings=(state_sh, batch_sh),
                   out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0),
      batch=jax.jit(batch, out_shardings=batch_sh),
      abstract_state=abstract_state, abstract_batch=abstract_batch, step_fn=step,
      loss=jax.jit(loss_fn, in_shardings=(param_sh, batch_sh) + ((fp8_sh,) if fp8_sh else ()),
                   out_shardings=sharding.replicated(mesh)))


def is_oom(exc: BaseException) -> bool:
  text = str(exc)
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


@contextlib.contextmanager
def out_of_memory_is_a_result(doing: str, oom: Callable[[BaseException], bool] | None = None):
  """Turns the device running out of memory while `doing` into OutOfMemory (a result);
  `oom` tells such errors (default: is_oom, JAX's)."""
  try:
    yield
  except Exception as e:
    if (oom or is_oom)(e):
      raise OutOfMemory(f"{doing} ran out of device memory: {e}") from e
    raise


def placement_fields(c: ml_collections.ConfigDict, program: Program) -> dict:
  """The record's fields of how a run is laid out, known before anything is compiled."""
  num_devices = program.mesh.devices.size
  return dict(num_devices=num_devices, global_batch=c.per_device_batch_size * num_devices,
              params=sum(x.size for x in jax.tree.leaves(program.abstract_state.params)))


def local_devices(program: Program) -> list:
  """This host's devices of the mesh (memory is per host)."""
  return [d for d in program.mesh.devices.flat if d.process_index == jax.process_index()]


def compile_step(c: ml_collections.ConfigDict, program: Program, extra: dict | None = None):
  """AOT-compiles the step for the abstract state and batch; (compiled, seconds)."""
  t0 = time.perf_counter()
  compiled = compile_with_options(
      c, program.step.lower(program.abstract_state, program.abstract_batch), extra)
  return compiled, time.perf_counter() - t0


def compile_with_options(c: ml_collections.ConfigDict, lowered, extra: dict | None = None):
  """`lowered` compiled with the config's `xla_options` (and `extra`, set by slm_jax itself);
  an option XLA rejects is the user's to fix."""
  options = {**config_lib.xla_options(c), **(extra or {})}
  if not options:
    return lowered.compile()
  try:
    return lowered.compile(compiler_options=options)
  except Exception as e:  # XLA's INVALID_ARGUMENT names the option and why
    if "INVALID_ARGUMENT" in str(e) and "option" in str(e):
      raise UserError(f"--config.xla_options={c.xla_options!r}: {e}") from e
    raise


def memory_split(program: Program, compiled) -> dict:
  """Bytes per device by role: parameters, gradients, optimizer state (from their shardings)
  and XLA's temporaries (activations and workspace) for one step."""
  params, opt_state = program.abstract_state.params, program.abstract_state.opt_state
  try:
    temp = compiled.memory_analysis().temp_size_in_bytes
  except Exception:  # not every backend reports it
    temp = None
  return {
      "param_bytes_per_device": sharding.bytes_per_device(
          params, program.state_shardings.params),
      "grad_bytes_per_device": sharding.bytes_per_device(params, program.grad_shardings),
      "opt_state_bytes_per_device": sharding.bytes_per_device(
          opt_state, program.state_shardings.opt_state),
      "temp_bytes_per_device": temp,
  }


def memory_budget(c: ml_collections.ConfigDict, devices) -> int | None:
  """Bytes one device may use: the smaller of what it has and what the config's GPU has."""
  limits = [measure.device_memory_limit(d) for d in devices]
  limits = [x for x in limits if x]
  if c.device_memory_gb > 0:
    limits.append(int(c.device_memory_gb * 2**30))
  return min(limits) if limits else None


def run(c: ml_collections.ConfigDict, *, dry_run: bool = False,
        on_step: Callable[[int, int, float, float], None] = lambda *a: None,
        out: dict | None = None, profile_dir: Path | None = None) -> dict:
  """Builds, compiles and (unless dry_run) measures `c`; returns the measured fields.

  Fields go into `out` as they are measured, so a caller keeps what was learnt before a
  failure. Raises OutOfMemory when the step does not fit, UserError for a config that cannot
  run.
  """
  config_lib.validate(c)
  program = build(c)
  devices = list(program.mesh.devices.flat)
  local = local_devices(program)
  pgle.check_platform(c, devices)
  out = {} if out is None else out
  out.update(placement_fields(c, program))
  budget = memory_budget(c, local)
  out["memory_budget_bytes"] = budget

  def describe_plan(compiled) -> str:
    """Fills the plan's fields; returns the compiled HLO text (megabytes at 2B: read once)."""
    text = compiled.as_text()
    out["expected_memory_bytes"] = measure.expected_memory(compiled)
    out["mesh_shape"] = dict(program.mesh.shape)
    out["collectives"] = collectives.summarize(collectives.from_hlo(text, len(devices)))
    out.update(memory_split(program, compiled))
    if budget and out["expected_memory_bytes"] and out["expected_memory_bytes"] > budget:
      raise OutOfMemory(
          f"XLA plans {out['expected_memory_bytes'] / 2**30:.2f} GiB per device, over the "
          f"{budget / 2**30:.2f} GiB budget (device limit or --config.device_memory_gb)")
    return text

  with out_of_memory_is_a_result("compiling the step"):  # XLA finds some plans too big here
    compiled, out["compile_s"] = compile_step(c, program)
  plan_text = describe_plan(compiled)
  if dry_run:
    return out

  with out_of_memory_is_a_result("running the step"):
    state = program.init(jax.random.key(c.seed))
    batch = program.batch(jax.random.key(c.seed + 1))
    t0 = time.perf_counter()
    state, _, warm_losses = measure.time_steps(
        compiled, state, batch, c.warmup_steps, lambda i, t, l: on_step(-1, i, t, l))
    out["warmup_s"] = time.perf_counter() - t0
    if c.get("pgle_steps", 0):
      # The timed steps run the step scheduled from its own measured op times.
      ops_in_step = len(profile.hlo_ops(plan_text))
      del compiled
      compiled, state, out["pgle"] = pgle.schedule_from_profile(
          lambda extra: compile_step(c, program, extra)[0], state, batch, c.pgle_steps,
          (profile_dir or Path("profile")) / "pgle", ops_in_step)
      plan_text = describe_plan(compiled)
      state, _, _ = measure.time_steps(compiled, state, batch, 1, lambda *a: None)
    times, losses = [], []
    for r in range(c.repeats):
      state, t, l = measure.time_steps(compiled, state, batch, c.steps,
                                       lambda i, t, l, r=r: on_step(r, i, t, l))
      times += t
      losses += l
    if c.profile_steps > 0:
      state, trace, wall = profile.capture(compiled, state, batch, c.profile_steps,
                                           profile_dir or Path("profile"))
      kind = devices[0].device_kind
      # Beside the trace, the compiled step it timed: the schedule (where each collective
      # starts and where the step waits for it) is read from this text, not from the trace.
      profile.save_program(plan_text, trace)
      try:
        out["breakdown"] = profile.breakdown(
            trace, profile.hlo_ops(plan_text), c.profile_steps,
            measure.peak_tflops(kind, c.peak_tflops), measure.peak_gbytes_per_s(kind))
      except ValueError as e:  # a trace we cannot read must not cost the timed measurement
        out["breakdown"] = {"error": str(e), "trace": str(trace)}
      out["breakdown"]["wall_ms_per_step"] = wall * 1e3  # profiled steps, tracer overhead in
  del state

  step_time = measure.summarize(times)
  tokens_per_step = out["global_batch"] * c.seq_len
  out.update(
      step_time_s=step_time,
      step_times_s=times,
      losses=warm_losses + losses,
      final_loss=losses[-1],
      tokens_per_s=tokens_per_step / step_time["median"],
      peak_memory_bytes=measure.peak_memory(local),
  )
  out["tokens_per_s_per_device"] = out["tokens_per_s"] / len(devices)
  return out
