#!/usr/bin/env bash
# Training throughput: `sluice train` (sync mode: one full-data gradient step per epoch, as
# MapReduce rounds; epochs after the first read the splits cached in the executors) of
# logistic regression and a 32-unit MLP on ROWS x FEATURES generated rows, embedded with 1 and
# 2 executors (1 slot each; each task's gradient uses rayon over the cores), beside
# scikit-learn's SGDClassifier / MLPClassifier (one partial_fit pass over all rows per epoch,
# data in memory) and PyTorch on the CPU (same model, optimizer, batch and threads:
# benches/torch_train.py, where TORCH_PY has torch) on the same Parquet files, in one sitting,
# with one full-data step per epoch and again with BATCH-row mini-batches. Prints per-epoch
# JSON lines.
# Usage: benches/train.sh   env: ROWS (5000000), FEATURES (50), EPOCHS (5), BATCH (500000),
#   SLUICE, PY (python with scikit-learn), TORCH_PY (python with torch)
set -euo pipefail
ROWS=${ROWS:-5000000}
FEATURES=${FEATURES:-50}
EPOCHS=${EPOCHS:-5}
BATCH=${BATCH:-500000}
PY=${PY:-$HOME/.cache/sluice-venv/bin/python}
TORCH_PY=${TORCH_PY:-$HOME/.cache/torch-venv/bin/python}
THREADS=$(nproc)
source "$(dirname "$0")/common.sh"
DATA=$D/classification-${ROWS}x${FEATURES}
[ -d "$DATA" ] || "$SLUICE" generate-classification "$DATA" --rows "$ROWS" --features "$FEATURES" --files 8 --seed 7
summary='import json,sys; [print(json.dumps({k: e[k] for k in ("epoch","seconds","samples_per_s","accuracy","datastore_bytes_read")})) for e in json.load(sys.stdin)["epochs"]]'
for model in logistic-regression mlp:32; do
  opt=sgd:0.5:0.9; [ "$model" = logistic-regression ] || opt=adam:0.05
  for batch in 0 "$BATCH"; do
    for ex in 1 2; do
      out=$D/out/train-$ex-${model//:/-}; rm -rf "$out"
      echo "== sluice train $model, batch $batch (0: all rows), $ex executor(s)"
      "$SLUICE" train --input "$DATA" --output "$out" --model "$model" --optimizer "$opt" \
        --epochs "$EPOCHS" --shards 2 --split-size 32MiB --executors "$ex" --batch-size "$batch" \
        --no-shuffle --json 2>/dev/null | python3 -c "$summary"
    done
    if "$TORCH_PY" -c 'import torch' 2>/dev/null; then
      echo "== pytorch $model, batch $batch, $THREADS threads"
      "$TORCH_PY" "$(dirname "$0")/torch_train.py" "$DATA" "$model" "$EPOCHS" "$batch" "$THREADS"
    else
      echo "== pytorch: not installed for $TORCH_PY (skipped)"
    fi
  done
  echo "== scikit-learn $model"
  "$PY" "$(dirname "$0")/sklearn_train.py" "$DATA" "$model" "$EPOCHS"
done
