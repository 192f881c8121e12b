r"""Runs independent jobs on the GPUs of one host, each on its own GPUs, as GPUs come free.

  python launch/gpu_queue.py JOBS_FILE --logdir DIR [--gpus 4] [--deadline_s 540]
                             [--sample_gpus_ms 500]

JOBS_FILE holds one shell command per line (blank lines and `#` comments skipped); a line
starting `@N ` asks for N GPUs (default 1), `@all ` for every GPU the queue has (so one file
serves hosts of 2, 4 or 8). Jobs start in file order whenever enough GPUs are
free (a job that needs more waits, and later ones wait behind it, so order longest-first), with
CUDA_VISIBLE_DEVICES naming their GPUs. Each job's output goes to DIR/job-NN.log. At the
deadline, running jobs are stopped (their process groups get SIGTERM, then SIGKILL) and jobs
not started are listed. What finished is kept: a sweep run again skips its recorded points, so
the same file run again picks up where it stopped; a compare runs whole again, because its
table compares only records of one command.

With --sample_gpus_ms, nvidia-smi reads every GPU's SM and memory clock, power draw,
temperature and clock-limit reasons at that interval into DIR/gpus.csv while the queue runs
(it only reads them), and the queue ends with each job's clocks on its GPUs. Two chips that run
the same step at different speeds show why there. `--clocks DIR` prints that table again from
DIR/queue.log (the queue's own lines) and DIR/gpus.csv.

Why: a machine of several GPUs is paid for by the minute for all of them; single-GPU
measurements on different GPUs do not share a chip, memory or link, so running them side by
side costs no accuracy and divides the wall time by the number of GPUs.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path


ALL = 0  # a job's GPU count meaning "every GPU the queue has"


class JobsError(ValueError):
  """A jobs file line the queue cannot read; the message names the line and what to write."""


def parse_jobs(text: str) -> list[tuple[int, str]]:
  jobs = []
  for number, line in enumerate(text.splitlines(), 1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    gpus = 1
    if line.startswith("@"):
      gpus, line = _gpu_request(number, line)
    jobs.append((gpus, line))
  return jobs


def _gpu_request(number: int, line: str) -> tuple[int, str]:
  """`@N cmd` or `@all cmd` as (GPUs, cmd); ALL for `@all`."""
  count, cmd = (line[1:].split(None, 1) + ["", ""])[:2]
  if count == "all" and cmd:
    return ALL, cmd
  # @0 must not mean ALL, which is 0 inside the queue.
  if count.isdigit() and int(count) > 0 and cmd:
    return int(count), cmd
  raise JobsError(f"line {number}: {line!r}: a line starting @ needs a GPU count of 1 or more "
                  "or `all`, a space, then the command (`@2 cmd`, `@all cmd`)")


def gpu_count() -> int:
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  if visible:
    return len(visible.split(","))
  try:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    count = sum(line.startswith("GPU ") for line in out.stdout.splitlines())
  except (OSError, subprocess.SubprocessError):
    count = 0
  if count:
    return count
  # Jobs that need no GPU (tests, CPU runs) still get a queue: one slot, one job at a time.
  print("note: no GPU found (nvidia-smi missing or lists none): one job at a time, each with "
        "CUDA_VISIBLE_DEVICES=0; --gpus N runs N side by side", flush=True)
  return 1


def stop(proc: subprocess.Popen) -> None:
  try:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  except ProcessLookupError:
    pass


# What --sample_gpus_ms reads; drivers before 535 know the limit reasons only by their old name.
SAMPLED = "timestamp,index,clocks.sm,clocks.mem,power.draw,temperature.gpu"
LIMIT_REASONS = ("clocks_event_reasons.active", "clocks_throttle_reasons.active")


def start_sampler(path: Path, interval_ms: int) -> subprocess.Popen | None:
  """nvidia-smi writing SAMPLED (and the clock-limit reasons) to `path` every interval_ms;
  None where nvidia-smi is missing or refuses every field set."""
  for fields in [f"{SAMPLED},{r}" for r in LIMIT_REASONS] + [SAMPLED]:
    try:
      proc = subprocess.Popen(
          ["nvidia-smi", f"--query-gpu={fields}", "--format=csv", f"-lms={interval_ms}"],
          stdout=path.open("w"), stderr=subprocess.DEVNULL)
    except OSError:
      return None
    time.sleep(1)
    if proc.poll() is None:
      return proc
  return None


# Bits of clocks_event_reasons.active (nvidia-smi --help-query-gpu).
LIMIT_BITS = {0x2: "application clocks", 0x4: "SW power cap", 0x8: "HW slowdown",
              0x10: "sync boost", 0x20: "SW thermal", 0x40: "HW thermal", 0x80: "HW power brake"}
BUSY_WATTS = 250  # H100/H200 idle near 70-120 W; any training step draws far more


def _limits(mask: str) -> str:
  try:
    bits = int(mask, 16)
  except ValueError:
    return mask or "-"
  return ", ".join(name for bit, name in LIMIT_BITS.items() if bits & bit) or "none"


def clock_report(logdir: Path) -> str:
  """Each job's busy samples on each of its GPUs, from logdir/queue.log and logdir/gpus.csv."""
  lines = (logdir / "queue.log").read_text().splitlines()
  started = next((m for m in map(re.compile(r"queue started (\S+ \S+)").match, lines) if m), None)
  if started is None:
    return "clocks: queue.log has no start time"
  t0 = datetime.datetime.strptime(started[1], "%Y-%m-%d %H:%M:%S")
  jobs: dict[str, dict] = {}
  for line in lines:
    if m := re.match(r"\[\s*(\d+)s\] job (\d+) on GPU \[([\d, ]+)\]", line):
      jobs[m[2]] = {"start": int(m[1]), "end": None, "gpus": [int(g) for g in m[3].split(",")]}
    elif (m := re.match(r"\[\s*(\d+)s\] job (\d+) exit", line)) and m[2] in jobs:
      jobs[m[2]]["end"] = int(m[1])
  samples = []
  with (logdir / "gpus.csv").open() as f:
    for row in csv.reader(f):
      row = [x.strip() for x in row]
      if len(row) < 6 or not row[1].isdigit():
        continue
      try:
        t = datetime.datetime.strptime(row[0], "%Y/%m/%d %H:%M:%S.%f")
        sm, watts = float(row[2].split()[0]), float(row[4].split()[0])
      except ValueError:  # "[N/A]" or a line cut short when the sampler stopped
        continue
      samples.append(((t - t0).total_seconds(), int(row[1]), sm, watts, row[5],
                      row[6] if len(row) > 6 else ""))
  out = [f"clocks while busy (power >= {BUSY_WATTS} W), from gpus.csv:"]
  for job, j in jobs.items():
    end = j["end"] if j["end"] is not None else float("inf")
    for gpu in j["gpus"]:
      busy = [s for s in samples if s[1] == gpu and j["start"] <= s[0] <= end
              and s[3] >= BUSY_WATTS]
      if not busy:
        out.append(f"  job {job} GPU {gpu}: no busy samples")
        continue
      sm = [s[2] for s in busy]
      temps = [int(s[4]) for s in busy if s[4].isdigit()]
      reasons = statistics.mode(_limits(s[5]) for s in busy)
      out.append(f"  job {job} GPU {gpu}: {len(busy)} samples, SM clock median "
                 f"{statistics.median(sm):.0f} MHz ({min(sm):.0f}-{max(sm):.0f}), power median "
                 f"{statistics.median(s[3] for s in busy):.0f} W, "
                 f"{min(temps, default=0)}-{max(temps, default=0)} C, limited by: {reasons}")
  return "\n".join(out)


def run(jobs: list[tuple[int, str]], gpus: int, logdir: Path, deadline_s: float,
        sample_gpus_ms: int = 0) -> int:
  logdir.mkdir(parents=True, exist_ok=True)
  (logdir / "queue.log").write_text("")
  sampler = start_sampler(logdir / "gpus.csv", sample_gpus_ms) if sample_gpus_ms else None
  if sample_gpus_ms and sampler is None:
    print("note: nvidia-smi could not be started; no gpus.csv", flush=True)
  try:
    return _run(jobs, gpus, logdir, deadline_s)
  finally:
    if sampler is not None:
      sampler.terminate()
      sampler.wait()
      print(clock_report(logdir), flush=True)


def _run(jobs: list[tuple[int, str]], gpus: int, logdir: Path, deadline_s: float) -> int:
  queue_log = (logdir / "queue.log").open("a")

  def say(line: str) -> None:  # to stdout and to queue.log, which --clocks reads
    print(line)
    queue_log.write(line + "\n")
    queue_log.flush()

  jobs = [(n if n != ALL else gpus, cmd) for n, cmd in jobs]
  too_big = [cmd for n, cmd in jobs if n > gpus]
  if too_big:
    print(f"error: {len(too_big)} job(s) ask for more than the {gpus} GPUs here: {too_big[0]}",
          file=sys.stderr)
    return 2
  t0 = time.monotonic()
  say(f"queue started {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
  free = list(range(gpus))
  running: dict[int, tuple[subprocess.Popen, list[int], float]] = {}
  pending = list(enumerate(jobs))
  failed = 0
  while pending or running:
    for i, (proc, held, start) in list(running.items()):
      if proc.poll() is not None:
        del running[i]
        free += held
        failed += proc.returncode != 0
        say(f"[{time.monotonic() - t0:6.0f}s] job {i:02d} exit {proc.returncode} after "
            f"{time.monotonic() - start:.0f}s")
    if time.monotonic() - t0 > deadline_s:
      for i, (proc, _, _) in running.items():
        say(f"deadline: stopping job {i:02d}: {jobs[i][1]}")
        stop(proc)
      for i, (_, cmd) in pending:
        say(f"deadline: not started job {i:02d}: {cmd}")
      return 1
    while pending and pending[0][1][0] <= len(free):
      i, (n, cmd) = pending.pop(0)
      held, free = sorted(free)[:n], sorted(free)[n:]
      env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(map(str, held)))
      log = (logdir / f"job-{i:02d}.log").open("w")
      # `export` so that the line re-runs the job as it ran, compound commands included.
      log.write(f"$ export CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}; {cmd}\n")
      log.flush()
      proc = subprocess.Popen(cmd, shell=True, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
      running[i] = (proc, held, time.monotonic())
      say(f"[{time.monotonic() - t0:6.0f}s] job {i:02d} on GPU {held}: {cmd}")
    time.sleep(1)
  return 1 if failed else 0


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("jobs", type=Path, nargs="?")
  ap.add_argument("--logdir", type=Path)
  ap.add_argument("--gpus", type=int, default=0, help="GPUs to use (default: all)")
  ap.add_argument("--deadline_s", type=float, default=float("inf"))
  ap.add_argument("--sample_gpus_ms", type=int, default=0,
                  help="read each GPU's clocks, power and temperature this often into "
                       "LOGDIR/gpus.csv (default: off)")
  ap.add_argument("--clocks", type=Path, metavar="LOGDIR",
                  help="print each job's clocks from a queue's LOGDIR (run nothing)")
  args = ap.parse_args()
  if args.clocks:
    return print_clocks(args.clocks)
  if args.jobs is None or args.logdir is None:
    ap.error("a JOBS_FILE and --logdir are needed (or --clocks LOGDIR)")
  try:
    jobs = parse_jobs(args.jobs.read_text())
  except (OSError, JobsError) as e:
    return error(f"jobs file {args.jobs}: {e.strerror if isinstance(e, OSError) else e}")
  try:
    args.logdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    return error(f"--logdir {args.logdir}: cannot make that directory ({e.strerror}); name a "
                 "directory, or a path where one can be made")
  return run(jobs, args.gpus or gpu_count(), args.logdir, args.deadline_s, args.sample_gpus_ms)


def print_clocks(logdir: Path) -> int:
  try:
    print(clock_report(logdir))
  except OSError as e:
    if Path(e.filename or "").name == "gpus.csv":
      why = "that queue ran without --sample_gpus_ms, or nvidia-smi could not start"
    else:
      why = "name the --logdir of a queue that has run"
    return error(f"--clocks {logdir}: cannot read {e.filename} ({e.strerror}): {why}")
  return 0


def error(message: str) -> int:
  print(f"error: {message}", file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(main())
