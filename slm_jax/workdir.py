"""The work folder: checked before anything is run, and locked while a training run uses it.

A training run's workdir holds state that one run at a time may own: its checkpoints (a second
run would resume from them, or delete them) and the tokenizer cache. `Lock` is a file,
`<workdir>/.slm_jax.lock`, that names its holder (pid, host, start time, command) and carries
an advisory `flock`: the kernel drops the flock when the holder exits, however it exits, so a
lock left by a finished or killed run is simply taken over. On a shared filesystem the flock
reaches other hosts where the filesystem has file locks (NFSv4, Lustre, GPFS); where it has
none (`flock` fails), a lock naming a live process on this host, or any process on another, is
honoured as written, and one naming a process gone from this host is taken over.

Benchmark runs take no lock: they only append whole lines to results.jsonl and write their own
TensorBoard run, so sweeps and side-by-side single-GPU jobs may share one workdir.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

from slm_jax.errors import UserError, WorkdirInUse

LOCK_NAME = ".slm_jax.lock"


def prepare(workdir: str | os.PathLike, flag: str = "--workdir") -> Path:
  """Creates `workdir` if needed and checks that files can be written in it; a path that is a
  file, cannot be created or is read-only is one UserError, before any work is done."""
  path = Path(workdir)
  if path.exists() and not path.is_dir():
    raise UserError(f"{flag}={workdir} is a file, not a folder; give a folder")
  try:
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path, prefix=".slm_jax-write-check-"):
      pass
  except OSError as e:
    raise UserError(f"{flag}={workdir}: cannot write there ({e.strerror or e}); give a folder "
                    "you can write to") from None
  return path


def _holder_text(holder: dict) -> str:
  return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (started "
          f"{holder.get('started', '?')}: {holder.get('command', '?')})")


def _command() -> str:
  """This process's command line, as typed: `python -m slm_jax.main ...` for a module."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  head = ["python", "-m", spec.name] if spec and spec.name else ["python", sys.argv[0]]
  return " ".join(head + sys.argv[1:])[:500]


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process: alive
    return True
  return True


class Lock:
  """Held from `acquire()` until `release()` or the process's end."""

  def __init__(self, workdir: str | os.PathLike):
    self.path = Path(workdir) / LOCK_NAME
    self._fd: int | None = None

  def read_holder(self) -> dict:
    try:
      holder = json.loads(self.path.read_text() or "{}")
    except (OSError, ValueError):
      return {}
    return holder if isinstance(holder, dict) else {}

  def acquire(self) -> None:
    """Takes the lock, or raises WorkdirInUse naming the running process that holds it."""
    self.path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        os.close(fd)
        raise WorkdirInUse(self._in_use(self.read_holder())) from None
      # No file locks here (some network filesystems): trust what the file says.
      holder = self.read_holder()
      if holder and (holder.get("host") != socket.gethostname() or _alive(holder.get("pid", 0))):
        os.close(fd)
        raise WorkdirInUse(self._in_use(holder)) from None
    self._fd = fd
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
          "command": _command()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)

  def _in_use(self, holder: dict) -> str:
    who = _holder_text(holder) if holder else "another process"
    return (f"{self.path.parent} is in use by {who}; wait for it to finish, stop it, or give "
            f"another --workdir (two runs in one workdir would share checkpoints; lock file "
            f"{self.path})")

  def release(self) -> None:
    """Empties the file (a finished run holds nothing) and drops the flock. The file stays:
    deleting it would let a run that opened it a moment ago lock an orphaned copy."""
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)
    finally:
      os.close(self._fd)  # closing drops the flock
      self._fd = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *_):
    self.release()
