#!/usr/bin/env bash
# Per-task cost of running user code in a job binary's worker process instead of in the
# executor: 1,000 one-line files (1,000 map tasks) through the built-in `wordcount` and through
# the `wordcount-typed` job binary (examples/wordcount-typed), on a coordinator + 2 executors
# (1 slot each) on loopback. Timings from ../shared/bench/bench.py; results under $W.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$REPO/../shared/bench}
W=${BENCH_WORK:-/tmp/sluice-bench}
RUNS=${RUNS:-5}
N=${TASKS:-1000}
(cd "$REPO" && cargo build --release --quiet -p sluice-cli -p sluice-example-wordcount)
T=${CARGO_TARGET_DIR:-$REPO/target}/release
S=$T/sluice
WC=$T/wordcount-typed
D=$W/tiny$N; O=$W/out
if [ ! -d "$D" ]; then
  mkdir -p "$D"
  for i in $(seq -w 1 "$N"); do echo "word$i shared words here" > "$D/f$i.txt"; done
fi
mkdir -p "$O"
SIZE=$(cat "$D"/*.txt | wc -c)

source "$REPO/benches/cluster.sh"
start_cluster "$S" "$W/cluster-tiny"
cd "$W"
B="python3 $SHARED/bench.py"
$B tiny${N}_builtin "$SIZE" --runs "$RUNS" --clean "$O/tiny_builtin" -- \
  "$S" submit wordcount --coordinator "$URL" --input "$D" --output "$O/tiny_builtin" --reducers 2 --wait
$B tiny${N}_binary "$SIZE" --runs "$RUNS" --clean "$O/tiny_binary" -- \
  "$S" submit wordcount-typed --binary "$WC" --coordinator "$URL" --input "$D" --output "$O/tiny_binary" --reducers 2 --wait
python3 - "$W/results/results.jsonl" "$N" <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line); rows[r["name"]] = r
n = int(sys.argv[2])
b, x = rows[f"tiny{n}_builtin"]["median_s"], rows[f"tiny{n}_binary"]["median_s"]
print(f"builtin {b:.2f}s ({1000*b/n:.2f} ms/task), binary {x:.2f}s ({1000*x/n:.2f} ms/task), "
      f"worker overhead {1000*(x-b)/n:.2f} ms/task")
PY
