#!/usr/bin/env bash
# The foundation benchmark: the four paper presets on one GPU, cudnn attention,
# context 1024, per-device batch 16 (8 for 2B), 3 x 10 timed steps. Each run is capped by
# RUN_TIMEOUT seconds and dumps its Python stack if it hangs. Usage: foundation.sh OUTDIR [SIZES]
set -u
out=${1:?usage: benchmarks/foundation.sh OUTDIR [SIZES]}
sizes=${2:-100m 500m 1b 2b}
gpu=${GPU:-h100}
py=${PYTHON:-python3}
export PYTHONFAULTHANDLER=1 PYTHONUNBUFFERED=1
for size in $sizes; do
  echo "== $(date +%T) $size"
  timeout -s ABRT "${RUN_TIMEOUT:-240}" \
    $py -m slm_jax.main --config=configs/${size}_${gpu}.py --workdir="$out/foundation"
done
