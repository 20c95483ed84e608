#!/usr/bin/env bash
# The training examples: logistic regression and a two-layer MLP (32 hidden units) on a
# generated classification dataset with a known structure (a hidden linear rule plus noise:
# `sluice generate-classification`), 5M rows x 50 features, trained with `sluice train` on
# two embedded executors. They must reach the stated accuracy (of the last epoch's steps,
# taken before each step): logistic regression 0.95 after 5 full-data steps (sync mode, SGD
# with momentum); the MLP 0.95 after 3 epochs of 500,000-row mini-batches (Adam, lr 0.05). On a machine
# with a GPU the MLP runs again with `--gpus 1` (its gradient in cuBLAS) and must reach the
# same accuracy; elsewhere that run is skipped, saying why.
# Usage: examples/train-classification.sh   env: SLUICE (default: a release build), DATA, ROWS
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${SLUICE:-}" ]; then
  (cd "$REPO" && cargo build --release --quiet --bin sluice --features sluice-cli/gpu)
  SLUICE=${CARGO_TARGET_DIR:-$REPO/target}/release/sluice
fi
ROWS=${ROWS:-5000000}
DATA=${DATA:-/tmp/sluice-examples/classification-${ROWS}x50}
OUT=$(mktemp -d /tmp/sluice-train-XXXXXX)
trap 'rm -rf "$OUT"' EXIT
[ -d "$DATA" ] || "$SLUICE" generate-classification "$DATA" --rows "$ROWS" --features 50 --files 8 --seed 7

# train NAME WANT FLAGS...: trains, prints the epochs, checks the last epoch's accuracy.
train() {
  local name=$1 want=$2; shift 2
  echo "== $name"
  "$SLUICE" train --input "$DATA" --output "$OUT/$name" --split-size 32MiB --json "$@" 2>/dev/null \
    | python3 -c '
import json, sys
want = float(sys.argv[1])
epochs = json.load(sys.stdin)["epochs"]
for e in epochs:
    print("epoch %d: accuracy %.4f, loss %.4f, %.0f samples/s" % (e["epoch"], e["accuracy"], e["loss"], e["samples_per_s"]))
got = epochs[-1]["accuracy"]
print("reached %.4f (stated: %.2f)" % (got, want))
sys.exit(0 if got >= want else 1)' "$want"
}

train logistic-regression 0.95 --model logistic-regression --optimizer sgd:0.5:0.9 --epochs 5
train mlp 0.95 --model mlp:32 --optimizer adam:0.05 --epochs 3 --batch-size 500000
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  train mlp-gpu 0.95 --model mlp:32 --optimizer adam:0.05 --epochs 3 --batch-size 500000 --gpus 1
else
  echo "== mlp-gpu: skipped: no GPU here (nvidia-smi finds none)"
fi
