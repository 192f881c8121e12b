#!/usr/bin/env bash
# The multi-host code path on one host: 2 JAX processes, one GPU each, joined through
# jax.distributed (NCCL between them, as between hosts). A short training run on the embedded
# corpus under `hsdp` is stopped with SIGTERM part-way (a preemption notice), then the same
# command, on `fsdp_full` and with a larger step budget, resumes it from the checkpoint.
# Prints both records' key fields; the second run's losses must continue the first's.
#   bash benchmarks/multiprocess_resume.sh WORKDIR [PYTHON]
# CONFIG (default configs/100m_h200_train.py) and LAUNCH (extra launch/local.py flags, e.g.
# --cpu to try it on fake CPU devices with CONFIG=configs/tiny_train.py) change what runs.
set -u
W=${1:?usage: multiprocess_resume.sh WORKDIR [PYTHON]}
PY=${2:-python3}
mkdir -p "$W"
CONFIG=${CONFIG:-configs/100m_h200_train.py}
read -r -a launch <<<"${LAUNCH:-}"
common=(--config="$CONFIG" --workdir="$W" --config.tensorboard=false
        --config.eval_every=0 --config.checkpoint_every=20 --config.per_device_batch_size=16)

# First run: stopped by SIGTERM once step 15 of 40 is logged.
setsid "$PY" launch/local.py --num_processes=2 "${launch[@]}" -- "${common[@]}" --config.strategy=hsdp \
    --config.train_steps=40 --tag=mp-resume/first >"$W/first.log" 2>&1 &
leader=$!
for _ in $(seq 600); do
  grep -q "train step 15/" "$W/first.log" 2>/dev/null && break
  kill -0 "$leader" 2>/dev/null || break
  sleep 0.5
done
kill -TERM -- "-$leader" 2>/dev/null
for _ in $(seq 240); do pgrep -g "$leader" >/dev/null || break; sleep 0.5; done
# Whatever is left after two minutes is stuck: kill it, so that it frees the GPUs.
pgrep -g "$leader" >/dev/null && { echo "first run still running after SIGTERM: killed"; kill -KILL -- "-$leader"; }
echo "first run stopped; its log ends:"; tail -n 5 "$W/first.log"

# Second run: the same command on another strategy, to 40 steps.
"$PY" launch/local.py --num_processes=2 "${launch[@]}" -- "${common[@]}" --config.strategy=fsdp_full \
    --config.train_steps=40 --tag=mp-resume/second >"$W/second.log" 2>&1
echo "second run exit code $?; its log ends:"; tail -n 5 "$W/second.log"
"$PY" - "$W/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for r in rows:
  print(r.get("tag"), r["status"], r["strategy"], "processes", r["num_processes"],
        "devices", r["num_devices"], "steps", r.get("steps_trained"), "resumed from",
        r.get("resumed_from_step"), "tokens", r.get("tokens_trained"),
        "train_s", r.get("train_s"), "final loss", r.get("final_loss"))
if len(rows) >= 2:
  a, b = rows[-2], rows[-1]
  n = len(a.get("losses") or [])
  same = b.get("losses", [])[:n] == a.get("losses")
  print(f"second run's first {n} losses equal the first run's: {same}")
PY
