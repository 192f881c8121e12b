import importlib.util
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gpu_queue", ROOT / "launch" / "gpu_queue.py")
gpu_queue = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_queue)


def test_jobs_get_their_own_gpus_in_order(tmp_path):
  jobs = gpu_queue.parse_jobs(f"""
# comment
echo $CUDA_VISIBLE_DEVICES > {tmp_path}/a; sleep 1
echo $CUDA_VISIBLE_DEVICES > {tmp_path}/b; sleep 1
@2 echo $CUDA_VISIBLE_DEVICES > {tmp_path}/c
""")
  assert [n for n, _ in jobs] == [1, 1, 2]
  assert gpu_queue.run(jobs, gpus=2, logdir=tmp_path / "logs", deadline_s=60) == 0
  first = {(tmp_path / "a").read_text().strip(), (tmp_path / "b").read_text().strip()}
  assert first == {"0", "1"}  # side by side, one GPU each
  assert (tmp_path / "c").read_text().strip() == "0,1"  # waited for both
  assert len(list((tmp_path / "logs").glob("job-*.log"))) == 3


def test_deadline_stops_running_jobs_and_names_the_rest(tmp_path, capsys):
  jobs = gpu_queue.parse_jobs("sleep 30\n@2 echo never\n")
  assert gpu_queue.run(jobs, gpus=2, logdir=tmp_path, deadline_s=2) == 1
  out = capsys.readouterr().out
  assert "stopping job 00" in out and "not started job 01" in out


def test_an_all_job_takes_every_gpu_of_the_queue(tmp_path):
  jobs = gpu_queue.parse_jobs(f"@all echo $CUDA_VISIBLE_DEVICES > {tmp_path}/all\n")
  assert gpu_queue.run(jobs, gpus=3, logdir=tmp_path / "logs", deadline_s=60) == 0
  assert (tmp_path / "all").read_text().strip() == "0,1,2"


def test_a_job_larger_than_the_host_is_refused(tmp_path, capsys):
  assert gpu_queue.run(gpu_queue.parse_jobs("@4 true\n"), gpus=2, logdir=tmp_path,
                       deadline_s=10) == 2
  assert "more than the 2 GPUs" in capsys.readouterr().err


def test_a_jobs_log_opens_with_a_line_that_reruns_it_on_its_gpus(tmp_path):
  # A job that sets a variable first: a "VAR=value" prefix would bind only to that assignment.
  cmd = f"D={tmp_path}; sh -c 'echo $CUDA_VISIBLE_DEVICES' > $D/out"
  jobs = gpu_queue.parse_jobs(f"@all {cmd}\n")
  assert gpu_queue.run(jobs, gpus=2, logdir=tmp_path / "logs", deadline_s=60) == 0
  assert (tmp_path / "out").read_text().strip() == "0,1"
  first = (tmp_path / "logs" / "job-00.log").read_text().splitlines()[0]
  assert first.startswith("$ ")
  (tmp_path / "out").unlink()
  subprocess.run(first[2:], shell=True, check=True, env={"PATH": os.environ["PATH"]})
  assert (tmp_path / "out").read_text().strip() == "0,1"


def test_gpu_sampler_falls_back_to_the_old_limit_reasons_name_and_stops_with_the_queue(
    tmp_path, monkeypatch):
  # A driver that knows only clocks_throttle_reasons refuses the newer name and exits.
  fake = tmp_path / "bin" / "nvidia-smi"
  fake.parent.mkdir()
  fake.write_text("#!/bin/sh\ncase \"$1\" in *clocks_event_reasons*) exit 2;; esac\n"
                  "echo \"$1\"; exec sleep 60\n")
  fake.chmod(0o755)
  monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
  assert gpu_queue.run(gpu_queue.parse_jobs("true\n"), gpus=1, logdir=tmp_path / "logs",
                       deadline_s=60, sample_gpus_ms=100) == 0
  sampled = (tmp_path / "logs" / "gpus.csv").read_text()
  assert "clocks.sm" in sampled and "clocks_throttle_reasons.active" in sampled
  assert "clocks_event_reasons" not in sampled
  out = subprocess.run(["pgrep", "-f", str(fake)], capture_output=True, text=True).stdout
  assert not out.strip()  # the sampler ended with the queue


def test_without_nvidia_smi_the_queue_runs_and_says_so(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi; the job names its shell's path
  assert gpu_queue.run(gpu_queue.parse_jobs("/bin/true\n"), gpus=1, logdir=tmp_path / "logs",
                       deadline_s=60, sample_gpus_ms=100) == 0
  assert "no gpus.csv" in capsys.readouterr().out
