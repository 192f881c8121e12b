r"""Trains and measures one configuration; appends a record to <workdir>/results.jsonl.

  python -m slm_jax.main --config=configs/1b_h100.py --workdir=runs/1b \
      --config.per_device_batch_size=32 --config.attention=xla
"""

import os
import re
import signal

# JAX takes 75% of GPU memory by default; the paper's question is what fits in the card.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")

import sys
import tempfile
import threading
import traceback
from pathlib import Path

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from slm_jax import config as config_lib
from slm_jax import errors, results, train
from slm_jax import tensorboard_writer as tb
from slm_jax import workdir as workdir_lib
from slm_jax.errors import NonFinite, NothingToDo, Preempted, UserError, WorkdirInUse
from slm_jax.tensorboard_writer import Writer



def _flag_error(e: Exception):
  """A misspelt or mistyped --config.FIELD, or a config file whose get_config fails, reported in
  one line instead of a traceback."""
  text = str(e).strip()
  while len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":  # KeyError's repr quotes
    text = text[1:-1]
  if "Traceback" in text:
    where = re.match(r"flag (--config=\S+):", text)
    text = f"{where[1] if where else '--config'}: {_get_config_failure(text)}"
  text = text.replace("\\n", " ").replace("\n", " ")
  text = text.replace("\\'", "'")
  if "before a value for --config was specified" in text:
    text += "; put --config=FILE before the --config.FIELD=VALUE overrides"
  elif re.fullmatch(r"[\w.]+", text):  # a KeyError naming a field with no close match
    text = f"--config.{text}: no such config field"
  print(f"error: {text}", file=sys.stderr)
  print("Pass --helpfull to see the flags; configs/*.py list the config fields.", file=sys.stderr)
  sys.exit(2)


def define_config_flag(default: str | None,
                       help_text: str = "Config file (configs/*.py); fields can be overridden "
                       "with --config.FIELD=VALUE."):
  """Defines the locked --config flag. config_flags loads the default file and applies the
  --config.FIELD overrides in sys.argv right here, so a bad override is reported here."""
  try:
    return config_flags.DEFINE_config_file("config", default, help_text, lock_config=True)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    _flag_error(e)


def _define_config_flag():
  # The default file asks JAX for its devices, so this runs after `init_distributed` (JAX
  # must join a multi-process run before it sees devices).
  global _CONFIG
  _CONFIG = define_config_flag(str(Path(__file__).with_name("default_config.py")))


_CONFIG = None
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Where results.jsonl and TensorBoard "
                               "events go; records are appended.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a run over several processes "
    "(hosts); with --num_processes and --process_id. Found automatically under SLURM.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0..N-1.")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "init_timeout_s", 300, "Seconds a process of a multi-process run waits for every process to "
    "join process 0's coordinator before it ends with an error.")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout_s", 100, "Seconds without a heartbeat after which JAX's coordination "
    "service takes a process of a multi-process run for dead and ends the others.")
_TAG = flags.DEFINE_string("tag", None, "A label stored in the record's `tag` field (the sweep "
                           "marks its points with it).")
_CAMPAIGN = results.campaign_flag()
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Build and compile abstractly; record parameters, "
                             "FLOPs per token and XLA's expected memory, but do not train.")


class Progress:
  """One line per step, redrawn in place on a terminal; also per-step TensorBoard scalars:
  warm-up steps under warmup/, timed and training steps under train/, and each timed
  repeat's median step time at its last step."""

  def __init__(self, c, writer: Writer | None):
    self.c, self.writer, self.tty = c, writer, sys.stdout.isatty()
    self.tokens_per_step = c.per_device_batch_size * c.seq_len
    self.global_step = 0
    self._repeat_ms: list[float] = []

  def __call__(self, repeat: int | None, i: int, seconds: float, loss: float) -> None:
    """Step `i` of warm-up (repeat -1), of a timed repeat, or (repeat None) of training,
    where `i` counts from the run's first step, resumed sessions included."""
    c = self.c
    self.global_step = i + 1 if repeat is None else self.global_step + 1
    if repeat is None:
      phase, total = "train", c.train_steps or "-"
    else:
      phase = "warmup" if repeat < 0 else f"repeat {repeat + 1}/{c.repeats}"
      total = c.warmup_steps if repeat < 0 else c.steps
    line = (f"  {phase} step {i + 1}/{total}  loss {loss:.4f}  {seconds * 1e3:.1f} ms")
    print(("\r" + line + "\033[K") if self.tty else line, end="" if self.tty else "\n",
          flush=True)
    if self.writer:
      group = "warmup" if repeat is not None and repeat < 0 else "train"
      self.writer.scalar(f"{group}/loss", loss, self.global_step)
      self.writer.scalar(f"{group}/step_time_ms", seconds * 1e3, self.global_step)
      if repeat is not None and repeat >= 0:
        self._repeat_ms.append(seconds * 1e3)
        if i + 1 == c.steps:  # a repeat's end: its median marks it on the step axis
          ms = sorted(self._repeat_ms)
          self.writer.scalar("train/repeat_median_step_time_ms",
                             (ms[(len(ms) - 1) // 2] + ms[len(ms) // 2]) / 2, self.global_step)
          self._repeat_ms = []

  def done(self) -> None:
    if self.tty:
      print()


def init_distributed() -> None:
  """Joins a multi-process run when one is asked for (flags) or launched by SLURM."""
  for flag in (_INIT_TIMEOUT, _HEARTBEAT_TIMEOUT):
    if flag.value < 1:
      raise UserError(f"--{flag.name}={flag.value}: give a number of seconds >= 1")
  timeouts = dict(initialization_timeout=_INIT_TIMEOUT.value + 30,  # ours ends it first
                  heartbeat_timeout_seconds=_HEARTBEAT_TIMEOUT.value)
  if _COORDINATOR.value:
    if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
      raise UserError("--coordinator_address needs --num_processes and --process_id")
    if not re.fullmatch(r"\[?[\w.:\-]+\]?:\d+", _COORDINATOR.value):
      raise UserError(f"--coordinator_address={_COORDINATOR.value!r}: give host:port of "
                      "process 0, e.g. node1:12345")
    if _NUM_PROCESSES.value < 1 or not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
      raise UserError(f"--process_id={_PROCESS_ID.value} --num_processes="
                      f"{_NUM_PROCESSES.value}: want num_processes >= 1 and process_id from 0 "
                      "to num_processes - 1")
    with _joining(f"process {_PROCESS_ID.value} of {_NUM_PROCESSES.value}",
                  f"at {_COORDINATOR.value}", "start all of them with the same "
                  "--coordinator_address and --num_processes, process 0 on that host, and check "
                  "that its port is reachable from here"):
      jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                 **timeouts)
  elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
    with _joining(f"SLURM task {os.environ.get('SLURM_PROCID', '?')} of "
                  f"{os.environ['SLURM_NTASKS']}", "of this job", "check that every task "
                  "started (sacct, their logs) and that the first node's port is reachable "
                  "from here"):
      jax.distributed.initialize(**timeouts)  # the coordinator and ranks from SLURM's variables


class _joining:
  """Bounds jax.distributed's start-up with messages of ours. Its own time-out aborts in C++
  with a stack trace that blames a task that died; until then a process whose peers never come
  says nothing, and Ctrl-C cannot stop it (Python runs signal handlers in the main thread, which
  waits inside JAX's C++). So a helper thread hears Ctrl-C meanwhile (Python's C handler writes
  it to the wake-up fd, from whatever thread received it), a line after 30 s says what the
  process waits for, and at --init_timeout_s one error line ends it (exit 1). SIGTERM keeps its
  default, ending the process: JAX's preemption service takes it over once joined, and a handler
  restored here would replace that one.
  """

  def __init__(self, subject: str, place: str, fix: str):
    limit = _INIT_TIMEOUT.value
    notice = (f"{subject}: waiting for the other processes {place} to join (up to {limit} s, "
              "--init_timeout_s)")
    failure = (f"error: {subject}: the other processes {place} did not all join within "
               f"{limit} s; {fix}")
    self.timers = [threading.Timer(limit, _say, (failure, 1))]
    if limit > 60:
      self.timers.append(threading.Timer(30, _say, (notice,)))
    for timer in self.timers:
      timer.daemon = True
    self.wake_read, self.wake_write = os.pipe()
    os.set_blocking(self.wake_write, False)  # set_wakeup_fd asks for it
    self.watcher = threading.Thread(target=self._hear_ctrl_c, daemon=True)

  def _hear_ctrl_c(self):  # ends with end-of-file when the join succeeds
    while got := os.read(self.wake_read, 1):  # any signal with a Python handler writes here
      if got[0] == signal.SIGINT:
        _say("\ninterrupted while joining the other processes: nothing was recorded", 130)

  def __enter__(self):
    self.handler = signal.getsignal(signal.SIGINT)
    if self.handler is not signal.SIG_IGN:  # a background job's Ctrl-C stays ignored
      signal.signal(signal.SIGINT, lambda *_: None)
    self.wakeup = signal.set_wakeup_fd(self.wake_write)
    for thread in (self.watcher, *self.timers):
      thread.start()

  def __exit__(self, *exc):
    for timer in self.timers:
      timer.cancel()
    signal.set_wakeup_fd(self.wakeup)
    signal.signal(signal.SIGINT, self.handler)
    os.close(self.wake_write)
    self.watcher.join()
    os.close(self.wake_read)


def _say(message: str, exit_code: int | None = None) -> None:
  """Prints `message` to stderr; with an exit code, ends the process at once (from a helper
  thread: the main thread is inside JAX's C++ start-up, where no exception reaches it)."""
  print(message, file=sys.stderr, flush=True)
  if exit_code is not None:
    sys.stdout.flush()
    os._exit(exit_code)


def tensorboard_dir(c, workdir: Path, tag: str | None, run_id: str,
                    num_devices: int | None = None) -> tuple[Path, str]:
  """(the run's TensorBoard folder, its readable name): tensorboard/<name>/<run_id>."""
  n = num_devices or (1 if c.strategy == "single" else (c.num_devices or len(jax.devices())))
  name = tb.run_name(c, tag, config_lib.model_name(c), n)
  return workdir / "tensorboard" / name / run_id, name


def error_log(workdir: Path, name: str) -> Path | None:
  """The current traceback in <workdir>/errors/<name>.txt, or None where it cannot be written
  (then the message alone says what failed)."""
  log = workdir / "errors" / f"{name}.txt"
  try:
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(traceback.format_exc())
  except OSError:
    return None
  return log


def execute(c, workdir: Path, dry_run: bool) -> tuple[dict | None, int]:
  """Runs `c` and writes its record (process 0 only); returns (record, exit code), or
  (None, 0) when a training run has nothing left to do (NothingToDo, printed here)."""
  config_lib.validate(c)
  config_lib.apply_nccl_options(c)
  writes = jax.process_index() == 0
  writer = None
  progress = Progress(c, None)
  status, message, measured, code = "ok", "", {}, 0
  run_id = None
  try:
    run_id = results.new_run_id()
    if c.tensorboard and not dry_run and writes:
      logdir, tb_name = tensorboard_dir(c, workdir, _TAG.value, run_id)
      writer = Writer(logdir)
      progress = Progress(c, writer)
    if c.mode == "train" and not dry_run:
      from slm_jax import trainer  # orbax, tokenizers and datasets load for training alone
      trainer.run(c, workdir=workdir, on_step=progress, writer=writer, out=measured)
    else:
      train.run(c, dry_run=dry_run, on_step=progress, out=measured,
                profile_dir=workdir / "profile" / run_id)
    progress.done()
    status = "dry_run" if dry_run else "ok"
  except WorkdirInUse:  # nothing was run; main prints the one line
    progress.done()
    raise
  except NothingToDo as e:  # no record: a second one would count the run twice
    progress.done()
    if writes:
      print(e)
    return None, 0
  except NonFinite as e:
    progress.done()
    status, message, code = "nan", str(e), 1
  except Preempted as e:  # SIGTERM: exit 0, a requeued job resumes from the checkpoint;
    progress.done()       # Ctrl-C: 130, as an interrupted command exits, so scripts stop
    status, message = "preempted", str(e)
    code = 130 if e.signal_name == "SIGINT" else 0
  except train.OutOfMemory as e:
    progress.done()
    status, message = "oom", (f"does not fit: {str(e).splitlines()[0]}; try a smaller "
                              "--config.per_device_batch_size or another strategy")
  except UserError as e:
    progress.done()
    status, message, code = "error", str(e), 2
  except Exception as e:  # an internal failure: keep the record, point at the traceback
    progress.done()
    log = error_log(workdir, f"{run_id or 'run'}-{os.getpid()}")
    status, code = "error", 1
    message = (f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
               + (f" (traceback: {log})" if log else ""))
  record = results.make_record(c, status=status, message=message, measured=measured,
                               tag=_TAG.value, run_id=run_id)
  if writes:
    results.append(workdir / "results.jsonl", record)
  if writer:
    tb.write_record(writer, record, tb_name)
  return record, code


def _get_config_failure(text: str) -> str:
  """What a config file's get_config raised, from config_flags' message holding the traceback
  (its lines as newlines or as escaped ones): the last line, the exception."""
  last = [line for line in re.split(r"\\n|\n", text) if line.strip()][-1].strip()
  return f"get_config() failed: {last}"


def _config_file() -> str:
  return config_flags.get_config_filename(flags.FLAGS["config"])


def loaded_config(config_flag):
  """The parsed --config, or exit with one line if its file is missing or broken."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep start-up chatter off the summary
  try:
    c = config_flag.value
    getattr(c, "get", None)  # config_flags' stand-in for a file it could not load raises here
  except OSError as e:  # config_flags defers a missing or broken config file until here
    text = str(e)
    if "Traceback" in text:
      text = f"{_config_file()}: {_get_config_failure(text)}"
    print(f"error: --config: {' '.join(text.split())}", file=sys.stderr)
    sys.exit(2)
  if not isinstance(c, ml_collections.ConfigDict):
    print(f"error: --config: {_config_file()}: get_config() returned "
          f"{type(c).__name__}, not an ml_collections.ConfigDict", file=sys.stderr)
    sys.exit(2)
  return c


def print_outcome(record: dict, workdir: Path, first_process: bool) -> None:
  """The summary (or the error) and where the record went, on the first process only."""
  if record["status"] in ("error", "nan"):
    print(f"error: {record['message']}", file=sys.stderr)
  elif first_process:
    print(results.summary(record))
  if first_process:
    print(f"  record appended to {workdir / 'results.jsonl'}")


def set_campaign() -> None:
  """--campaign for this process and every process it starts (they read the environment)."""
  if _CAMPAIGN.value:
    os.environ[results.CAMPAIGN_ENV] = _CAMPAIGN.value


def check_outputs(c, workdir: Path) -> None:
  """The files a run writes into `workdir` at its end, checked before it runs: a measurement
  must not be lost to a results.jsonl that is a folder or cannot be appended to."""
  path = workdir / "results.jsonl"
  if path.is_dir():
    raise UserError(f"{path} is a folder; results are appended to a file there, so move it")
  if path.exists():
    try:
      with open(path, "a"):
        pass
    except OSError as e:
      raise UserError(f"cannot append to {path} ({e.strerror or e}); give another --workdir "
                      "or make it writable") from None
  events = workdir / "tensorboard"
  if c.tensorboard and events.exists():
    try:
      with tempfile.TemporaryFile(dir=events, prefix=".slm_jax-write-check-"):
        pass
    except OSError as e:
      raise UserError(f"cannot write TensorBoard events in {events} ({e.strerror or e}); give "
                      "another --workdir, make it writable, or set --config.tensorboard=false"
                      ) from None


def stop_at_once(message: str, code: int) -> None:
  """Ends the process on a signal outside the training loop (which checkpoints on its own):
  nothing measured is kept, so say so and skip the interpreter's teardown, which with XLA's
  compiler threads still running can crash (a segmentation fault after Ctrl-C mid-compile)."""
  print(f"\n{message}: nothing was recorded", file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(code)


def main(argv):
  errors.reject_positional(argv)
  set_campaign()
  c = loaded_config(_CONFIG)
  # SIGTERM before or after the training loop: a training job exits 0 as a preempted one does
  # (requeued, it starts again), a benchmark as a terminated command does. Over several
  # processes SIGTERM belongs to JAX's preemption service, which a handler here would replace.
  if not jax.distributed.is_initialized():
    signal.signal(signal.SIGTERM, lambda *_: stop_at_once(
        "terminated (SIGTERM)", 0 if c.get("mode") == "train" else 128 + signal.SIGTERM))
  workdir = Path(_WORKDIR.value)
  try:
    if not _WORKDIR.value.strip():  # Path("") is the current folder
      raise UserError("--workdir is empty; give a folder (default: runs/default)")
    workdir_lib.prepare(workdir)
    check_outputs(c, workdir)
    record, code = execute(c, workdir, _DRY_RUN.value)
  except UserError as e:  # the config itself is wrong: nothing was run or written
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:  # Ctrl-C outside the training loop
    stop_at_once("interrupted", 130)
  if record is not None:
    print_outcome(record, workdir, jax.process_index() == 0)
  sys.exit(code)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # config_flags raises plain AttributeError/KeyError/ValueError
    _flag_error(e)


if __name__ == "__main__":
  flags.FLAGS(sys.argv, known_only=True)  # the process flags, before JAX sees any device
  try:
    init_distributed()
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  _define_config_flag()
  app.run(main, flags_parser=_parse_flags)
