import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

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
                  f"echo $$ > {tmp_path}/pid; echo \"$1\"; exec sleep 60\n")
  fake.chmod(0o755)
  monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
  assert gpu_queue.run(gpu_queue.parse_jobs("true\n"), gpus=1, logdir=tmp_path / "logs",
                       deadline_s=60, sample_gpus_ms=100) == 0
  sampled = (tmp_path / "logs" / "gpus.csv").read_text()
  assert "clocks.sm" in sampled and "clocks_throttle_reasons.active" in sampled
  assert "clocks_event_reasons" not in sampled
  with pytest.raises(ProcessLookupError):  # the sampler ended with the queue
    os.kill(int((tmp_path / "pid").read_text()), 0)


def test_without_nvidia_smi_the_queue_runs_and_says_so(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi; the job names its shell's path
  assert gpu_queue.run(gpu_queue.parse_jobs("/bin/true\n"), gpus=1, logdir=tmp_path / "logs",
                       deadline_s=60, sample_gpus_ms=100) == 0
  assert "no gpus.csv" in capsys.readouterr().out


def test_clock_report_reads_each_jobs_busy_samples_on_its_gpus(tmp_path):
  (tmp_path / "queue.log").write_text(
      "queue started 2026-11-30 06:47:59 UTC\n"
      "[     0s] job 00 on GPU [0]: a\n[     0s] job 01 on GPU [1]: b\n"
      "[     4s] job 00 exit 0 after 4s\n[     4s] job 01 exit 0 after 4s\n"
      "[     4s] job 02 on GPU [0, 1]: c\n[     8s] job 02 exit 0 after 4s\n")
  header = ("timestamp, index, clocks.current.sm [MHz], clocks.current.memory [MHz], "
            "power.draw [W], temperature.gpu, clocks_event_reasons.active\n")
  rows = []
  for s, gpu, sm, watts, temp in [(1, 0, 1500, 690, 50), (2, 0, 1480, 695, 52),
                                  (1, 1, 1440, 692, 60), (2, 1, 300, 80, 40),  # idle: left out
                                  (5, 0, 1510, 690, 55), (5, 1, 1450, 691, 66)]:
    rows.append(f"2026/11/30 06:48:0{s}.100, {gpu}, {sm} MHz, 3201 MHz, {watts} W, {temp}, "
                "0x0000000000000004\n")
  (tmp_path / "gpus.csv").write_text(header + "".join(rows) + "2026/11/30 06:48:0")  # cut off
  report = gpu_queue.clock_report(tmp_path).splitlines()
  assert "job 00 GPU 0: 2 samples, SM clock median 1490 MHz" in report[1]
  assert "job 01 GPU 1: 1 samples, SM clock median 1440 MHz" in report[2]
  assert "60-60 C" in report[2] and report[2].endswith("limited by: SW power cap")
  assert "job 02 GPU 0: 1 samples, SM clock median 1510" in report[3]
  assert "job 02 GPU 1: 1 samples, SM clock median 1450" in report[4]


def test_the_queue_keeps_its_own_lines_for_the_clock_report(tmp_path):
  assert gpu_queue.run(gpu_queue.parse_jobs("true\n"), gpus=1, logdir=tmp_path,
                       deadline_s=60) == 0
  lines = (tmp_path / "queue.log").read_text().splitlines()
  assert lines[0].startswith("queue started ") and "job 00 exit 0" in lines[-1]


def queue_main(monkeypatch, *args) -> int:
  monkeypatch.setattr("sys.argv", ["gpu_queue.py", *map(str, args)])
  return gpu_queue.main()


def one_error_line(capsys) -> str:
  err = capsys.readouterr().err
  assert err.startswith("error: ") and len(err.splitlines()) == 1, err
  return err


def test_a_missing_jobs_file_is_one_error_line(tmp_path, monkeypatch, capsys):
  assert queue_main(monkeypatch, tmp_path / "none.jobs", "--logdir", tmp_path / "l") == 2
  assert "none.jobs" in one_error_line(capsys)


@pytest.mark.parametrize("line", ["@x true", "@2", "@0 true", "@-1 true"])
def test_a_bad_gpu_count_is_one_error_line_naming_the_line(tmp_path, monkeypatch, capsys, line):
  (tmp_path / "q.jobs").write_text(f"true\n{line}\n")
  assert queue_main(monkeypatch, tmp_path / "q.jobs", "--logdir", tmp_path / "l") == 2
  assert "line 2" in one_error_line(capsys)
  assert not (tmp_path / "l").exists()  # nothing ran


def test_a_logdir_that_is_a_file_is_one_error_line_and_the_file_is_kept(
    tmp_path, monkeypatch, capsys):
  (tmp_path / "q.jobs").write_text("true\n")
  (tmp_path / "taken").write_text("kept")
  assert queue_main(monkeypatch, tmp_path / "q.jobs", "--logdir", tmp_path / "taken") == 2
  assert "--logdir" in one_error_line(capsys)
  assert (tmp_path / "taken").read_text() == "kept"


def test_clocks_of_a_queue_without_samples_says_why(tmp_path, monkeypatch, capsys):
  assert gpu_queue.run(gpu_queue.parse_jobs("true\n"), gpus=1, logdir=tmp_path,
                       deadline_s=60) == 0
  capsys.readouterr()
  assert queue_main(monkeypatch, "--clocks", tmp_path) == 2
  err = one_error_line(capsys)
  assert "gpus.csv" in err and "--sample_gpus_ms" in err and "Errno" not in err


def test_without_a_gpu_the_queue_runs_one_job_at_a_time_and_says_so(
    tmp_path, monkeypatch, capsys):
  monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
  monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
  assert gpu_queue.gpu_count() == 1
  [note] = capsys.readouterr().out.splitlines()
  assert note.startswith("note: no GPU found") and "CUDA_VISIBLE_DEVICES=0" in note
