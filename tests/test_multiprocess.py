"""Several processes joined through jax.distributed (the multi-host code path), on fake CPU
devices through launch/local.py: a preemption notice that reaches one process stops them all at
one step, and a process that dies does not leave the others waiting in a collective; nor does a
process that never joins, or one that stops."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from slm_jax import results

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["--config=configs/tiny_train.py", "--config.eval_every=0", "--config.checkpoint_every=0",
         "--config.tensorboard=false", "--config.per_device_batch_size=4"]


def launch(workdir, *args, grace_s=60):
  return subprocess.Popen(
      [sys.executable, "launch/local.py", "--num_processes=2", "--cpu", f"--grace_s={grace_s}",
       "--", f"--workdir={workdir}", *TRAIN, *args],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def worker(launcher: subprocess.Popen, process_id: int) -> int:
  """The pid of the launcher's child running process `process_id`."""
  for _ in range(600):
    for pid in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split():
      if f"--process_id={process_id}" in Path(f"/proc/{pid}/cmdline").read_text():
        return int(pid)
    time.sleep(0.1)
  raise AssertionError(f"process {process_id} did not start")


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 300) -> str:
  seen, end = [], time.monotonic() + timeout
  while time.monotonic() < end:
    line = proc.stdout.readline()
    if not line and proc.poll() is not None:
      break
    seen.append(line)
    if text in line:
      return "".join(seen)
  raise AssertionError(f"no {text!r} in the output:\n" + "".join(seen)[-3000:])


def test_sigterm_to_one_process_stops_every_process_at_one_step(tmp_path):
  first = launch(tmp_path, "--config.train_steps=400", "--config.strategy=ddp")
  wait_for_line(first, "train step 12/")
  os.kill(worker(first, 1), signal.SIGTERM)  # the notice reaches one host only
  out, _ = first.communicate(timeout=300)
  assert first.returncode == 0, out[-3000:]
  [record] = results.read(tmp_path / "results.jsonl")
  assert record["status"] == "preempted" and record["num_processes"] == 2, record["message"]
  stopped = record["steps_trained"]
  assert 12 <= stopped < 400
  # The same command on another strategy resumes from that step, where both processes left it.
  second = launch(tmp_path, f"--config.train_steps={stopped + 6}", "--config.strategy=fsdp_full")
  out, _ = second.communicate(timeout=300)
  assert second.returncode == 0, out[-3000:]
  resumed = results.read(tmp_path / "results.jsonl")[-1]
  assert resumed["status"] == "ok" and resumed["resumed_from_step"] == stopped
  assert resumed["steps_trained"] == stopped + 6
  assert resumed["losses"][:stopped] == record["losses"]


def test_a_process_that_dies_does_not_leave_the_others_waiting(tmp_path):
  run = launch(tmp_path, "--config.train_steps=100000", "--config.strategy=ddp", grace_s=5)
  wait_for_line(run, "train step 5/")
  survivor = worker(run, 0)
  os.kill(worker(run, 1), signal.SIGKILL)  # process 1 dies without a word
  out, _ = run.communicate(timeout=120)
  assert run.returncode != 0
  assert "stopping the others" in out
  assert not Path(f"/proc/{survivor}").exists() or "zombie" in Path(
      f"/proc/{survivor}/status").read_text()


def test_a_mesh_that_leaves_a_process_out_is_one_error_line_on_each(tmp_path):
  # strategy=single uses process 0's first device: process 1 would have no rows to feed and
  # process 0 would wait for it at its first collective.
  proc = subprocess.run(
      [sys.executable, "launch/local.py", "--num_processes=2", "--cpu", "--grace_s=20", "--",
       f"--workdir={tmp_path}", "--config=configs/tiny.py", "--config.tensorboard=false"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 2 and all("--config.strategy=single runs on one device, which leaves "
                                  "process(es) [1] of this 2-process run" in l for l in errors)
  assert "Traceback" not in proc.stderr
  records = results.read(tmp_path / "results.jsonl")
  assert [r["status"] for r in records] == ["error"]


def main_process(workdir, process_id: int, port: int, *args) -> subprocess.Popen:
  """One process of a 2-process run started by hand, as on two hosts (no launcher to stop it)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.Popen(
      [sys.executable, "-m", "slm_jax.main", f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={process_id}", f"--workdir={workdir}", *TRAIN, *args],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_a_process_whose_peers_never_join_ends_with_one_error_line(tmp_path):
  # Before, it waited 5 minutes without a word, then aborted in C++ blaming a task that died.
  start = time.monotonic()
  proc = main_process(tmp_path, 1, free_port(), "--init_timeout_s=3")
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 1, out[-3000:]
  [line] = [l for l in out.splitlines() if l.strip()]
  assert line.startswith("error: process 1 of 2: the other processes at 127.0.0.1:")
  assert "did not all join within 3 s" in line
  assert time.monotonic() - start < 60
  assert not (tmp_path / "results.jsonl").exists()
  bad = main_process(tmp_path, 1, free_port(), "--heartbeat_timeout_s=0")
  out, _ = bad.communicate(timeout=120)
  assert bad.returncode == 2 and out.strip() == (
      "error: --heartbeat_timeout_s=0: give a number of seconds >= 1")


def test_a_slurm_task_whose_peers_never_join_ends_with_one_error_line(tmp_path):
  # Under SLURM jax.distributed reads the coordinator and ranks from the job's variables.
  env = dict(os.environ, JAX_PLATFORMS="cpu", SLURM_JOB_ID="4242", SLURM_NTASKS="2",
             SLURM_PROCID="1", SLURM_LOCALID="0", SLURM_STEP_NODELIST="localhost",
             SLURM_NODELIST="localhost")
  proc = subprocess.run(
      [sys.executable, "-m", "slm_jax.main", "--init_timeout_s=3", f"--workdir={tmp_path}",
       *TRAIN], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert proc.stderr.strip() == (
      "error: SLURM task 1 of 2: the other processes of this job did not all join within 3 s; "
      "check that every task started (sacct, their logs) and that the first node's port is "
      "reachable from here")


def test_ctrl_c_while_waiting_for_the_other_processes_ends_at_once(tmp_path):
  # The main thread waits inside JAX's C++, where Python's own Ctrl-C handling never runs.
  proc = main_process(tmp_path, 0, free_port(), "--init_timeout_s=300")
  wait_for_line(proc, "process 0 of 2: waiting for the other processes at 127.0.0.1:",
                timeout=120)
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=30)
  assert proc.returncode == 130, out[-3000:]
  assert "interrupted while joining the other processes: nothing was recorded" in out


def test_a_stopped_peer_ends_the_others_after_the_heartbeat_timeout(tmp_path):
  # No launcher here, as on two hosts: JAX's coordination service notices the missing
  # heartbeats. At its default (100 s) the survivor would still be waiting at the deadline.
  port = free_port()
  survivor = main_process(tmp_path, 0, port, "--heartbeat_timeout_s=10",
                          "--config.train_steps=100000", "--config.strategy=ddp")
  peer = main_process(tmp_path, 1, port, "--heartbeat_timeout_s=10",
                      "--config.train_steps=100000", "--config.strategy=ddp")
  try:
    wait_for_line(survivor, "train step 5/")
    peer.send_signal(signal.SIGSTOP)  # hangs without dying: its socket stays open
    start = time.monotonic()
    out, _ = survivor.communicate(timeout=80)
    assert survivor.returncode != 0
    assert time.monotonic() - start < 60
    assert "stopped sending heartbeats" in out
  finally:
    for proc in (survivor, peer):
      proc.kill()
      proc.communicate()
