#!/usr/bin/env bash
# GPU check, one prepared run: frozen extraction of all MovieLens-100K item texts with MiniLM in fp32 and
# bf16 (items/s, cosine agreement of the vectors), one LoRA epoch in bf16 (split=given u1, rating), and the
# LLM scorer on TALLRec Movie prompts (prompts/s against full-vocabulary logits, one LoRA step at 4 x 256
# tokens with its peak memory), printed as one short table and two JSON records.
#
#   bash scripts/gpu_check.sh             # on a GPU machine, from anywhere (needs the project installed,
#                                         # the packaged MiniLM and $RECSYS_FEWSHOT_DATA/ml-100k)
#   bash scripts/gpu_check.sh --dry-run   # any machine, CPU included: every step, tiny (64 texts, 2 batches)
#
# Knobs (environment): PY (python to use; default .venv/bin/python, else python), OUT (result folder;
# default a fresh temporary one), LORA_ARGS (extra overrides for the LoRA run, e.g. trainer.batch_size=4096).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
OUT=${OUT:-$(mktemp -d -t gpu-check-XXXXXX)}
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1

if [ "$DRY" = 1 ]; then
  EXTRACT_ARGS=(--quick)
  LORA=(trainer.max_epochs=1 trainer.limit_train_batches=2 trainer.batch_size=64 trainer.mixed_precision=bf16)
else
  EXTRACT_ARGS=()
  LORA=(trainer.max_epochs=1 trainer.batch_size=1024 trainer.mixed_precision=bf16)
fi

echo "== frozen extraction, fp32 and bf16 -> $OUT/extract.json"
"$PY" scripts/gpu_check.py extract --out "$OUT" "${EXTRACT_ARGS[@]}"

echo "== one LoRA epoch in bf16 -> $OUT/lora"
# shellcheck disable=SC2086
"$PY" -m recsys_fewshot.train split=given peft=lora logger=none trainer.progress=false \
  cache_dir="$OUT/cache" hydra.run.dir="$OUT/lora" "${LORA[@]}" ${LORA_ARGS:-} > "$OUT/lora.log" 2>&1 \
  || { tail -30 "$OUT/lora.log"; exit 1; }

echo "== the LLM scorer: answer-position scores vs full-vocabulary logits, one LoRA step -> $OUT/llm_*.json"
# LLM: a causal LM of the models root (scripts/fetch_llm.py), else LLM_RANDOM_INIT=1 with only its config and
# tokenizer files (speed does not depend on the weights)
LLM_ARGS=(--llm "${LLM:-gemma3-270m}")
[ "${LLM_RANDOM_INIT:-0}" = 1 ] && LLM_ARGS+=(--random-init)
if [ "$DRY" = 1 ]; then LLM_N=(--prompts 8); else LLM_N=(--prompts 128 --batch 16); fi
"$PY" scripts/bench_llm.py throughput "${LLM_ARGS[@]}" "${LLM_N[@]}" > "$OUT/llm_throughput.json" 2> "$OUT/llm.log" \
  || { tail -20 "$OUT/llm.log"; echo "(LLM step failed: see $OUT/llm.log)"; }
"$PY" scripts/bench_llm.py lora-step "${LLM_ARGS[@]}" --batch 4 --tokens 256 > "$OUT/llm_lora_step.json" \
  2>> "$OUT/llm.log" || { tail -20 "$OUT/llm.log"; echo "(LLM LoRA step failed: see $OUT/llm.log)"; }

echo
"$PY" scripts/gpu_check.py table "$OUT"
for f in "$OUT"/llm_throughput.json "$OUT"/llm_lora_step.json; do [ -s "$f" ] && cat "$f"; done
