#!/usr/bin/env bash
# Word count over the 1 GiB corpus of ../shared/bench, in one sitting:
#   sluice embedded, sluice on a 2-executor cluster (separate processes on loopback),
#   the hand-written 2-thread Rust baseline (rust-wc) and Spark local[2] (DataFrame job).
# Timings and RSS come from ../shared/bench/bench.py; it writes results/results.jsonl under
# $W (never under shared/). Usage: benches/wordcount.sh   (env: BENCH_DATA, BENCH_WORK, RUNS)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$REPO/../shared/bench}
D=${BENCH_DATA:-/tmp/bench-data}
W=${BENCH_WORK:-/tmp/sluice-bench}
O=$D/out
RUNS=${RUNS:-5}
mkdir -p "$O" "$W"

# Peers are built from copies: shared/ is not ours to write into.
for p in gen rust-wc; do
  if [ ! -d "$W/$p" ]; then cp -a "$SHARED/$p" "$W/"; chmod -R u+w "$W/$p"; fi
  (cd "$W/$p" && cargo build --release --quiet)
done
[ -d "$D/text1g" ] || "$W/gen/target/release/gen_text" "$D/text1g" 1024 8 43
python3 -c "import pyspark" 2>/dev/null || pip install pyspark

(cd "$REPO" && cargo build --release --quiet --bin sluice)
S=${CARGO_TARGET_DIR:-$REPO/target}/release/sluice
RW=$W/rust-wc/target/release/rust-wc
SIZE=$(cat "$D"/text1g/*.txt | wc -c)
cd "$W"   # bench.py writes results/ relative to the working directory
B="python3 $SHARED/bench.py"

$B wc_sluice_embedded_1g "$SIZE" --runs "$RUNS" --clean "$O/sluice_wc1g" -- \
  "$S" run wordcount --input "$D/text1g" --output "$O/sluice_wc1g" --top 0

# The cluster: started once, outside the timed command, as a cluster would be.
source "$REPO/benches/cluster.sh"
start_cluster "$S" "$W/cluster"
$B wc_sluice_cluster2_1g "$SIZE" --runs "$RUNS" --clean "$O/sluice_cl_wc1g" -- \
  "$S" submit wordcount --coordinator "$URL" --input "$D/text1g" --output "$O/sluice_cl_wc1g" --wait
for p in $CPID $E1 $E2; do
  echo "peak RSS pid $p ($(tr '\0' ' ' < /proc/$p/cmdline | cut -c1-60)): $(grep VmHWM /proc/$p/status)"
done
kill $CPID $E1 $E2 2>/dev/null || true

$B wc_rust_1g "$SIZE" --runs "$RUNS" -- "$RW" wc "$O/rust_wc1g.tsv" "$D"/text1g/*.txt
$B wc_spark_df_1g "$SIZE" --warmup 0 --runs 3 --clean "$O/sp_wc_df1g" -- \
  python3 "$SHARED/spark_wordcount.py" df "$D/text1g" "$O/sp_wc_df1g"

# Same counts as the baseline, word for word.
"$S" run wordcount --input "$D/text1g" --output "$O/sluice_wc1g_tsv" --format tsv --overwrite --top 0 2>/dev/null
if cmp -s <(sort "$O"/sluice_wc1g_tsv/part-*.tsv) <(sort "$O/rust_wc1g.tsv"); then
  echo "VERIFY: sluice output == rust-wc output"
else
  echo "VERIFY: outputs differ"; exit 1
fi
