"""What a record says of the GPUs it ran on (slm_jax.results.gpu_identity)."""

import os

import pytest

from slm_jax import config as config_lib
from slm_jax import results


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
  """An nvidia-smi on PATH that prints two GPUs, or the one `-i` names."""
  smi = tmp_path / "nvidia-smi"
  smi.write_text("#!/bin/sh\n"
                 f"echo \"$@\" > {tmp_path}/args\n"
                 "case \"$*\" in *'-i 1'*) echo '1, GPU-bbb, 00000000:2A:00.0'; exit 0;; esac\n"
                 "echo '0, GPU-aaa, 00000000:19:00.0'\necho '1, GPU-bbb, 00000000:2A:00.0'\n")
  smi.chmod(0o755)
  monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
  results.gpu_identity.cache_clear()
  yield tmp_path
  results.gpu_identity.cache_clear()


def test_the_gpus_this_process_may_use_by_uuid(fake_smi, monkeypatch):
  monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
  assert [g["uuid"] for g in results.gpu_identity()] == ["GPU-aaa", "GPU-bbb"]
  results.gpu_identity.cache_clear()
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
  assert results.gpu_identity() == [{"index": "1", "uuid": "GPU-bbb",
                                     "pci_bus_id": "00000000:2A:00.0"}]
  assert "-i 1" in (fake_smi / "args").read_text()


def test_a_record_names_its_gpus_only_on_gpus(fake_smi, monkeypatch):
  monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
  c = config_lib.tiny_config()
  gpu = results.make_record(c, status="dry_run", devices=[results.DeviceInfo("NVIDIA H200", "gpu")])
  assert [g["uuid"] for g in gpu["gpus"]] == ["GPU-aaa", "GPU-bbb"]
  cpu = results.make_record(c, status="dry_run", devices=[results.DeviceInfo("cpu", "cpu")])
  assert cpu["gpus"] is None


def test_without_nvidia_smi_there_is_no_gpu_list(tmp_path, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path))
  results.gpu_identity.cache_clear()
  try:
    assert results.gpu_identity() is None
  finally:
    results.gpu_identity.cache_clear()
