#!/usr/bin/env bash
# The foundation benchmark (issue 2): the four paper presets on one GPU, cudnn attention,
# context 1024, per-device batch 16 (8 for 2B), 3 x 10 timed steps; the paper's vanilla
# attention beside it for 100M; and what fits an A100-40GB (40 GiB budget), compiled on this
# GPU without training. Usage: benchmarks/foundation.sh OUTDIR
set -u
out=${1:?usage: benchmarks/foundation.sh OUTDIR}
gpu=${GPU:-h100}
py=${PYTHON:-python3}
for size in 100m 500m 1b 2b; do
  $py -m slm_jax.main --config=configs/${size}_${gpu}.py --workdir="$out/foundation"
done
$py -m slm_jax.main --config=configs/100m_${gpu}.py --config.attention=xla --workdir="$out/foundation"
for size in 100m 500m 1b 2b; do
  $py -m slm_jax.main --config=configs/${size}_a100_40g.py --dry_run --workdir="$out/fit_a100_40g"
done
