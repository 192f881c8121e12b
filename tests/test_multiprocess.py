"""Several processes joined through jax.distributed (the multi-host code path), on fake CPU
devices through launch/local.py: a preemption notice that reaches one process stops them all at
one step, and a process that dies does not leave the others waiting in a collective."""

import os
import signal
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
