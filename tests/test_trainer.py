import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from slm_jax import config as config_lib
from slm_jax import data, results, tokenizer, train, trainer, workdir
from slm_jax.checkpoint import Checkpointer
from slm_jax.errors import NothingToDo, UserError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def text(tmp_path_factory):
  """A small JSONL corpus from the standard library's source, and a BPE for it."""
  d = tmp_path_factory.mktemp("corpus")
  with open(d / "docs.jsonl", "w") as f:
    for path in data.stdlib_files()[:30]:
      f.write(json.dumps({"text": path.read_text(encoding="utf-8", errors="replace")}) + "\n")
  tok = tokenizer.train_bpe((json.loads(l)["text"] for l in open(d / "docs.jsonl")), 512)
  tok.save(str(d / "tokenizer.json"))
  return {"data_files": str(d / "docs.jsonl"), "tokenizer_path": str(d / "tokenizer.json")}


def cfg(text, **kw):
  c = config_lib.train_config(config_lib.tiny_config(), train_steps=6, checkpoint_every=3,
                              eval_every=3)
  c.update(text, learning_rate=3e-3, eval_batches=1, per_device_batch_size=4, seq_len=64)
  c.update(kw)
  return c


def restore(directory, c):
  ckpt = Checkpointer(directory, 3)
  try:
    return ckpt.restore_latest(train.build(c).abstract_state)
  finally:
    ckpt.close()


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state)]


@pytest.fixture(scope="module")
def straight(text, tmp_path_factory):
  """Six steps in one go, checkpointed after 3 and 6: (record, workdir); copy before changing."""
  workdir = tmp_path_factory.mktemp("straight")
  return trainer.run(cfg(text), workdir=workdir), workdir


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(text, straight, tmp_path):
  straight, straight_dir = straight
  shutil.copytree(straight_dir / "checkpoints", tmp_path / "a/checkpoints")
  first = trainer.run(cfg(text, train_steps=3), workdir=tmp_path / "b")
  resumed = trainer.run(cfg(text), workdir=tmp_path / "b")
  assert first["steps_trained"] == 3 and resumed["resumed_from_step"] == 3
  assert len(straight["losses"]) == 6 and straight["losses"][0] > straight["losses"][-1]
  assert resumed["losses"] == straight["losses"]  # exact floats, no tolerance
  assert resumed["eval_losses"] == straight["eval_losses"]
  (sa, a, _), (sb, b, _) = restore(tmp_path / "a/checkpoints", cfg(text)), \
      restore(tmp_path / "b/checkpoints", cfg(text))
  assert sa == sb == 6
  for x, y in zip(leaves(a), leaves(b)):
    np.testing.assert_array_equal(x, y)
  # Another session restores onto 8 devices under ZeRO-3 with identical values.
  step, sharded, _ = restore(tmp_path / "a/checkpoints", cfg(text, strategy="fsdp_full"))
  assert step == 6 and len(sharded.params["lm_head"]["kernel"].sharding.device_set) == 8
  assert "fsdp" in str(sharded.params["lm_head"]["kernel"].sharding.spec)
  for x, y in zip(leaves(a), leaves(sharded)):
    np.testing.assert_array_equal(x, y)


def test_tokens_trained_adds_each_session_s_own_batch(text, straight, tmp_path):
  # Three steps on one device (4 x 64 tokens a step), then three under ddp on two (8 x 64):
  # counting every step at the last session's batch would say 3072.
  shutil.copytree(straight[1] / "checkpoints", tmp_path / "checkpoints")
  shutil.rmtree(tmp_path / "checkpoints/6")
  out = trainer.run(cfg(text, strategy="ddp", num_devices=2), workdir=tmp_path)
  assert out["resumed_from_step"] == 3 and out["steps_trained"] == 6
  assert out["tokens_trained"] == 3 * 4 * 64 + 3 * 8 * 64


def test_a_checkpoint_keeps_its_meta_as_it_was_when_saved(tmp_path):
  # The loop goes on appending to its loss curve while a save writes in the background; the
  # checkpoint must hold the curve as of its own step (CI once restored step 3 with step 4's
  # row: a resumed run would then count that step twice).
  state = {"w": jax.numpy.arange(4.0)}
  ckpt = Checkpointer(tmp_path, 2)
  try:
    curve = [[1, 0.1, None, 6.0]]
    ckpt.save(1, state, {"curve": curve})
    curve.append([2, 0.2, None, 5.9])
    ckpt.wait()
    step, _, meta = ckpt.restore_latest(jax.eval_shape(lambda: state))
  finally:
    ckpt.close()
  assert step == 1 and meta["curve"] == [[1, 0.1, None, 6.0]]


def test_a_corrupt_checkpoint_falls_back_to_the_last_good_one(text, straight, tmp_path, capsys):
  shutil.copytree(straight[1] / "checkpoints", tmp_path / "checkpoints")
  for f in (tmp_path / "checkpoints/6/state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  step, _, meta = restore(tmp_path / "checkpoints", cfg(text))
  assert step == 3 and len(meta["curve"]) == 3
  err = capsys.readouterr().err
  assert "checkpoint step 6" in err and "unreadable" in err and "falling back to step 3" in err
  # Checkpoints of another model are not silently replaced by a fresh start.
  with pytest.raises(UserError, match="no checkpoint in .* can be read for this config"):
    restore(tmp_path / "checkpoints", cfg(text, ffn_dim=64))


def test_resuming_another_models_checkpoints_is_one_error_without_tracebacks(text, straight,
                                                                           tmp_path):
  # Judged from the checkpoints' metadata: orbax, asked to read arrays of other shapes, leaves
  # pending reads that print asyncio tracebacks at exit.
  shutil.copytree(straight[1] / "checkpoints", tmp_path / "checkpoints")
  proc = subprocess.run(
      [sys.executable, "-m", "slm_jax.main", "--config=configs/tiny_train.py",
       f"--workdir={tmp_path}", "--config.ffn_dim=64", "--config.per_device_batch_size=4",
       "--config.seq_len=64", *[f"--config.{k}={v}" for k, v in text.items()]],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
  assert "error: no checkpoint in" in proc.stderr and "arrays of shape (64, 64)" in proc.stderr


def test_the_held_out_loss_compiles_with_the_step_s_xla_options(text, tmp_path, monkeypatch):
  compiled = []

  def recording(c, lowered):
    compiled.append(lowered)
    return real(c, lowered)
  real = train.compile_with_options
  monkeypatch.setattr(train, "compile_with_options", recording)
  c = cfg(text, train_steps=3, checkpoint_every=0, xla_options="xla_cpu_enable_fast_math=false")
  record = trainer.run(c, workdir=tmp_path)
  assert record["eval_losses"] and record["final_loss"] is not None
  assert len(compiled) == 2  # the step and the held-out loss


def test_a_non_finite_update_stops_with_the_last_good_state_checkpointed(text, tmp_path):
  proc = subprocess.run(  # an infinite learning rate makes the first update NaN
      [sys.executable, "-m", "slm_jax.main", "--config=configs/tiny_train.py",
       f"--workdir={tmp_path}", "--config.learning_rate=inf", "--config.eval_every=0",
       *[f"--config.{k}={v}" for k, v in text.items()]],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert "error: non-finite loss" in proc.stderr and "at step 1;" in proc.stderr
  [record] = results.read(tmp_path / "results.jsonl")
  assert record["status"] == "nan" and "last good state (after 0 steps)" in record["message"]
  assert record["steps_trained"] == 0
  c = cfg(text, learning_rate=float("inf"))
  step, state, _ = restore(tmp_path / "checkpoints", c)
  init = train.build(c).init(jax.random.key(c.seed))
  assert step == 0
  for x, y in zip(leaves(init), leaves(state)):
    np.testing.assert_array_equal(x, y)


def test_a_dollar_budget_stops_the_run_and_prices_the_curve(text, tmp_path):
  out = trainer.run(cfg(text, train_steps=0, dollar_budget=0.3, price_per_device_hour=3600.0,
                        eval_every=0, checkpoint_every=0), workdir=tmp_path)
  dollars = [d for d, _ in out["loss_vs_dollars"]]
  assert 0.3 <= out["dollars_spent"] and dollars == sorted(dollars) and dollars[-1] <= 0.3 + 1
  assert out["steps_trained"] == len(dollars) >= 2
  # $1 per second: dollars are the training seconds
  assert out["dollars_spent"] == pytest.approx(out["train_s"])


def test_bad_inputs_are_user_errors(text, tmp_path):
  with pytest.raises(UserError, match="no file matches"):
    trainer.run(cfg(text, data_files=str(tmp_path / "nope.txt")), workdir=tmp_path)
  with pytest.raises(UserError, match="has 512 tokens but the model's vocabulary is 300"):
    trainer.run(cfg(text, vocab_size=300), workdir=tmp_path)
  with pytest.raises(UserError, match="needs a budget"):
    trainer.run(cfg(text, train_steps=0), workdir=tmp_path)
  with pytest.raises(UserError, match="adam_eps > 0"):
    trainer.run(cfg(text, adam_eps=0.0), workdir=tmp_path)
  with pytest.raises(UserError, match="needs a price"):
    trainer.run(cfg(text, dollar_budget=1.0), workdir=tmp_path)


def launch(text, workdir, *extra):
  args = [f"--config.{k}={v}" for k, v in text.items()]
  return subprocess.Popen(
      [sys.executable, "-m", "slm_jax.main", "--config=configs/tiny_train.py",
       f"--workdir={workdir}", "--config.train_steps=100000", "--config.eval_every=0",
       *args, *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, PYTHONPATH=str(ROOT)))


def wait_for(predicate, timeout=120.0):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.002)


def test_sigterm_checkpoints_and_the_same_command_resumes(text, tmp_path):
  proc = launch(text, tmp_path, "--config.checkpoint_every=0")
  line = ""
  while "train step 5/" not in line:
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
  proc.send_signal(signal.SIGTERM)
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 0, stderr
  [record] = results.read(tmp_path / "results.jsonl")
  assert record["status"] == "preempted" and "run the same command" in record["message"]
  step = record["steps_trained"]
  assert step >= 5 and len(record["losses"]) == step
  assert (tmp_path / "checkpoints" / str(step)).is_dir()
  out = trainer.run(cfg(text, train_steps=step + 2, eval_every=0), workdir=tmp_path)
  assert out["resumed_from_step"] == step and out["losses"][:step] == record["losses"]


def test_sigkill_during_an_async_save_keeps_the_previous_checkpoint(text, tmp_path, capsys):
  # A wider model makes each save last long enough to be caught in the middle.
  proc = launch(text, tmp_path, "--config.checkpoint_every=1", "--config.ffn_dim=4096",
                "--config.keep_checkpoints=2")
  ckpts = tmp_path / "checkpoints"
  try:
    wait_for(lambda: any(p.name.split(".")[0] not in ("", "1") for p in
                         ckpts.glob("*.orbax-checkpoint-tmp*")) if ckpts.exists() else False)
    proc.kill()
  finally:
    proc.kill()
    proc.communicate()
  half = [p for p in ckpts.iterdir() if "tmp" in p.name]
  assert half, "no save was caught in progress"
  restored = restore(ckpts, cfg(text, ffn_dim=4096))
  assert restored is not None and restored[0] >= 1
  assert "never finished" in capsys.readouterr().err
  step, _, meta = restored
  assert len(meta["curve"]) == step  # the checkpoint is whole: its history matches its step


def test_the_embedded_corpus_trains_out_of_the_box(tmp_path):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  proc = subprocess.run(
      [sys.executable, "-m", "slm_jax.main", "--config=configs/tiny.py", "--config.mode=train",
       f"--workdir={tmp_path}", "--config.train_steps=4", "--config.eval_every=2",
       "--config.eval_batches=1", "--config.price_per_device_hour=1.0"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert proc.returncode == 0, proc.stderr
  assert "Loss/Dollar" in proc.stdout and "standard library" in proc.stdout
  [record] = results.read(tmp_path / "results.jsonl")
  assert set(results.REQUIRED) <= set(record)
  assert record["status"] == "ok" and record["mode"] == "train" and record["steps_trained"] == 4
  assert [s for s, _, _ in record["eval_losses"]] == [0, 2, 4]
  assert len(record["loss_vs_dollars"]) == 4 and record["dollars_spent"] > 0
  assert record["loss_vs_dollars"][-1][1] == record["final_loss"]
  assert record["tokens_per_s"] > 0 and record["train_tokens_per_s"] > 0
  assert list((tmp_path / "tokenizer").glob("bpe-v512-*.json"))
  acc = EventAccumulator(str(tmp_path / "tensorboard" / "tiny_xla_single_b8_train" /
                             record["run_id"]), size_guidance={"scalars": 0})
  acc.Reload()
  assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
  assert len(acc.Scalars("eval/loss")) == 3
  assert len(acc.Scalars("loss_vs_dollars/train (step = micro-USD)")) == 4


def test_step_inputs_times_every_way_of_feeding_the_step(tmp_path):
  # benchmarks/step_inputs.py found the training loop's gap to the benchmark; it must keep running against the trainer.
  out = tmp_path / "rows.jsonl"
  proc = subprocess.run(
      [sys.executable, "benchmarks/step_inputs.py", "--config=configs/tiny_train.py",
       f"--workdir={tmp_path}", f"--out={out}", "--steps=2", "--rounds=1"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  ways = {r["way"] for r in rows}
  assert {f"{s}/{t}-{h}" for s in ("plain", "guarded") for t in ("uniform", "text")
          for h in ("same", "fresh")} < ways
  embed = [r for r in rows if r["way"].startswith("embed-grad/")]
  assert len(embed) == 4 and all(r["median_ms"] > 0 for r in rows)
  text = next(r for r in embed if r["way"].endswith("/text"))
  uniform = next(r for r in embed if r["way"].endswith("/uniform"))
  assert text["most_repeated_token_count"] > uniform["most_repeated_token_count"]


def corrupt(directory: Path) -> None:
  """Flips every 7th byte of a checkpoint's array files, as a bad disk would."""
  for f in directory.rglob("*"):
    if f.is_file() and f.parent.name == "d":
      b = bytearray(f.read_bytes())
      b[::7] = bytes(x ^ 0xFF for x in b[::7])
      f.write_bytes(b)


def test_a_damaged_checkpoint_is_one_short_warning_and_the_run_goes_on(text, straight,
                                                                      tmp_path):
  shutil.copytree(straight[1] / "checkpoints", tmp_path / "checkpoints")
  corrupt(tmp_path / "checkpoints/6/state")
  proc = subprocess.run(
      [sys.executable, "-m", "slm_jax.main", "--config=configs/tiny_train.py",
       f"--workdir={tmp_path}", "--config.train_steps=7", "--config.eval_every=0",
       "--config.per_device_batch_size=4", "--config.seq_len=64",
       *[f"--config.{k}={v}" for k, v in text.items()]],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()  # no "Event loop is closed" tracebacks
  assert all(l.startswith("warning: ") for l in lines), proc.stderr[-3000:]
  # (The other warning, if any: this config's warm-up differs from the fixture's.)
  [line] = [l for l in lines if "unreadable" in l]
  assert line.startswith("warning: checkpoint step 6 in") and "falling back to step 3" in line
  assert len(line) < 500 and "tensorstore_spec" not in line
  assert "kept as 6.unreadable" in line
  [record] = results.read(tmp_path / "results.jsonl")
  assert record["resumed_from_step"] == 3 and record["steps_trained"] == 7
  # Set aside, whole: out of the steps that count towards keep_checkpoints.
  assert (tmp_path / "checkpoints/6.unreadable/state").is_dir()
  assert (tmp_path / "checkpoints/7").is_dir() and (tmp_path / "checkpoints/3").is_dir()


def test_a_finished_run_run_again_trains_and_records_nothing(text, straight, tmp_path):
  shutil.copytree(straight[1] / "checkpoints", tmp_path / "checkpoints")
  with pytest.raises(NothingToDo, match="has already trained 6 steps"):
    trainer.run(cfg(text), workdir=tmp_path)
  proc = subprocess.run(
      [sys.executable, "-m", "slm_jax.main", "--config=configs/tiny_train.py",
       f"--workdir={tmp_path}", "--config.train_steps=6",
       *[f"--config.{k}={v}" for k, v in text.items()]],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert proc.returncode == 0 and "nothing to train" in proc.stdout, proc.stderr
  assert "status" not in proc.stdout and not proc.stderr.strip()
  assert not (tmp_path / "results.jsonl").exists() and not (tmp_path / "tensorboard").exists()


HOLD = """
import sys, time
from slm_jax import workdir
workdir.Lock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_workdir_locked_by_a_running_process_is_refused_and_a_dead_one_s_taken_over(
    text, tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(UserError, match=f"is in use by process {holder.pid} on "):
      trainer.run(cfg(text), workdir=tmp_path)
  finally:
    holder.kill()  # SIGKILL: the lock file still names it
    holder.wait()
  assert workdir.Lock(tmp_path).read_holder()["pid"] == holder.pid
  lock = workdir.Lock(tmp_path)
  lock.acquire()  # a dead holder's lock is taken over
  assert lock.read_holder()["pid"] == os.getpid()
  lock.release()
  assert lock.read_holder() == {}  # a finished run holds nothing


def test_ctrl_c_checkpoints_records_preempted_and_refuses_a_second_run_meanwhile(text,
                                                                                 tmp_path):
  proc = launch(text, tmp_path, "--config.checkpoint_every=0")
  line = ""
  while "train step 5/" not in line:
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
  # A second run in the same workdir while the first trains: one error line naming it.
  second = subprocess.run(
      [sys.executable, "-m", "slm_jax.main", "--config=configs/tiny_train.py",
       f"--workdir={tmp_path}", "--config.learning_rate=1e-3",
       *[f"--config.{k}={v}" for k, v in text.items()]],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert second.returncode == 2
  [error] = second.stderr.strip().splitlines()
  assert error.startswith(f"error: {tmp_path} is in use by process {proc.pid} on ")
  assert "slm_jax.main" in error
  proc.send_signal(signal.SIGINT)
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 130 and "Traceback" not in stderr, stderr
  assert "interrupted: checkpointing" in stderr
  [record] = results.read(tmp_path / "results.jsonl")  # the second run wrote nothing
  assert record["status"] == "preempted" and record["message"].startswith("SIGINT after")
  step = record["steps_trained"]
  assert (tmp_path / "checkpoints" / str(step)).is_dir()
  out = trainer.run(cfg(text, train_steps=step + 2, eval_every=0), workdir=tmp_path)
  assert out["resumed_from_step"] == step and out["losses"][:step] == record["losses"]


def test_a_second_ctrl_c_exits_at_once(text, tmp_path):
  # A wider model makes the checkpoint save long enough to press Ctrl-C again during it.
  proc = launch(text, tmp_path, "--config.checkpoint_every=0", "--config.ffn_dim=4096")
  line = ""
  while "train step 3/" not in line:
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
  proc.send_signal(signal.SIGINT)
  ckpts = tmp_path / "checkpoints"
  wait_for(lambda: ckpts.exists() and any(ckpts.glob("*.orbax-checkpoint-tmp*")))
  proc.send_signal(signal.SIGINT)
  _, stderr = proc.communicate(timeout=60)
  assert proc.returncode == 130 and "interrupted again: exiting now" in stderr, stderr
  assert "Traceback" not in stderr and not (tmp_path / "results.jsonl").exists()


def test_a_multi_process_run_in_a_workdir_in_use_stops_on_every_process(tmp_path):
  # Process 0 holds the lock for the run and tells the others, which would otherwise wait
  # for it at their first collective. Started by hand: launch/local.py stops the others
  # itself once one fails, as a cluster's launcher need not.
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{sock.getsockname()[1]}"
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  try:
    assert holder.stdout.readline() == "held\n"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "slm_jax.main", f"--coordinator_address={address}",
         "--num_processes=2", f"--process_id={i}", "--config=configs/tiny.py",
         "--config.mode=train", "--config.strategy=ddp", "--config.train_steps=2",
         f"--workdir={tmp_path}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
  finally:
    holder.kill()
    holder.wait()
  assert [p.returncode for p in procs] == [2, 2], [e[-2000:] for _, e in outs]
  errors = [[l for l in e.splitlines() if l.startswith("error:")] for _, e in outs]
  assert errors[1] == [f"error: {tmp_path} is in use by another run (process 0 names it)"]
  [first] = errors[0]
  assert f"in use by process {holder.pid} on" in first
  assert not any("Traceback" in e for _, e in outs)
  assert not (tmp_path / "results.jsonl").exists()


def test_resuming_with_another_learning_rate_says_so(text, straight, tmp_path, capsys):
  shutil.copytree(straight[1] / "checkpoints", tmp_path / "checkpoints")
  out = trainer.run(cfg(text, learning_rate=1e-3, train_steps=7, eval_every=0),
                    workdir=tmp_path)
  assert out["resumed_from_step"] == 6
  [line] = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning:")]
  assert "written with other settings: learning_rate 0.003 -> 0.001;" in line


def test_resuming_in_fp8_says_so(text, straight, tmp_path, capsys):
  # Current scaling keeps no state of its own, so the bf16 checkpoint restores as it is.
  shutil.copytree(straight[1] / "checkpoints", tmp_path / "checkpoints")
  out = trainer.run(cfg(text, fp8=True, train_steps=7, eval_every=0), workdir=tmp_path)
  assert out["resumed_from_step"] == 6
  [line] = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning:")]
  assert "written with other settings: fp8 False -> True;" in line
