"""Prints the --config overrides of the fastest single-device point for one model size in
results files, e.g. `--config.attention=cudnn --config.per_device_batch_size=32`, so a later
command (slm_jax.compare, a profile) runs where the grid found the best; prints FALLBACK when
the files hold no such point.

  python3 benchmarks/best_point.py MODEL FALLBACK RESULTS.jsonl...
"""

import sys
from pathlib import Path

from slm_jax import report, results


def main(model: str, fallback: str, paths: list[str]) -> str:
  records = [r for p in paths if Path(p).exists() for r in results.read(p)]
  ours = [r for r in report.prepare(records) if r["model"] == model and r["num_devices"] == 1]
  top = report.best(ours, ("model",), value="tokens_per_s").get((model,))
  if top is None:
    return fallback
  return (f"--config.attention={top['attention']} "
          f"--config.per_device_batch_size={top['per_device_batch']}")


if __name__ == "__main__":
  print(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
