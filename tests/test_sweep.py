import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slm_jax import results, sweep
from slm_jax.errors import UserError

ROOT = Path(__file__).resolve().parent.parent

# A base config that misbehaves only inside a point's own process (argv[0] is slm_jax/main.py
# there), so the sweep process, which also reads base configs, stays unharmed.
BASE = '''
import os, signal, sys, time
from slm_jax.config import tiny_config

def get_config():
  c = tiny_config()
  c.model = "tiny"
  if sys.argv[0].endswith("main.py"):
    if "{behaviour}" == "crash":
      os.kill(os.getpid(), signal.SIGSEGV)
    if "{behaviour}" == "hang":
      time.sleep(600)
  return c
'''

SWEEP = '''
import ml_collections

def get_config():
  c = ml_collections.ConfigDict()
  c.base_config = "{base}/{{behaviour}}.py"
  c.gpu = "cpu"
  c.grid = ml_collections.ConfigDict({{
      "behaviour": {behaviours},
      "per_device_batch_size": [2, 64],
      "strategy": ["single"],
  }})
  c.overrides = ml_collections.ConfigDict({{"steps": 2, "repeats": 1, "warmup_steps": 0,
                                            "device_memory_gb": 0.1, "tensorboard": False}})
  c.point_timeout_s = {timeout}
  return c
'''


def write_sweep(tmp_path, behaviours, timeout=120):
  base = tmp_path / "bases"
  base.mkdir(exist_ok=True)
  for b in ("fine", "crash", "hang"):
    (base / f"{b}.py").write_text(BASE.format(behaviour=b))
  path = tmp_path / "sweep.py"
  path.write_text(SWEEP.format(base=base, behaviours=behaviours, timeout=timeout))
  return path


def run_sweep(config, workdir, **kw):
  # `behaviour` is not a config field, so the points pass it only to the base file name.
  return subprocess.Popen([sys.executable, "-m", "slm_jax.sweep", f"--config={config}",
                           f"--workdir={workdir}"], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kw)


def test_oom_crash_and_hang_are_recorded_and_the_sweep_goes_on(tmp_path):
  config = write_sweep(tmp_path, ["fine", "crash", "hang"], timeout=25)
  proc = run_sweep(config, tmp_path / "w")
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out
  records = {r["tag"]: r for r in results.read(tmp_path / "w" / "results.jsonl")}
  assert len(records) == 6
  status = {k: (r["status"], r["message"]) for k, r in records.items()}
  fine = {k: v for k, v in status.items() if "behaviour=fine" in k}
  assert [v[0] for k, v in sorted(fine.items())] == ["ok", "oom"]  # batch 2 fits, 64 not
  for k, (s, message) in status.items():
    if "behaviour=crash" in k:
      assert s == "error" and "exited with code" in message
    if "behaviour=hang" in k:
      assert s == "error" and "timed out after" in message
  assert all(r["model"] == "tiny" and r["params"] == 164_672 for r in records.values())


def test_a_killed_sweep_resumes_with_only_the_missing_points(tmp_path):
  config = write_sweep(tmp_path, ["fine"])
  workdir = tmp_path / "w"
  proc = run_sweep(config, workdir, start_new_session=True)
  deadline = time.time() + 300
  while time.time() < deadline:  # kill it once the first point is recorded
    path = workdir / "results.jsonl"
    if path.exists() and path.read_text().strip():
      break
    time.sleep(0.5)
  os.killpg(proc.pid, 9)
  proc.wait()
  first = results.read(workdir / "results.jsonl")
  assert len(first) == 1
  proc = run_sweep(config, workdir)
  out, _ = proc.communicate(timeout=600)
  assert "1 done before, 1 to run" in out
  records = results.read(workdir / "results.jsonl")
  assert sorted(r["tag"] for r in records) == sorted(
      ["behaviour=fine,num_devices=1,per_device_batch_size=2,strategy=single",
       "behaviour=fine,num_devices=1,per_device_batch_size=64,strategy=single"])
  assert records[0]["run_id"] == first[0]["run_id"]
  proc = run_sweep(config, workdir)
  out, _ = proc.communicate(timeout=300)
  assert "2 done before, 0 to run" in out
  assert any((workdir / "compile_cache").iterdir())  # shared persistent compilation cache


def test_grid_expansion_dedupes_single_and_caps_device_counts():
  import ml_collections
  c = ml_collections.ConfigDict({"grid": {"strategy": ["single", "ddp"],
                                          "per_device_batch_size": [4, 8],
                                          "num_devices": "present"}})
  pts = sweep.points(c, present=6)
  assert {sweep.point_key(p) for p in pts if p["strategy"] == "single"} == {
      "num_devices=1,per_device_batch_size=4,strategy=single",
      "num_devices=1,per_device_batch_size=8,strategy=single"}
  assert sorted({p["num_devices"] for p in pts if p["strategy"] == "ddp"}) == [1, 2, 4]
  assert len(pts) == 2 + 2 * 3


def test_device_counts_from_the_command_line():
  assert sweep.device_counts("(1, 2, 8)", present=4) == [1, 2]
  assert sweep.device_counts("1,4", present=4) == [1, 4]
  assert sweep.device_counts((1,), present=1) == [1]
  with pytest.raises(UserError, match="num_devices"):
    sweep.device_counts("two", present=4)


def test_a_results_line_cut_short_does_not_stop_the_sweep_resuming(tmp_path, capsys):
  path = tmp_path / "results.jsonl"
  results.append_line(path, {"tag": "a=1", "status": "ok"})
  results.append_line(path, {"tag": "a=2", "status": "error"})
  path.write_bytes(path.read_bytes()[:-5])
  assert sweep.done_keys(path, retry_failed=False) == {"a=1"}
  assert f"{path}: skipped unreadable line 2" in capsys.readouterr().err


def test_device_counts_the_machine_lacks_are_named():
  assert sweep.dropped_counts((1, 2), present=1) == [2]
  assert sweep.dropped_counts("1,2,8", present=4) == [8]
  assert sweep.dropped_counts("present", present=1) == []


def test_the_tiny_sweep_on_one_cpu_gives_a_report_with_points_and_answers(tmp_path):
  # As on a fresh clone's CPU: one device (no fake ones), the sweep config as shipped, but
  # only DDP, which the grid runs on 1 and 2 devices.
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  work = tmp_path / "tiny_grid"
  proc = subprocess.run([sys.executable, "-m", "slm_jax.sweep", "--config=configs/sweeps/tiny.py",
                         "--config.grid.strategy=('ddp',)", f"--workdir={work}"], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "note: grid.num_devices 2 left out: this machine has 1 cpu device" in proc.stdout
  records = results.read(work / "results.jsonl")
  assert [r["status"] for r in records] == ["ok", "ok"]
  assert all(len(r["step_times_s"]) >= 10 for r in records)  # the report's minimum
  # Each point is a TensorBoard run named by its grid point.
  names = sorted(p.parent.name for p in (work / "tensorboard").glob("*/*"))
  assert names == sorted(r["tag"] for r in records)
  out = tmp_path / "report"
  proc = subprocess.run([sys.executable, "-m", "slm_jax.report", str(work / "results.jsonl"),
                         f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  md = (out / "report.md").read_text()
  (tmp_path / "report.md").write_text(md)
  assert "tiny only vanilla attention measured" in md  # Q1
  assert "Batch size on one GPU (cpu, " in md and "tiny best at batch" in md  # Q4


def test_auto_presets_on_a_device_without_its_own_say_which_run():
  assert sweep.fallback_note("auto", "NVIDIA H200") is None
  assert sweep.fallback_note("h100", "cpu") is None  # asked for by name
  assert sweep.fallback_note("auto", "cpu") == (
      "note: no presets for 'cpu'; running the h100 presets (configs/*_h100.py): set "
      "--config.gpu to choose")
