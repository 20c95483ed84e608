#!/usr/bin/env bash
# Training throughput: `sluice train` (sync mode: one full-data gradient step per epoch, as
# MapReduce rounds; epochs after the first read the splits cached in the executors) of
# logistic regression and a 32-unit MLP on ROWS x FEATURES generated rows, embedded with 1 and
# 2 executors (1 slot each; each task's gradient uses rayon over the cores), beside
# scikit-learn's SGDClassifier / MLPClassifier (one partial_fit pass over all rows per epoch,
# data in memory) on the same Parquet files, in one sitting. Prints per-epoch JSON lines.
# Usage: benches/train.sh   env: ROWS (5000000), FEATURES (50), EPOCHS (5), SLUICE, PY
set -euo pipefail
ROWS=${ROWS:-5000000}
FEATURES=${FEATURES:-50}
EPOCHS=${EPOCHS:-5}
PY=${PY:-$HOME/.cache/sluice-venv/bin/python}
source "$(dirname "$0")/common.sh"
DATA=$D/classification-${ROWS}x${FEATURES}
[ -d "$DATA" ] || "$SLUICE" generate-classification "$DATA" --rows "$ROWS" --features "$FEATURES" --files 8 --seed 7
for model in logistic-regression mlp:32; do
  opt=sgd:0.5:0.9; [ "$model" = logistic-regression ] || opt=adam:0.05
  for ex in 1 2; do
    out=$D/out/train-$ex-${model//:/-}; rm -rf "$out"
    echo "== sluice train $model, $ex executor(s)"
    "$SLUICE" train --input "$DATA" --output "$out" --model "$model" --optimizer "$opt" \
      --epochs "$EPOCHS" --shards 2 --split-size 32MiB --executors "$ex" --json 2>/dev/null \
      | python3 -c 'import json,sys; [print(json.dumps({k: e[k] for k in ("epoch","seconds","samples_per_s","accuracy","datastore_bytes_read")})) for e in json.load(sys.stdin)["epochs"]]'
  done
  echo "== scikit-learn $model"
  "$PY" "$(dirname "$0")/sklearn_train.py" "$DATA" "$model" "$EPOCHS"
done
