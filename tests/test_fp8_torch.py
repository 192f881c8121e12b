"""The PyTorch stack's FP8 peer (--torch_fp8): torchao's float8 training on the decoder's
projections. Needs the torch extra; the torchao tests skip where it cannot be imported."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='the torch extra is not installed: '
                            'pip install -e ".[torch]"')
pytest.importorskip("transformers", reason='the torch extra is not installed: '
                    'pip install -e ".[torch]"')

from slm_jax import config as config_lib  # noqa: E402
from slm_jax import model, results  # noqa: E402
from slm_jax.errors import UserError  # noqa: E402
from slm_jax.torch_ref import model as torch_model  # noqa: E402
from slm_jax.torch_ref import train as torch_train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ALIGNED = model.ModelConfig(num_layers=2, num_heads=4, head_dim=16, ffn_dim=192, vocab_size=512)


def torchao():
  return pytest.importorskip("torchao.float8", reason="torchao is not installed: "
                             "pip install torchao")


def kinds(m):
  return {name: type(module).__name__ for name, module in m.named_modules()
          if isinstance(module, torch.nn.Linear)}


def test_the_projections_and_only_they_become_float8_linears():
  torchao()
  m = torch_model.build(ALIGNED, "eager", 128)
  assert torch_train.convert_to_fp8(m, torch.device("cpu")) == 7 * 2
  converted = kinds(m)
  assert converted.pop("lm_head") == "Linear"
  assert set(converted.values()) == {"Float8Linear"} and len(converted) == 14


def test_projections_torch_cannot_run_in_fp8_stay_as_they_are():
  torchao()
  # tiny's FFN width, 172, is not a multiple of 16 (nor are the paper's 2332, 4147, 6739).
  m = torch_model.build(model.PRESETS["tiny"], "eager", 128)
  assert torch_train.convert_to_fp8(m, torch.device("cpu")) == 4 * 2
  assert {k for k, v in kinds(m).items() if v == "Float8Linear"} == {
      f"model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qkvo"}


def test_without_torchao_fp8_is_one_user_error(monkeypatch):
  monkeypatch.setitem(sys.modules, "torchao.float8", None)  # import fails
  m = torch_model.build(ALIGNED, "eager", 128)
  with pytest.raises(UserError, match="pip install torchao"):
    torch_train.convert_to_fp8(m, torch.device("cpu"))


def test_a_torch_fp8_run_trains_and_says_so():
  torchao()
  c = config_lib.tiny_config()
  c.update(steps=3, repeats=1, warmup_steps=1, learning_rate=3e-3, lr_warmup_steps=1)
  tc = torch_train.torch_config(c, "eager", True)
  assert tc.fp8 is True and tc.fp8_scaling == "current" and c.fp8 is False
  out = torch_train.run(tc, setup=torch_train.TorchSetup(attention="eager"))
  assert out["torch_fp8"] is True and out["torch_fp8_linears"] == 8
  assert np.isfinite(out["losses"]).all()
  record = results.make_record(tc, status="ok", measured=out, stack="torch",
                               devices=[results.DeviceInfo("cpu", "cpu")])
  assert record["torch_fp8"] is True and record["config"]["fp8"] is True


def test_the_torch_stack_runs_fp8_when_the_config_asks_for_it(tmp_path):
  torchao()
  proc = subprocess.run(
      [sys.executable, "-m", "slm_jax.torch_ref.main", "--config=configs/tiny.py",
       f"--workdir={tmp_path}", "--config.fp8=true", "--config.steps=1", "--config.repeats=1",
       "--config.warmup_steps=0", "--config.tensorboard=false"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  [record] = results.read(tmp_path / "results.jsonl")
  assert record["torch_fp8"] is True and record["torch_fp8_linears"] == 8
  assert record["config"]["fp8"] is True
