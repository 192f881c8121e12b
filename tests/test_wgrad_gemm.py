import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_chunked_weight_gradients_equal_the_one_dot_and_every_shape_is_timed(tmp_path):
  # benchmarks/wgrad_gemm.py measured PERF_NOTES section 12; its chunked product must stay
  # the same gradient (to bf16 rounding) as the dot autodiff emits.
  out = tmp_path / "rows.jsonl"
  proc = subprocess.run([sys.executable, "benchmarks/wgrad_gemm.py", "--tiny",
                         "--chunks=1,2,4", "--rounds=1", f"--out={out}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert {(r["shape"], r["chunks"]) for r in rows} == {
      (s, c) for s in ("qo", "gate_up", "down") for c in (1, 2, 4)}
  assert all(r["median_ms"] > 0 and r["tokens"] == 128 for r in rows)
  assert all(r["max_rel_diff_vs_first"] < 1e-2 for r in rows)  # bf16 has 8 bits
  assert any(r["max_rel_diff_vs_first"] > 0 for r in rows if r["chunks"] > 1)
