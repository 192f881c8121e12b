"""The report's --predictions: slm_jax.predict's points beside the paper's Figures 2 and 3 and
our measured ones, drawn and labelled as predictions, never in a curve, ratio or verdict of
measurements."""

import matplotlib.lines
import pytest

from slm_jax import predict, report
from test_report import A100, ROOT, record, run_report, write


def predicted(model="1b", gpu="A100-80GB", counts=(1, 2, 8, 16), bounds=(1.0, 0.0)):
  """Points as `python -m slm_jax.predict --json` prints them (the fields the report reads)."""
  rows = []
  for strategy, speed in (("ddp", 1.0), ("fsdp_full", 1.1)):
    for n in counts:
      for e in bounds:
        rows.append({"prediction": True, "model": model, "gpu": gpu, "strategy": strategy,
                     "num_devices": n, "num_nodes": max(1, n // 8),
                     "gpus_per_node": min(n, 8), "exposed_fraction": e, "fits": True,
                     "calibration_record": None,
                     "token_per_dollar_paper": 7_000 * speed * (1 - 0.2 * e) / n ** 0.1})
  return rows


def measured():
  return [record(m, "cudnn", s, 16, n, kind=A100, tps_per_device=9_000 - 100 * n)
          for m in ("100m", "1b") for s in ("ddp", "fsdp_full") for n in (1, 2, 8, 16)]


def test_predicted_curves_are_the_best_prediction_at_each_x_per_calibration():
  rows = predicted()
  fig2 = {(c["series"], c["calibration"]): c for c in predict.predicted_curves(rows, "Fig2")}
  assert set(fig2) == {("A100-80GB", "nothing hidden"), ("A100-80GB", "all hidden")}
  # The best scheme at each GPU count (fsdp_full here), as the paper's points are.
  want = [(n, 7_000 * 1.1 * 0.8 / n ** 0.1) for n in (1, 2, 8, 16)]
  assert fig2["A100-80GB", "nothing hidden"]["points"] == pytest.approx(want)
  assert all("predicted" in c["label"] for c in fig2.values())
  # Figure 3 counts full nodes of 8: 8 and 16 GPUs, one curve per scheme and calibration.
  fig3 = predict.predicted_curves(rows, "Fig3")
  assert {(c["series"], tuple(x for x, _ in c["points"])) for c in fig3} == {
      ("DDP", (1, 2)), ("FSDP-Full", (1, 2))} and len(fig3) == 4
  assert not predict.predicted_curves([dict(r, fits=False) for r in rows], "Fig2")


def _drawn(figure, tmp_path, monkeypatch):
  """The legend entries of `figure` as drawn: {label: handle} per panel."""
  kept = []
  monkeypatch.setattr(report.plt, "close", kept.append)
  report.draw(figure, tmp_path)
  [fig] = kept
  return [dict(zip(*reversed(ax.get_legend_handles_labels()))) for ax in fig.axes
          if ax.get_visible()]


@pytest.mark.parametrize("fig_id", ["Fig2", "Fig3"])
def test_predictions_are_drawn_dotted_and_hollow_and_labelled_predicted(fig_id, tmp_path,
                                                                          monkeypatch):
  ours = report.prepare(measured())
  make = {"Fig2": report.fig2_gpu_types, "Fig3": report.fig3_nodes}[fig_id]
  figure = make(ours, report.read_paper())
  before = [(c.model, c.series, [(p.x, p.value) for p in c.points]) for c in figure.curves]
  figure.predicted = predict.predicted_curves(predicted(), fig_id)
  panels = _drawn(figure, tmp_path, monkeypatch)
  one_b = panels[report.MODELS.index("1b")]
  guesses = {label: h for label, h in one_b.items() if "predicted" in label}
  assert len(guesses) == len(figure.predicted)
  for label, handle in guesses.items():
    assert isinstance(handle, matplotlib.lines.Line2D)
    assert handle.get_linestyle() == ":" and handle.get_markerfacecolor() == "none"
  # Every other entry is the paper's or a measurement, and none of them says predicted.
  assert all(label.startswith(("paper:", "slm_jax:")) for label in one_b if label not in guesses)
  assert not any("predicted" in label for label in panels[report.MODELS.index("100m")])
  # The measured curves are the ones drawn without predictions.
  assert [(c.model, c.series, [(p.x, p.value) for p in c.points])
          for c in figure.curves] == before


def test_no_table_ratio_or_verdict_changes_with_predictions(tmp_path):
  path = write(tmp_path / "results.jsonl", measured())
  preds = write(tmp_path / "predicted.jsonl", predicted() + predicted("100m", "H100"))
  plain = report.write_report([str(path)], tmp_path / "plain")
  drawn = report.write_report([str(path)], tmp_path / "with", predictions=(str(preds),))
  md_plain = (plain.parent / "report.md").read_text()
  md_with = (drawn.parent / "report.md").read_text()
  notes = [line for line in md_with.splitlines() if "predict" in line]
  # Only the notes under Figures 2 and 3 are new; every table and verdict is as it was.
  assert len(notes) == 2 and all(n.startswith("Dotted lines with hollow diamonds are "
                                              "predictions") for n in notes)
  assert [line for line in md_with.splitlines() if line and line not in notes] == \
      [line for line in md_plain.splitlines() if line]
  assert "predicted.jsonl" in notes[0] and "A100-80GB, nothing hidden" in notes[0]


def test_a_bad_predictions_file_is_one_error_line(tmp_path):
  path = write(tmp_path / "results.jsonl", measured())
  proc = run_report(path, f"--out={tmp_path / 'out'}", f"--predictions={tmp_path / 'nope'}")
  assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
      f"error: --predictions: no such file {str(tmp_path / 'nope')!r}"]
  proc = run_report(path, f"--out={tmp_path / 'out'}", f"--predictions={path}")
  assert proc.returncode == 2 and "holds no predicted points or checks" in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1


def test_the_committed_paper_predictions_are_drawn_beside_the_benchmarks(tmp_path):
  path = write(tmp_path / "results.jsonl", measured())
  proc = run_report(path, f"--out={tmp_path}",
                    f"--predictions={ROOT / 'benchmarks/predict_paper_a100_80gb.jsonl'}")
  assert proc.returncode == 0, proc.stderr
  md = (tmp_path / "report.md").read_text()
  assert md.count("predict_paper_a100_80gb.jsonl") == 2


def check_row(model, strategy, measured, predicted_tps, exposed=(0.005, 0.009)):
  """A line of `python -m slm_jax.predict --check --json` (the fields the report reads)."""
  return {"model": model, "strategy": strategy, "num_devices": 2, "per_device_batch": 8,
          "measured_tokens_per_s": measured, "predicted_tokens_per_s": predicted_tps,
          "error_percent": (predicted_tps / measured - 1) * 100,
          "measured_exposed_comm_s": exposed[0], "predicted_exposed_comm_s": exposed[1],
          "exposed_error_percent": (exposed[1] / exposed[0] - 1) * 100,
          "calibrated_model": "1b", "calibrated_strategy": "fsdp_full",
          "compute_relation": "the same commit", "record_commit": "c5d918eccace"}


def test_check_rows_are_a_table_of_prediction_beside_measurement_and_draw_nothing(tmp_path):
  path = write(tmp_path / "results.jsonl", measured())
  affine = {"form": "affine", "a_s": 0.0025, "b": 0.125, "records": ["r1", "r2"]}
  checks = write(tmp_path / "check.jsonl", [
      dict(check_row("2b", "fsdp_full", 79_146, 76_470), exposed_model=affine),
      check_row("1b", "ddp", 174_359, 176_781)])
  plain = report.write_report([str(path)], tmp_path / "plain")
  drawn = report.write_report([str(path)], tmp_path / "with", predictions=(str(checks),))
  md = (drawn.parent / "report.md").read_text()
  section = md.split("## The predictor against measured multi-GPU runs", 1)[1].split("\n## ")[0]
  lines = [line for line in section.splitlines() if line.startswith("| 1B") or
           line.startswith("| 2B")]
  # Smallest model first; each row's two numbers and its error, from the check itself.
  assert lines[0].startswith("| 1B | ddp | 2 | 8 | 174,359 | 176,781 | +1.4% | 5.0 | 9.0 | +80.0%")
  assert lines[1].startswith("| 2B | fsdp_full | 2 | 8 | 79,146 | 76,470 | -3.4% |")
  # An exposed time from a line over several runs says so; a fraction adds nothing.
  assert "1b fsdp_full; exposed 2.50 ms + 0.125 x comm, fitted on 2 runs |" in lines[1]
  assert "| 1b fsdp_full |" in lines[0]
  # Checks draw no predicted curve and change no other line of the report.
  outside = md.replace(section, "").replace("## The predictor against measured multi-GPU runs", "")
  assert [line for line in outside.splitlines() if line] == \
      [line for line in (plain.parent / "report.md").read_text().splitlines() if line]
