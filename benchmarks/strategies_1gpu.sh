#!/usr/bin/env bash
# The strategies' one-GPU check: every strategy on a 1-device mesh against `single`,
# in one command, 100M model with cudnn attention. Usage: strategies_1gpu.sh OUTDIR
set -u
out=${1:?usage: benchmarks/strategies_1gpu.sh OUTDIR}
gpu=${GPU:-h100}
py=${PYTHON:-python3}
export PYTHONFAULTHANDLER=1 PYTHONUNBUFFERED=1
for strategy in ${STRATEGIES:-single ddp fsdp_full fsdp_grad_op hsdp}; do
  echo "== $(date +%T) $strategy"
  timeout -s ABRT "${RUN_TIMEOUT:-240}" \
    $py -m slm_jax.main --config=configs/100m_${gpu}.py --config.strategy=$strategy \
      --workdir="$out/strategies"
done
