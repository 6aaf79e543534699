#!/usr/bin/env bash
# The GPU fine-tuning runs behind docs/llm.md's GPU section (SmolLM2-135M-Instruct, LoRA r=8 on q/v,
# bf16 base weights with fp32 adapters, batch 16, MeZO's classification loss). Several runs share the
# GPU side by side (a 135M model leaves it mostly idle). Runs whose result.json says done are
# skipped and interrupted ones resume from their checkpoint, so the script can be re-run.
#   PHASE=sweep bash scripts/llm_gpu_runs.sh   # step-size grid at the CPU budget (300 steps), seed 0
#   PHASE=paper bash scripts/llm_gpu_runs.sh   # the paper's protocol: 20,000 steps, tau 1e-3
# Environment: ZOTHEORY (the CLI, default .venv/bin/zotheory), PAR (runs at once, default 6),
# RUN_TIMEOUT (seconds one invocation may run before it is stopped; it resumes next time),
# RESULTS (default results/gpu), LR_* (the paper phase's step sizes).
set -euo pipefail
cd "$(dirname "$0")/.."
ZOTHEORY="${ZOTHEORY:-.venv/bin/zotheory}"
PAR="${PAR:-6}"
RUN_TIMEOUT="${RUN_TIMEOUT:-0}"
RESULTS="${RESULTS:-results/gpu}"
PHASE="${PHASE:-sweep}"
mkdir -p "$RESULTS"

COMMON="--model smollm2-135m --lora --dtype bfloat16 --batch-size 16 --loss classification --device cuda --no-progress"

runs() {
  case "$PHASE" in
    sweep)
      # the CPU runs' budget and evaluation sizes; step sizes around the CPU runs' starting points
      local S="--task sentiment --eval-every 50 --eval-examples 200 --test-examples 500 --tau 1e-2 --steps 300 --seed 0"
      for lr in 3e-4 1e-3 3e-3 1e-2; do echo "sweep-zo_sgd-lr$lr|$S --method zo_sgd --lr $lr"; done
      for lr in 1e-4 3e-4 1e-3 3e-3; do echo "sweep-jaguar_signsgd-block-lr$lr|$S --method jaguar_signsgd --opt mode=block --lr $lr"; done
      for lr in 2e-3 6e-3 2e-2 6e-2; do echo "sweep-jaguar_muon-block-lr$lr|$S --method jaguar_muon --opt mode=block --lr $lr"; done
      ;;
    paper)
      # MeZO's protocol as the paper uses it: 20,000 steps, constant step size, tau = 1e-3,
      # evaluation on 500 dev examples every 500 steps, 1000 test examples, test at the best dev step
      local P="--task sentiment --eval-every 500 --eval-examples 500 --test-examples 1000 --tau 1e-3 --checkpoint-every 500 --seed 0"
      # Step sizes: ZO-SGD's is the sweep's best; the sign methods' are set so that the drift of
      # coordinates whose momentum stays non-zero (about lr per step, see docs/llm.md) stays small
      # over 20,000 steps.
      echo "paper-zo_sgd|$P --method zo_sgd --lr ${LR_ZO_SGD:-1e-3} --steps 20000"
      echo "paper-jaguar_signsgd-block|$P --method jaguar_signsgd --opt mode=block --lr ${LR_JAGUAR_SIGNSGD:-1e-5} --steps 20000"
      echo "paper-jaguar_signsgd-k1|$P --method jaguar_signsgd --opt coords_per_step=1 --lr ${LR_JAGUAR_SIGNSGD:-1e-5} --steps 20000"
      echo "paper-jaguar_muon-block|$P --method jaguar_muon --opt mode=block --lr ${LR_JAGUAR_MUON:-2e-3} --steps 20000"
      echo "paper-adam|$P --method adam --lr 1e-4 --steps 1000"
      ;;
    *) echo "unknown PHASE=$PHASE (sweep or paper)" >&2; exit 2 ;;
  esac
}

run_one() {
  local name="${1%%|*}" args="${1#*|}"
  if [ -f "$RESULTS/$name/result.json" ] && grep -q '"status": "done"' "$RESULTS/$name/result.json"; then
    echo "skip $name (done)"; return 0
  fi
  local resume="" stop=""
  if [ -f "$RESULTS/$name/checkpoint.pt" ]; then resume="--resume"; fi
  if [ "$RUN_TIMEOUT" != 0 ]; then stop="timeout -s INT $RUN_TIMEOUT"; fi
  echo "start $name $resume $(date +%T)"
  # shellcheck disable=SC2086
  $stop $ZOTHEORY finetune $COMMON $args $resume --out-dir "$RESULTS/$name" >> "$RESULTS/$name.log" 2>&1 \
    && echo "done  $name $(date +%T): $(tail -n 1 "$RESULTS/$name.log")" \
    || echo "stopped $name $(date +%T) (see $RESULTS/$name.log)"
}
export -f run_one
export RESULTS COMMON ZOTHEORY RUN_TIMEOUT

runs | xargs -d '\n' -P "$PAR" -I{} bash -c 'run_one "$@"' _ {}
