#!/usr/bin/env bash
# Word count of the 1 GiB corpus of ../shared/bench (`gen_text text1g 1024 8 43`) without a
# memory budget and with `--task-memory 32MiB` (maps cut their 64 MiB splits into 8 MiB chunks,
# spill a sorted run each and merge them), in one sitting, embedded (2 executors x 1 slot).
# Each run's output is compared with the unbounded run's (every word and count, sorted); the
# script fails if they differ. Usage: benches/budget_wordcount.sh
#   env: BENCH_DATA (/tmp/bench-data), SLUICE (a built sluice), RUNS (3), BUDGET (32MiB)
set -euo pipefail
RUNS=${RUNS:-3}
BUDGET=${BUDGET:-32MiB}
source "$(dirname "$0")/common.sh"
[ -d "$D/text1g" ] || "$W/gen/target/release/gen_text" "$D/text1g" 1024 8 43
counts() { cat "$1"/part-* | LC_ALL=C sort | md5sum | cut -d' ' -f1; }
for r in $(seq 1 "$RUNS"); do
  for mode in unbounded budget; do
    out=$D/out/wc-$mode
    flags=()
    [ "$mode" = budget ] && flags=(--task-memory "$BUDGET")
    rm -rf "$out"
    /usr/bin/time -v -o "$W/wc-$mode.time" "$SLUICE" run wordcount --input "$D/text1g" \
      --output "$out" --format tsv --top 0 --executors 2 "${flags[@]}" >"$W/wc-$mode.log" 2>&1
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$W/wc-$mode.time")
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$W/wc-$mode.time")
    spilled=$(grep -o 'spilled_runs[^,]*' "$W/wc-$mode.log" | head -1 || true)
    echo "run $r $mode: wall $wall rss_MiB $rss ${spilled:-no spills}"
  done
  a=$(counts "$D/out/wc-unbounded"); b=$(counts "$D/out/wc-budget")
  [ "$a" = "$b" ] || { echo "FAIL: the outputs differ ($a vs $b)"; exit 1; }
  echo "run $r: outputs equal ($a)"
done
