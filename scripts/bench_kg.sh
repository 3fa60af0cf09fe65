#!/usr/bin/env bash
# Knowledge-graph side information (issue 7): kg=none vs kg=attributes on ML-100K's cold-items, cold-users (K=5,
# rating and ranking) and warm presets, model seeds 0 1 2 (each protocol's split seed stays 0), one Hydra multirun
# per preset, the presets in parallel, then one table per preset from `python -m recsys_fewshot.report`
# (mean ± std, ddof=1).
#
#   bash scripts/bench_kg.sh                                   # all four presets, seeds 0,1,2
#   PRESETS="cold_items" SEEDS=0,1 bash scripts/bench_kg.sh    # a subset
#   OUT=/tmp/bench_kg bash scripts/bench_kg.sh kg.weight=1.0   # elsewhere; extra overrides go to every run
#
# Needs RECSYS_FEWSHOT_DATA with ml-100k/. Each job uses one thread (OMP_NUM_THREADS=1): the presets run side by side.
# A failed sweep or job does not stop the others: every table that can be built is printed, then the script exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-multirun/bench_kg-$(date +%Y%m%d-%H%M%S)}
SEEDS=${SEEDS:-0,1,2}
KG=${KG:-none,attributes}
PRESETS=${PRESETS:-cold_items cold_users_k5 cold_users_k5_ranking warm}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} WANDB_MODE=${WANDB_MODE:-offline} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"

declare -A METRICS=(
  [cold_items]="test/recall@20 test/ndcg@10 test/auc valid/ndcg@10 best_epoch"
  [cold_users_k5]="test/rmse test/mae test/ndcg@10 valid/rmse best_epoch"
  [cold_users_k5_ranking]="test/ndcg@10 test/recall@20 valid/ndcg@10 best_epoch"
  [warm]="test/recall@20 test/ndcg@10 valid/ndcg@10 best_epoch"
)
declare -A PIDS=()
for preset in $PRESETS; do
  "$PY" -m recsys_fewshot.train -m "experiment=$preset" "kg=$KG" "seed=$SEEDS" logger=none trainer.progress=false \
    "hydra.sweep.dir=$OUT/$preset" "$@" > "$OUT/$preset.log" 2>&1 &
  PIDS[$preset]=$!
done
status=0
failed=()
for preset in $PRESETS; do wait "${PIDS[$preset]}" || { status=1; failed+=("$preset"); }; done
[ "$status" = 0 ] || echo "sweep(s) failed: ${failed[*]} (see $OUT/<preset>.log); the tables below hold the finished jobs" >&2
for preset in $PRESETS; do  # set -e must not stop here: one preset without a table leaves the others'
  echo "### $preset"
  "$PY" -m recsys_fewshot.report "$OUT/$preset" --metrics ${METRICS[$preset]:-test/ndcg@10} seconds/total \
    || { status=1; echo "no table for $preset (see $OUT/$preset.log)" >&2; }
done
exit $status
