#!/usr/bin/env bash
# The CPU fine-tuning runs behind the README's LLM table (SmolLM2-135M-Instruct, LoRA r=8 on q/v,
# bf16 base weights with fp32 adapters, batch 16, MeZO's classification loss over the candidates). Each line is one `zotheory finetune` run; runs
# whose result.json exists are skipped, so the script resumes. LANES runs go side by side, each
# on one thread (another copy of the script may be started later: it skips runs in progress).
#   bash scripts/llm_cpu_results.sh            # all runs, 2 lanes
#   LANES=1 bash scripts/llm_cpu_results.sh
#   ONLY='^sent-adam' bash scripts/llm_cpu_results.sh   # only runs whose name matches (grep -E)
# then: .venv/bin/zotheory finetune-report --results results/finetune --figures figures
set -euo pipefail
cd "$(dirname "$0")/.."
LANES="${LANES:-2}"
OUT="${OUT:-results/finetune}"
mkdir -p "$OUT"

COMMON="--model smollm2-135m --lora --dtype bfloat16 --batch-size 16 --loss classification --no-progress"
SENT="--task sentiment --eval-every 50 --eval-examples 200 --test-examples 500"
COPA="--task copa --eval-every 25"
WINO="--task winogrande --eval-every 25"

runs() {
  # name | arguments (step sizes are starting points from the literature and ASSETS.md, not tuned here)
  # ordered by priority: one seed of every configuration first, then the other seeds
  for s in 0 1 2; do
    echo "sent-zo_sgd-s$s|$SENT --method zo_sgd --lr 1e-3 --tau 1e-2 --steps 300 --seed $s"
    echo "sent-jaguar_signsgd-block-s$s|$SENT --method jaguar_signsgd --opt mode=block --lr 1e-4 --tau 1e-2 --steps 300 --seed $s"
    echo "sent-adam-s$s|$SENT --method adam --lr 1e-3 --steps 50 --seed $s"
    echo "sent-jaguar_muon-block-s$s|$SENT --method jaguar_muon --opt mode=block --lr 2e-3 --tau 1e-2 --steps 300 --seed $s"
    echo "copa-zo_sgd-s$s|$COPA --method zo_sgd --lr 1e-3 --tau 1e-2 --steps 100 --seed $s"
    echo "copa-jaguar_signsgd-block-s$s|$COPA --method jaguar_signsgd --opt mode=block --lr 1e-4 --tau 1e-2 --steps 100 --seed $s"
    echo "copa-adam-s$s|$COPA --method adam --lr 1e-3 --steps 25 --seed $s"
    echo "wino-zo_sgd-s$s|$WINO --method zo_sgd --lr 1e-3 --tau 1e-2 --steps 100 --seed $s"
    echo "wino-adam-s$s|$WINO --method adam --lr 1e-3 --steps 25 --seed $s"
    if [ "$s" = 0 ]; then
      # Algorithm 1 as written (k = 8 coordinates per step, 16 forward passes) at the ZO-SGD forward budget
      echo "sent-jaguar_signsgd-k8-s0|$SENT --method jaguar_signsgd --opt coords_per_step=8 --lr 1e-4 --tau 1e-2 --steps 38 --seed 0"
      # step-size sweep of the sign methods (seed 0, selection on dev): lr 1e-4 / 2e-3 above barely moved
      for lr in 1e-3 3e-3; do
        echo "sweep-sent-jaguar_signsgd-block-lr$lr-s0|$SENT --method jaguar_signsgd --opt mode=block --lr $lr --tau 1e-2 --steps 300 --seed 0"
      done
      for lr in 1e-2 3e-2; do
        echo "sweep-sent-jaguar_muon-block-lr$lr-s0|$SENT --method jaguar_muon --opt mode=block --lr $lr --tau 1e-2 --steps 300 --seed 0"
      done
    else
      # seeds 1 and 2 at the step size the sweep selected on dev (seed 0 is the sweep's run)
      echo "sent-jaguar_signsgd-block-lr1e-3-s$s|$SENT --method jaguar_signsgd --opt mode=block --lr 1e-3 --tau 1e-2 --steps 300 --seed $s"
      echo "sent-jaguar_muon-block-lr1e-2-s$s|$SENT --method jaguar_muon --opt mode=block --lr 1e-2 --tau 1e-2 --steps 300 --seed $s"
    fi
  done
}

run_one() {
  local name="${1%%|*}" args="${1#*|}"
  # a lock per run: a second copy of this script started later skips runs in progress
  exec 9>"$OUT/$name.lock"
  flock -n 9 || { echo "busy $name (another lane has it)"; return 0; }
  if [ -f "$OUT/$name/result.json" ] && grep -q '"status": "done"' "$OUT/$name/result.json"; then
    echo "skip $name (done)"; return 0
  fi
  local resume=""
  if [ -f "$OUT/$name/checkpoint.pt" ]; then resume="--resume"; fi  # continue an interrupted run
  echo "start $name $resume $(date +%T)"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 .venv/bin/zotheory finetune $COMMON $args $resume --out-dir "$OUT/$name" >> "$OUT/$name.log" 2>&1 \
    && echo "done  $name $(date +%T): $(tail -n 1 "$OUT/$name.log")" \
    || echo "FAILED $name (see $OUT/$name.log)"
}
export -f run_one
export OUT COMMON

runs | grep -E -- "^(${ONLY:-.*})[^|]*[|]" | xargs -d '\n' -P "$LANES" -I{} bash -c 'run_one "$@"' _ {}
