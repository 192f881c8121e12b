r"""Runs a grid of configurations, each point in its own process, into one results.jsonl.

  python -m slm_jax.sweep --config=configs/sweeps/paper_grid.py --workdir=runs/grid

A point that runs out of memory, crashes or hangs (past `point_timeout_s`) is recorded and the
sweep goes on. Points already in `<workdir>/results.jsonl` are skipped, so re-running the same
command finishes only what is missing. All points share JAX's persistent compilation cache
under `<workdir>/compile_cache`, so a re-run compiles nothing it compiled before.
"""

import os

# The sweep process itself must not take the GPU its points need: JAX here is for abstract
# work only (parameter counts for the records of points that died).
_CHILD_ENV = dict(os.environ)
os.environ["JAX_PLATFORMS"] = "cpu"

import ctypes
import importlib.util
import itertools
import json
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import ml_collections
import tqdm
from absl import app, flags
from ml_collections import config_flags

from slm_jax import errors, hardware, results
from slm_jax import workdir as workdir_lib
from slm_jax.default_config import preset_gpu
from slm_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sweep config (configs/sweeps/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results.jsonl, logs and the compilation "
                               "cache go.", required=True)
_CAMPAIGN = results.campaign_flag()
_RETRY_FAILED = flags.DEFINE_bool("retry_failed", False, "Run again the points recorded as "
                                  "'error' (crashes, time-outs); 'ok' and 'oom' points stay done.")


def probe_devices(env: dict) -> dict:
  """Device count and kind, asked of a short-lived child so this process never holds a GPU."""
  code = ("import jax, json; d = jax.devices(); "
          "print(json.dumps({'count': len(d), 'kind': d[0].device_kind, "
          "'platform': d[0].platform}))")
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        timeout=300)
  if proc.returncode:
    raise UserError(f"could not list the devices: {proc.stderr.strip().splitlines()[-1:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def device_counts(spec, present: int) -> list[int]:
  """`spec` is "present" (1, 2, 4, ... up to the devices present) or counts: a sequence, or a
  string such as "1,2" or "(1, 2)" as --config.grid.num_devices gives it."""
  if spec == "present":
    return [n for n in (2**i for i in range(12)) if n <= present]
  if isinstance(spec, str):
    try:
      spec = [int(n) for n in spec.strip("()[] ").split(",") if n.strip()]
    except ValueError:
      raise UserError(f"grid.num_devices={spec!r}: say 'present' or counts such as '1,2,4'")
  return [int(n) for n in spec if int(n) <= present]


def dropped_counts(spec, present: int) -> list[int]:
  """The device counts `spec` names that this machine cannot serve."""
  if spec == "present":
    return []
  wanted = device_counts(spec, present=1 << 30)
  return [n for n in wanted if n > present]


def points(sweep: ml_collections.ConfigDict, present: int) -> list[dict]:
  """Every point of the grid as {field: value}, in order; no duplicates."""
  grid = dict(sweep.grid)
  grid["num_devices"] = device_counts(grid.get("num_devices", "present"), present)
  keys = list(grid)
  out, seen = [], set()
  for values in itertools.product(*(grid[k] for k in keys)):
    point = dict(zip(keys, values))
    if point.get("strategy", "single") == "single":
      point["num_devices"] = 1  # one device whatever the count
    key = point_key(point)
    if key not in seen:
      seen.add(key)
      out.append(point)
  return out


def point_key(point: dict) -> str:
  return ",".join(f"{k}={point[k]}" for k in sorted(point))


def base_file(sweep: ml_collections.ConfigDict, point: dict, gpu: str) -> str:
  return sweep.base_config.format(gpu=gpu, **point)


def done_keys(path: Path, retry_failed: bool) -> set[str]:
  if not path.exists():
    return set()
  keep = ("ok", "oom") if retry_failed else results.STATUSES
  return {r["tag"] for r in results.read(path) if r.get("tag") and r.get("status") in keep}


def command(sweep, point: dict, gpu: str, workdir: Path) -> list[str]:
  args = [sys.executable, "-m", "slm_jax.main", f"--config={base_file(sweep, point, gpu)}",
          f"--workdir={workdir}", f"--tag={point_key(point)}"]
  args += [f"--config.{k}={v}" for k, v in sorted(dict(sweep.overrides).items())]
  # Grid fields named in the base-config template choose the file; the rest are overrides.
  in_template = {name for _, name, _, _ in string.Formatter().parse(sweep.base_config) if name}
  args += [f"--config.{k}={v}" for k, v in point.items() if k not in in_template]
  return args


def _die_with_parent() -> None:
  """In the point's process: be killed if the sweep dies (even by SIGKILL), so a killed sweep
  leaves no orphan point that writes its record behind the re-run's back (Linux only)."""
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def run_point(cmd: list[str], env: dict, timeout: float, log: Path) -> tuple[int | None, float]:
  """Runs one point in its own process group; (exit code or None on time-out, seconds)."""
  t0 = time.monotonic()
  with log.open("w") as f:
    proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_die_with_parent)
    try:
      return proc.wait(timeout=timeout), time.monotonic() - t0
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)  # the point's own children (compilers) too
      proc.wait()
      return None, time.monotonic() - t0
    except KeyboardInterrupt:  # Ctrl-C on the sweep: its point goes too, leaving no record
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
      raise


def failure_record(sweep, point: dict, gpu: str, devices: dict, message: str) -> dict:
  """The record of a point that died without writing one (crash, hang)."""
  spec = importlib.util.spec_from_file_location("point_config", base_file(sweep, point, gpu))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.update(dict(sweep.overrides))
  c.update(point)
  return results.make_record(c, status="error", message=message,
                             devices=[results.DeviceInfo(devices["kind"], devices["platform"])],
                             tag=point_key(point))


def fallback_note(sweep_gpu: str, device_kind: str) -> str | None:
  """What `gpu = "auto"` runs on a device whose type has no presets (a CPU, say): another
  type's presets, which it says before hours of points."""
  if sweep_gpu != "auto" or hardware.from_device_kind(device_kind) is not None:
    return None
  gpu = preset_gpu(device_kind)
  return (f"note: no presets for {device_kind!r}; running the {gpu} presets "
          f"(configs/*_{gpu}.py): set --config.gpu to choose")


def run_sweep(sweep: ml_collections.ConfigDict, workdir: Path, retry_failed: bool = False):
  workdir_lib.prepare(workdir)
  env = dict(_CHILD_ENV)
  env.setdefault("JAX_COMPILATION_CACHE_DIR", str(workdir / "compile_cache"))
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
  devices = probe_devices(env)
  gpu = sweep.gpu if sweep.gpu != "auto" else preset_gpu(devices["kind"])
  if note := fallback_note(sweep.gpu, devices["kind"]):
    print(note, flush=True)
  grid = points(sweep, devices["count"])
  dropped = dropped_counts(sweep.grid.get("num_devices", "present"), devices["count"])
  if dropped and set(sweep.grid.get("strategy", ("single",))) - {"single"}:
    print(f"note: grid.num_devices {', '.join(map(str, dropped))} left out: this machine has "
          f"{devices['count']} {devices['platform']} device{'s' * (devices['count'] > 1)}",
          flush=True)
  results_path = workdir / "results.jsonl"
  done = done_keys(results_path, retry_failed)
  todo = [p for p in grid if point_key(p) not in done]
  print(f"{len(grid)} points on {devices['count']} x {devices['kind']}: {len(grid) - len(todo)} "
        f"done before, {len(todo)} to run", flush=True)
  (workdir / "logs").mkdir(exist_ok=True)
  bar = tqdm.tqdm(todo, unit="point", dynamic_ncols=True, file=sys.stdout)
  for point in bar:
    key = point_key(point)
    bar.set_description(" ".join(str(v) for v in point.values()))
    log = workdir / "logs" / (key.replace(",", "_").replace("=", "-") + ".log")
    code, seconds = run_point(command(sweep, point, gpu, workdir), env, sweep.point_timeout_s,
                              log)
    if key in done_keys(results_path, retry_failed=False) - done:
      done.add(key)
      continue  # the point wrote its own record (ok, oom, or an error it understood)
    if code is None:
      message = f"timed out after {seconds:.0f} s (point_timeout_s); log: {log}"
    else:
      tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
      message = f"exited with code {code} and no record: {' '.join(tail)[:300]}; log: {log}"
    results.append(results_path, failure_record(sweep, point, gpu, devices, message))
    done.add(key)
  bar.close()
  return results.read(results_path)


def main(argv):
  errors.reject_positional(argv)
  if _CONFIG.value is None:
    raise app.UsageError("--config=configs/sweeps/FILE.py is required")
  if _CAMPAIGN.value:  # the points' processes read it from the environment they inherit
    os.environ[results.CAMPAIGN_ENV] = _CAMPAIGN.value
    _CHILD_ENV[results.CAMPAIGN_ENV] = _CAMPAIGN.value
  try:
    records = run_sweep(_CONFIG.value, Path(_WORKDIR.value), _RETRY_FAILED.value)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:  # the running point dies with the sweep (_die_with_parent)
    print(f"\ninterrupted: the points recorded so far are in {Path(_WORKDIR.value)}; run the "
          "same command to go on", file=sys.stderr)
    sys.exit(130)
  counts = {s: sum(r["status"] == s for r in records) for s in results.STATUSES}
  print(f"{len(records)} records in {Path(_WORKDIR.value) / 'results.jsonl'}: " +
        ", ".join(f"{n} {s}" for s, n in counts.items() if n))


if __name__ == "__main__":
  app.run(main)
