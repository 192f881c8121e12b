#!/usr/bin/env python3
r"""Starts N slm_jax processes on this machine, joined through jax.distributed.

For tests and demos of multi-host code on one machine: each process gets its own devices
(fake CPU devices with --cpu, or its share of the GPUs through CUDA_VISIBLE_DEVICES).

  python launch/local.py --num_processes=2 --devices_per_process=2 --cpu -- \
      --config=configs/tiny.py --config.strategy=fsdp_full --workdir=runs/local

Everything after `--` goes to `python -m slm_jax.main`. Exits with the first non-zero exit
code of the processes (128 + N for a process killed by signal N, as a shell reports it). SIGTERM
and SIGINT sent to the launcher go to every process (as a scheduler's preemption notice would).
When one process fails, the others, which may be waiting in a collective for it, get SIGTERM
and, --grace_s later, SIGKILL: no process is left holding its devices.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def exit_code(returncode: int) -> int:
  """A child's Popen return code as a shell would report it: a negative one (killed by signal
  N) would otherwise reach sys.exit as 256 - N, which names no signal."""
  return 128 - returncode if returncode < 0 else returncode


def ended(returncode: int) -> str:
  if returncode >= 0:
    return f"exited with code {returncode}"
  try:
    return f"was killed by {signal.Signals(-returncode).name}"
  except ValueError:  # a real-time signal has no name
    return f"was killed by signal {-returncode}"


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=1)
  parser.add_argument("--cpu", action="store_true", help="fake CPU devices, gloo collectives")
  parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
  parser.add_argument("--grace_s", type=float, default=60.0,
                      help="after a process fails, seconds the others get before SIGKILL")
  parser.add_argument("main_args", nargs=argparse.REMAINDER)
  args = parser.parse_args()
  # Zero processes would exit 0 having run nothing; zero devices crashes every child.
  for name in ("num_processes", "devices_per_process"):
    if getattr(args, name) < 1:
      print(f"error: --{name}={getattr(args, name)}: must be at least 1", file=sys.stderr)
      return 2
  main_args = [a for a in args.main_args if a != "--"]
  address = f"127.0.0.1:{args.port or free_port()}"

  procs = []
  for i in range(args.num_processes):
    env = dict(os.environ)
    if args.cpu:
      env.update(JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
                 XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices_per_process}")
    else:
      first = i * args.devices_per_process
      env["CUDA_VISIBLE_DEVICES"] = ",".join(
          str(d) for d in range(first, first + args.devices_per_process))
    cmd = [sys.executable, "-m", "slm_jax.main", f"--coordinator_address={address}",
           f"--num_processes={args.num_processes}", f"--process_id={i}", *main_args]
    procs.append(subprocess.Popen(cmd, env=env))

  def forward(signum, _):
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)

  signal.signal(signal.SIGTERM, forward)
  signal.signal(signal.SIGINT, forward)
  code, kill_at = 0, None
  while procs:
    for p in list(procs):
      rc = p.poll()
      if rc is None:
        continue
      procs.remove(p)
      if rc and not code:
        code = exit_code(rc)
        print(f"launch/local.py: a process {ended(rc)}; stopping the others",
              file=sys.stderr, flush=True)
        for other in procs:
          other.terminate()
        kill_at = time.monotonic() + args.grace_s
    if kill_at is not None and time.monotonic() > kill_at:
      for p in procs:
        if p.poll() is None:
          print(f"launch/local.py: process {p.pid} still running {args.grace_s:.0f} s after "
                "SIGTERM: killed", file=sys.stderr, flush=True)
          p.kill()
      kill_at = None
    time.sleep(0.2)
  return code


if __name__ == "__main__":
  sys.exit(main())
