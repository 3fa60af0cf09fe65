#!/usr/bin/env bash
# TALLRec's few-shot table, N x seeds x methods x model selection, in ONE Hydra multirun, printed with
# mean ± std over the seeds and TALLRec's published numbers beside ours; the wall-clock is recorded.
#
#   scripts/bench_fewshot.sh movie                      # protocol=tallrec_movie (MovieLens-100K)
#   scripts/bench_fewshot.sh book                       # protocol=tallrec_book (Book-Crossing valid.json)
#   SHOTS=16 SEEDS=0,1 scripts/bench_fewshot.sh movie trainer.max_epochs=50   # extra args: Hydra overrides
#
# Knobs (environment): SHOTS (16,64,256), SEEDS (0,1,2,3,4: the N-shot draws), METHODS (model= presets: random,
# likerate,fewshot; book: fewshot_book; each the few-shot CTR training settings with its head),
# VALID (full,none: TALLRec's selection on the whole valid set | strict: nothing beyond the N shots),
# OUT (the sweep folder; default multirun/fewshot-<table>-<time>), PYTHON (.venv/bin/python if present).
# Needs RECSYS_FEWSHOT_DATA (ml-100k/, tallrec-book/); the embedding cache makes every job after the first
# skip the encoder. Writes <OUT>/table.md and <OUT>/table.json. Extra overrides that sweep another key (e.g.
# split.history_len=3,10) add a column per key: one row per value. When jobs fail, the table of the finished ones is
# still printed, the failed jobs listed under it, and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
TABLE="${1:-movie}"
shift || true
case "$TABLE" in movie|book) ;; *) echo "usage: $0 movie|book [hydra overrides...]" >&2; exit 2 ;; esac
SHOTS="${SHOTS:-16,64,256}"
SEEDS="${SEEDS:-0,1,2,3,4}"
METHODS="${METHODS:-random,likerate,$([ "$TABLE" = book ] && echo fewshot_book || echo fewshot)}"
VALID="${VALID:-full,none}"
OUT="${OUT:-multirun/fewshot-$TABLE-$(date +%Y%m%d-%H%M%S)}"
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" WANDB_MODE="${WANDB_MODE:-offline}" TOKENIZERS_PARALLELISM=false

mkdir -p "$(dirname "$OUT")"
load_before="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"
start=$(date +%s.%N)
sweep_status=0
"$PYTHON" -m recsys_fewshot.train -m "protocol=tallrec_$TABLE" "model=$METHODS" "split.n_shots=$SHOTS" \
  "split.seed=$SEEDS" "split.valid=$VALID" logger=none "hydra.sweep.dir=$OUT" "$@" > "$OUT.log" 2>&1 \
  || sweep_status=$?
end=$(date +%s.%N)
log="$OUT.log"
if [ "$sweep_status" != 0 ]; then
  tail -40 "$log" >&2
  # no job folder at all (e.g. a bad override): nothing to tabulate
  [ -d "$OUT" ] || { echo "the sweep failed before any job; its log: $log" >&2; exit 1; }
fi
mv "$log" "$OUT/sweep.log" && log="$OUT/sweep.log"
load_after="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo n/a)"

table_status=0
"$PYTHON" - "$OUT" "$TABLE" "$start" "$end" "$load_before" "$load_after" "$(nproc --all)" <<'EOF' || table_status=$?
"""Pivot the sweep into TALLRec's table: one row per (method, model selection, any other swept key), one column
per N; failed jobs listed under it."""
import json
import sys
from pathlib import Path

from recsys_fewshot.report import build_table, collect
from recsys_fewshot.tracking import write_json

out, table, start, end, load_before, load_after, cores = sys.argv[1:8]
TALLREC = {  # published test AUC (Bao et al., RecSys 2023, Table 2): LLaMA-7B + LoRA, valid-set selection
    "movie": {16: 0.6724, 64: 0.6748, 256: 0.7198},
    "book": {16: 0.5636, 64: 0.6039, 256: 0.6438},
}[table]
PROTOCOL = {
    "movie": "MovieLens-100K, TALLRec's 10,000 samples cut 8,000 / 1,000 / 1,000 (test = TALLRec's test set)",
    "book": "Book-Crossing, TALLRec's valid.json only (2,427 samples): seeded cut 30% pool / 20% valid / "
            "50% test (1,214) -- NOT TALLRec's test set (its train/test files are not here)",
}[table]
runs, failed = collect(Path(out))


def failures(keys=None) -> list:
    """One line per failed job: its folder, its overrides (`keys` only, when given) and its error."""
    return [f"- `{r.path.name}` ({' '.join(f'{k}={v}' for k, v in r.overrides.items() if keys is None or k in keys)})"
            f": {r.error}" for r in failed]


if not runs:
    print("\n".join([f"no job of the sweep finished ({len(failed)} failed):", *failures()]), file=sys.stderr)
    sys.exit(1)
stats = build_table(runs, failed, metrics=["test/auc", "valid/auc", "seconds/total"])
shots = sorted({int(r.overrides["split.n_shots"]) for r in runs})
# other swept keys (extra overrides such as split.history_len=3,10): one column each, or their rows would collide
extra = [k for k in stats.keys if k not in ("model", "split.valid", "split.n_shots")]
cells, seeds = {}, set()


def value(row: dict, key: str, default: str) -> str:
    """A row's swept value, else the value every run shares."""
    return row.get(key, stats.fixed.get(key, default))


def number_first(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


for row, stat, group in zip(stats.rows, stats.stats, stats.runs):
    key = (value(row, "model", "fewshot"), value(row, "split.valid", "full"), *(row[k] for k in extra))
    n = int(value(row, "split.n_shots", "0"))
    cells.setdefault(key, {})[n] = stat["test/auc"]
    seeds.update(r.overrides.get("split.seed", "0") for r in group)
order = {"random": 0, "likerate": 1}
lines = [f"Test AUC, mean ± std (sample std) over {len(seeds)} N-shot draws (split.seed); {PROTOCOL}.",
         "selection: full = early stopping on the whole valid set (TALLRec's); none = strict, nothing beyond "
         "the N shots.", "",
         "| method | selection | " + "".join(f"{k} | " for k in extra) + " | ".join(f"N={n}" for n in shots) + " |",
         "|---|---|" + "---|" * (len(extra) + len(shots)),
         "| TALLRec (published) | valid | " + "- | " * len(extra)
         + " | ".join(f"{TALLREC[n]:.4f}" if n in TALLREC else "-" for n in shots) + " |"]
for key in sorted(cells, key=lambda k: (order.get(k[0], 2), k[0], k[1] != "full", *map(number_first, k[2:]))):
    row = []
    for n in shots:
        mean, std, count = cells[key].get(n, (float("nan"), float("nan"), 0))
        row.append("-" if count == 0 else f"{mean:.4f} ± {std:.4f}" if count > 1 else f"{mean:.4f}")
    lines.append("| " + " | ".join([*key, *row]) + " |")
seconds = float(end) - float(start)
lines += ["", f"{len(runs) + len(failed)} jobs ({len(failed)} failed) in {seconds:.0f} s wall-clock, one multirun on "
          f"{cores} cores; load average before {load_before}, after {load_after} (other work on the machine slows it)."]
if failed:
    lines += ["", "Failed jobs (not in the table):", *failures([*stats.keys, *stats.seeds])]
text = "\n".join(lines)
(Path(out) / "table.md").write_text(text + "\n")
write_json(Path(out) / "table.json", {"table": table, "shots": shots, "seconds": round(seconds, 1),
                                      "jobs": len(runs) + len(failed), "failed": len(failed),
                                      "auc": {"/".join([m, v, *(f"{k}={x}" for k, x in zip(extra, rest))]):
                                              {str(n): c for n, c in d.items()}
                                              for (m, v, *rest), d in cells.items()},
                                      "tallrec": TALLREC, "load_before": load_before, "load_after": load_after})
print(text)
sys.exit(1 if failed else 0)
EOF
if [ "$sweep_status" != 0 ] || [ "$table_status" != 0 ]; then
  echo "jobs failed (sweep exit $sweep_status, table step exit $table_status): the table holds only the finished" \
    "jobs; the sweep's log: $log" >&2
  exit 1
fi
