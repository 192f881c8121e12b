"""TensorBoard event files from the `tensorboard` package alone (no TensorFlow): per-step
scalars, the config as HParams, and the run summary as text."""

from __future__ import annotations

import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class Writer:
  """One run's event file under `logdir`."""

  def __init__(self, logdir: str | Path):
    Path(logdir).mkdir(parents=True, exist_ok=True)
    self._writer = EventFileWriter(str(logdir))

  def _add(self, summary: summary_pb2.Summary, step: int) -> None:
    self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

  def scalar(self, tag: str, value: float, step: int) -> None:
    self._add(summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=tag, simple_value=float(value))]), step)

  def text(self, tag: str, markdown: str, step: int = 0) -> None:
    self._add(text_summary.text_pb(tag, markdown), step)

  def hparams(self, hparams: dict, trial_id: str | None = None) -> None:
    """`hparams` values must be bool, int, float or str; others are written as str."""
    clean = {k: v if isinstance(v, (bool, int, float, str)) else str(v)
             for k, v in hparams.items()}
    self._add(hparams_summary.hparams_pb(clean, trial_id=trial_id), 0)

  def close(self) -> None:
    self._writer.flush()
    self._writer.close()
