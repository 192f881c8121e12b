import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from slm_jax import results

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--config.steps=3", "--config.repeats=2", "--config.warmup_steps=1"]


def main(*args, cwd=ROOT, env=None):
  environ = {k: v for k, v in os.environ.items() if not k.startswith("NCCL_")}
  return subprocess.run([sys.executable, "-m", "slm_jax.main", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300,
                        env={**environ, **(env or {})})


def test_tiny_run_writes_a_valid_record_and_tensorboard_events(tmp_path):
  proc = main("--config=configs/tiny.py", f"--workdir={tmp_path}", *FAST)
  assert proc.returncode == 0, proc.stderr
  assert "tokens/s" in proc.stdout and "Traceback" not in proc.stderr
  [record] = results.read(tmp_path / "results.jsonl")
  assert set(results.REQUIRED) <= set(record)
  assert record["status"] == "ok" and record["stack"] == "jax" and record["model"] == "tiny"
  assert record["params"] == 164_672 and record["num_devices"] == 1
  assert record["global_batch"] == 8 and record["seq_len"] == 128
  st = record["step_time_s"]
  assert 0 < st["min"] <= st["median"] <= st["max"]
  assert len(record["step_times_s"]) == 6
  assert record["tokens_per_s"] == pytest.approx(8 * 128 / st["median"])
  assert record["compile_s"] > 0 and record["final_loss"] > 0
  assert record["versions"]["jax"] and record["config"]["steps"] == 3

  # TensorBoard: tensorboard/<readable name>/<run_id>, warm-up apart from the timed steps.
  [run_dir] = (tmp_path / "tensorboard").glob("*/*")
  assert run_dir.name == record["run_id"] and run_dir.parent.name == "tiny_xla_single_b8"
  acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "scalars": 0})
  acc.Reload()
  assert [e.step for e in acc.Scalars("warmup/step_time_ms")] == [1]
  losses = acc.Scalars("train/loss")
  assert [e.step for e in losses] == [2, 3, 4, 5, 6, 7]  # the timed steps alone
  assert [e.value for e in acc.Scalars("train/step_time_ms")] == pytest.approx(
      [t * 1e3 for t in record["step_times_s"]])
  assert [e.step for e in acc.Scalars("train/repeat_median_step_time_ms")] == [4, 7]
  assert losses[-1].value == pytest.approx(record["final_loss"], rel=1e-6)
  # The record's headline numbers, once each, at the run's last step.
  [median] = acc.Scalars("summary/step_time_ms_median")
  assert median.step == 7 and median.value == pytest.approx(st["median"] * 1e3)
  assert acc.Scalars("summary/tokens_per_s")[0].value == pytest.approx(record["tokens_per_s"])
  assert "summary/token_per_dollar" not in acc.Tags()["scalars"]  # a CPU has no price
  text = acc.Tensors("summary")[0].tensor_proto.string_val[0].decode()
  assert text.startswith("**tiny_xla_single_b8**") and record["run_id"] in text
  assert "| tokens/s | MFU % | tokens per USD | Token/Dollar (paper units) | median step ms" in text
  # HParams: typed, the grid's axes marked as differing (shown first), headline metrics first.
  from tensorboard.plugins.hparams import api_pb2, metadata
  experiment = metadata.parse_experiment_plugin_data(
      acc.SummaryMetadata(metadata.EXPERIMENT_TAG).plugin_data.content)
  types = {h.name: h.type for h in experiment.hparam_infos}
  assert types["per_device_batch_size"] == types["learning_rate"] == api_pb2.DATA_TYPE_FLOAT64
  assert types["attention"] == types["run_id"] == api_pb2.DATA_TYPE_STRING
  assert types["fuse_projections"] == api_pb2.DATA_TYPE_BOOL
  assert sorted(h.name for h in experiment.hparam_infos if h.differs) == [
      "attention", "model", "num_devices", "per_device_batch_size", "strategy"]
  assert [m.name.tag for m in experiment.metric_infos][:6] == [
      "summary/tokens_per_s", "summary/mfu_percent", "summary/token_per_dollar",
      "summary/token_per_dollar_paper", "summary/step_time_ms_median", "summary/peak_memory_gib"]
  start = metadata.parse_session_start_info_plugin_data(
      acc.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content)
  assert start.hparams["run_id"].string_value == record["run_id"]
  assert start.hparams["per_device_batch_size"].number_value == 8


def test_records_append_across_runs(tmp_path):
  for _ in range(2):
    assert main("--config=configs/tiny.py", f"--workdir={tmp_path}", "--dry_run").returncode == 0
  records = results.read(tmp_path / "results.jsonl")
  assert [r["status"] for r in records] == ["dry_run", "dry_run"]
  assert records[0]["expected_memory_bytes"] > 0 and records[0]["flops_per_token"] > 0


def test_misspelt_override_is_one_clear_error(tmp_path):
  proc = main("--config=configs/tiny.py", f"--workdir={tmp_path}", "--config.stepz=3")
  assert proc.returncode == 2
  assert 'Did you mean "steps"' in proc.stderr and "Traceback" not in proc.stderr
  assert not (tmp_path / "results.jsonl").exists()


def test_override_before_the_config_file_says_to_reorder(tmp_path):
  proc = main("--config.steps=3", "--config=configs/tiny.py", f"--workdir={tmp_path}")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "put --config=FILE before the --config.FIELD=VALUE overrides" in proc.stderr


def test_impossible_config_is_one_clear_error(tmp_path):
  proc = main("--config=configs/tiny.py", f"--workdir={tmp_path}", "--config.num_kv_heads=3")
  assert proc.returncode == 2
  assert "must be a multiple of --config.num_kv_heads" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_attention_the_device_cannot_serve_is_recorded_as_an_error(tmp_path):
  proc = main("--config=configs/tiny.py", f"--workdir={tmp_path}", "--config.attention=cudnn")
  assert proc.returncode == 2 and "needs an NVIDIA GPU" in proc.stderr
  assert "Traceback" not in proc.stderr
  [record] = results.read(tmp_path / "results.jsonl")
  assert record["status"] == "error" and "NVIDIA GPU" in record["message"]


def test_out_of_memory_is_a_result_with_exit_code_zero(tmp_path):
  proc = main("--config=configs/tiny.py", f"--workdir={tmp_path}", "--config.device_memory_gb=1e-4")
  assert proc.returncode == 0, proc.stderr
  assert "does not fit" in proc.stdout
  [record] = results.read(tmp_path / "results.jsonl")
  assert record["status"] == "oom" and "per_device_batch_size" in record["message"]
  assert record["expected_memory_bytes"] > record["memory_budget_bytes"]
  assert record["tokens_per_s"] is None


def test_no_flags_runs_the_embedded_default(tmp_path):
  proc = main("--config.steps=2", "--config.repeats=1", "--config.warmup_steps=0", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  [record] = results.read(tmp_path / "runs" / "default" / "results.jsonl")
  assert record["status"] == "ok" and record["model"] == "tiny"  # CPU: the tiny model


def test_every_paper_config_loads_and_names_its_preset():
  code = ("import importlib.util, json, sys\n"
          "out = {}\n"
          "for p in sorted(__import__('glob').glob('configs/*.py')):\n"
          "  spec = importlib.util.spec_from_file_location('c', p)\n"
          "  m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
          "  c = m.get_config(); out[p] = [c.model, c.gpu, c.seq_len, c.attention, c.mode, c.xla_options]\n"
          "print(json.dumps(out))")
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
  configs = json.loads(proc.stdout)
  assert len(configs) == 20
  for size in ("100m", "500m", "1b", "2b"):
    for gpu in ("a100_40g", "a100", "h100", "h200"):
      # Hopper presets hand XLA's Triton GEMMs to cuBLAS and let four collectives overlap
      # (measured on H200s).
      options = ("xla_gpu_enable_triton_gemm=false "
                 "xla_gpu_experimental_parallel_collective_overlap_limit=4"
                 if gpu in ("h100", "h200") else "")
      assert configs[f"configs/{size}_{gpu}.py"] == [size, gpu, 1024, "cudnn", "benchmark", options]
  for size in ("100m", "500m"):
    assert configs[f"configs/{size}_h200_train.py"][:5] == [size, "h200", 1024, "cudnn", "train"]
  assert configs["configs/tiny_train.py"][4] == "train"


def test_results_table_from_a_records_file(tmp_path):
  assert main("--config=configs/tiny.py", f"--workdir={tmp_path}", *FAST).returncode == 0
  proc = subprocess.run([sys.executable, "-m", "slm_jax.results", str(tmp_path / "results.jsonl")],
                        capture_output=True, text=True, cwd=ROOT)
  header, rule, row = proc.stdout.strip().splitlines()[-3:]
  assert header.startswith("| model | attention") and rule.startswith("|---|")
  record = results.read(tmp_path / "results.jsonl")[0]
  assert row.startswith("| tiny | xla | single | 8 | ok |")
  assert f"{record['tokens_per_s']:,.0f}" in row


def test_xla_options_compile_the_step_and_a_wrong_one_is_one_clear_error(tmp_path):
  ok = main("--config=configs/tiny.py", f"--workdir={tmp_path}", "--dry_run",
            "--config.xla_options=xla_gpu_enable_triton_gemm=false xla_gpu_autotune_level=0")
  assert ok.returncode == 0, ok.stderr
  [record] = results.read(tmp_path / "results.jsonl")
  assert record["config"]["xla_options"].startswith("xla_gpu_enable_triton_gemm=false")
  for wrong, says in (("triton_gemm=false", "is not NAME=VALUE"),
                      ("xla_no_such_option=1", "No such compile option"),
                      ("xla_gpu_enable_triton_gemm=perhaps", "not a valid bool")):
    proc = main("--config=configs/tiny.py", f"--workdir={tmp_path}", "--dry_run",
                f"--config.xla_options={wrong}")
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_nccl_options_reach_the_run_s_environment_and_record_and_a_wrong_one_is_one_error(
    tmp_path):
  ok = main("--config=configs/tiny.py", f"--workdir={tmp_path}", "--dry_run",
            "--config.nccl_options=NCCL_MAX_CTAS=4 NCCL_MIN_CTAS=2",
            env={"NCCL_MAX_CTAS": "16", "NCCL_DEBUG": "WARN"})
  assert ok.returncode == 0, ok.stderr
  [record] = results.read(tmp_path / "results.jsonl")
  assert record["config"]["nccl_options"] == "NCCL_MAX_CTAS=4 NCCL_MIN_CTAS=2"
  # the run's own setting wins over the shell's; the shell's others are recorded too
  assert record["nccl_env"] == {"NCCL_DEBUG": "WARN", "NCCL_MAX_CTAS": "4", "NCCL_MIN_CTAS": "2"}
  for wrong in ("MAX_CTAS=4", "NCCL_MAX_CTAS", "NCCL_MAX_CTAS="):
    proc = main("--config=configs/tiny.py", f"--workdir={tmp_path}", "--dry_run",
                f"--config.nccl_options={wrong}")
    assert proc.returncode == 2 and "--config.nccl_options" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
  assert len(results.read(tmp_path / "results.jsonl")) == 1


def test_an_append_after_a_line_cut_short_starts_a_new_line_and_readers_skip_it(tmp_path,
                                                                                capsys):
  path = tmp_path / "results.jsonl"
  for i in range(2):
    results.append_line(path, {"run_id": f"r{i}", "status": "ok", "tag": f"t{i}"})
  path.write_bytes(path.read_bytes()[:-10])  # the last write was cut short
  results.append_line(path, {"run_id": "r2", "status": "ok", "tag": "t2"})
  lines = path.read_text().splitlines()
  assert len(lines) == 3 and lines[0].startswith('{"run_id": "r0"')
  assert lines[2] == '{"run_id": "r2", "status": "ok", "tag": "t2"}'  # nothing glued to it
  assert [r["run_id"] for r in results.read(path)] == ["r0", "r2"]
  assert [r["run_id"] for r in results.read(path)] == ["r0", "r2"]
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"warning: {path}: skipped unreadable line 2 (not a JSON record; a write cut "
                 "short?)"]  # once, however often the file is read


def test_the_results_table_names_a_missing_file_and_asks_for_one(tmp_path):
  def table(*args):
    return subprocess.run([sys.executable, "-m", "slm_jax.results", *args],
                          capture_output=True, text=True, cwd=ROOT)
  missing = table(str(tmp_path / "nope.jsonl"))
  assert missing.returncode == 2 and "Traceback" not in missing.stderr
  assert missing.stderr.strip() == f"error: no such results file: {tmp_path / 'nope.jsonl'}"
  none = table()
  assert none.returncode == 2 and "usage: python -m slm_jax.results" in none.stderr
  path = tmp_path / "results.jsonl"
  path.write_text('{"model": "tiny", "status": "ok"}\n{"model": "ti')
  cut = table(str(path))
  assert cut.returncode == 0 and "| tiny |" in cut.stdout
  assert cut.stderr.strip() == (f"warning: {path}: skipped unreadable line 2 (not a JSON "
                                "record; a write cut short?)")


def test_the_results_table_warns_of_a_newer_schema_and_blanks_fields_that_are_not_numbers(
    tmp_path):
  path = tmp_path / "results.jsonl"
  rows = [{"schema_version": results.SCHEMA_VERSION + 1, "model": "tiny", "status": "ok",
           "tokens_per_s": 100.0},
          {"schema_version": results.SCHEMA_VERSION, "model": "tiny", "status": "ok",
           "tokens_per_s": "fast", "mfu": "0.4", "step_time_s": {"median": "slow"}},
          {"model": "other", "status": "ok", "tokens_per_s": "fast"}]  # not a run record
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  proc = subprocess.run([sys.executable, "-m", "slm_jax.results", str(path)], capture_output=True,
                        text=True, cwd=ROOT)
  assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
  newer, blanked = proc.stderr.strip().splitlines()
  assert newer.startswith(f"warning: {path}: records of schema_version "
                          f"{results.SCHEMA_VERSION + 1}, newer than this slm_jax reads")
  assert blanked.startswith("warning: ") and "mfu, step_time_s.median, tokens_per_s" in blanked
  assert "| 100 |" in proc.stdout and "| ok | - | - |" in proc.stdout
  assert "| other | - | - | - | ok | - | - |" in proc.stdout


def test_a_workdir_that_cannot_be_written_is_one_error_line(tmp_path):
  afile = tmp_path / "afile"
  afile.write_text("x")
  for workdir, says in ((afile, "is a file, not a folder"), (afile / "sub", "cannot write"),
                        ("/proc/slm_jax_x", "cannot write")):
    proc = main("--config=configs/tiny.py", f"--workdir={workdir}", "--dry_run")
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: --workdir={workdir}") and says in line
  assert afile.read_text() == "x"


def test_a_mistyped_override_keeps_its_quotes(tmp_path):
  proc = main("--config=configs/tiny.py", f"--workdir={tmp_path}", "--config.steps=abc")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "invalid literal for int() with base 10: 'abc'" in proc.stderr


def test_a_data_error_under_way_is_one_line_and_the_same_error_record(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "hello"}\n{bad json\n')
  proc = main("--config=configs/tiny.py", "--config.mode=train", "--config.train_steps=2",
              f"--config.data_files={bad}", f"--workdir={tmp_path}")
  assert proc.returncode == 2
  [line] = proc.stderr.strip().splitlines()  # not also datasets' own log line
  assert line.startswith(f"error: cannot read files {bad}: ArrowInvalid")
  [record] = results.read(tmp_path / "results.jsonl")  # the record says what the line says
  assert record["status"] == "error" and line == f"error: {record['message']}"


@pytest.mark.parametrize("signum,code,line", [
    (signal.SIGINT, 130, "interrupted: nothing was recorded"),
    (signal.SIGTERM, 143, "terminated (SIGTERM): nothing was recorded")])
def test_a_signal_during_a_benchmark_is_one_line_and_records_nothing(tmp_path, signum, code,
                                                                     line):
  proc = subprocess.Popen(
      [sys.executable, "-m", "slm_jax.main", "--config=configs/tiny.py", f"--workdir={tmp_path}",
       "--config.steps=100000", "--config.repeats=1", "--config.tensorboard=false"],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for out in proc.stdout:  # the timed steps are under way
    if "repeat 1/1 step" in out:
      break
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == code and err.strip().splitlines() == [line], err[-2000:]
  assert not (tmp_path / "results.jsonl").exists()


def test_a_config_file_that_fails_or_returns_no_config_is_one_error_line(tmp_path):
  (tmp_path / "raises.py").write_text("def get_config():\n  raise ValueError('boom')\n")
  (tmp_path / "returns.py").write_text("def get_config():\n  return 5\n")
  proc = main(f"--config={tmp_path / 'raises.py'}", f"--workdir={tmp_path}")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert proc.stderr.startswith(f"error: --config={tmp_path / 'raises.py'}: get_config() failed: "
                                "ValueError: boom\n")
  proc = main(f"--config={tmp_path / 'returns.py'}", f"--workdir={tmp_path}")
  assert proc.returncode == 2 and proc.stderr.strip() == (
      f"error: --config: {tmp_path / 'returns.py'}: get_config() returned int, not an "
      "ml_collections.ConfigDict")
  proc = main("--config=configs/tiny.py", f"--workdir={tmp_path}", "--config.foo=1")
  assert proc.returncode == 2
  assert proc.stderr.startswith("error: --config.foo: no such config field\n")


def test_outputs_that_cannot_be_written_are_one_error_line_before_the_run(tmp_path):
  (tmp_path / "a/results.jsonl").mkdir(parents=True)
  proc = main("--config=configs/tiny.py", f"--workdir={tmp_path / 'a'}", *FAST)
  assert proc.returncode == 2 and proc.stderr.strip() == (
      f"error: {tmp_path / 'a/results.jsonl'} is a folder; results are appended to a file "
      "there, so move it")
  (tmp_path / "b").mkdir()
  (tmp_path / "b/tensorboard").write_text("")
  proc = main("--config=configs/tiny.py", f"--workdir={tmp_path / 'b'}", *FAST)
  assert proc.returncode == 2
  assert proc.stderr.startswith(f"error: cannot write TensorBoard events in {tmp_path / 'b'}")
  assert not (tmp_path / "b/results.jsonl").exists()


@pytest.mark.parametrize("args,message", [
    (["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=5"],
     "error: --process_id=5 --num_processes=2: want num_processes >= 1"),
    (["--coordinator_address=127.0.0.1:1", "--num_processes=0", "--process_id=0"],
     "error: --process_id=0 --num_processes=0: want num_processes >= 1"),
    (["--coordinator_address=notahost", "--num_processes=2", "--process_id=0"],
     "error: --coordinator_address='notahost': give host:port")])
def test_impossible_process_flags_are_one_error_line(tmp_path, args, message):
  proc = main("--config=configs/tiny.py", f"--workdir={tmp_path}", *args)
  assert proc.returncode == 2 and proc.stderr.startswith(message), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr


def test_an_empty_workdir_flag_is_one_error_line(tmp_path):
  proc = main(f"--config={ROOT / 'configs/tiny.py'}", "--workdir=", cwd=tmp_path)
  assert proc.returncode == 2 and proc.stderr.strip() == (
      "error: --workdir is empty; give a folder (default: runs/default)")
  assert not list(tmp_path.iterdir())


def test_a_config_file_that_is_not_there_is_one_error_line(tmp_path):
  proc = main("--config=configs/nope.py", f"--workdir={tmp_path}")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  [line] = proc.stderr.strip().splitlines()
  assert line.startswith("error: --config: ") and "configs/nope.py" in line


def test_a_word_that_is_not_a_flag_is_one_error_line(tmp_path):
  proc = main("--config=configs/tiny.py", f"--workdir={tmp_path}", "steps=3")
  assert proc.returncode == 2 and proc.stderr.strip() == (
      "error: unexpected arguments ['steps=3']: give flags as --name=value (--help lists them)")
