"""launch/local.py's own checks and exit codes, with stand-in children (no JAX): the children it
starts are `python -m slm_jax.main`, which a package in the working directory shadows."""

import subprocess
import sys
from pathlib import Path

import pytest

LAUNCHER = Path(__file__).resolve().parent.parent / "launch" / "local.py"


def launch(cwd, *args):
  return subprocess.run([sys.executable, str(LAUNCHER), *args], cwd=cwd, capture_output=True,
                        text=True, timeout=60)


def stand_in_main(tmp_path, body: str) -> None:
  (tmp_path / "slm_jax").mkdir()
  (tmp_path / "slm_jax" / "__init__.py").write_text("")
  (tmp_path / "slm_jax" / "main.py").write_text(body)


@pytest.mark.parametrize("flag", ["--num_processes=0", "--num_processes=-1",
                                  "--devices_per_process=0"])
def test_a_count_below_one_is_one_error_line(tmp_path, flag):
  stand_in_main(tmp_path, f"open({str(tmp_path / 'ran')!r}, 'w')\n")
  run = launch(tmp_path, flag, "--cpu")
  assert run.returncode == 2
  assert run.stderr.startswith("error: ") and len(run.stderr.splitlines()) == 1, run.stderr
  assert flag in run.stderr
  assert not (tmp_path / "ran").exists()


def test_a_child_killed_by_a_signal_exits_as_a_shell_reports_it(tmp_path):
  stand_in_main(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
  run = launch(tmp_path, "--num_processes=1", "--cpu")
  assert run.returncode == 128 + 9, run.stderr
  assert "killed by SIGKILL" in run.stderr


def test_a_childs_exit_code_is_the_launchers(tmp_path):
  stand_in_main(tmp_path, "import sys\nsys.exit(3)\n")
  assert launch(tmp_path, "--num_processes=2", "--cpu").returncode == 3
