#!/usr/bin/env bash
# Sort of the TeraSort-like dataset of ../shared/bench (10M x 100-byte records, 10-byte keys:
# `gen_sort OUT 10000000 1`, 1 GB), in one sitting:
#   - Sluice: a coordinator and 2 executor processes (1 slot each) on loopback, `submit sort
#     --task-memory $TASK_MEMORY --wait`; every process runs under /usr/bin/time -v, so the peak
#     RSS of each executor is measured, not guessed; the output is checked by
#     `sluice run sort-validate` (order across parts in name order, count, checksum) every run;
#   - GNU sort: LC_ALL=C sort -S 4G --parallel=2 (the command of ../shared/bench);
#   - Spark local[2]: RDD sortByKey and DataFrame orderBy (../shared/bench/spark_sort.py), when
#     $SPARK_PY imports pyspark.
# Usage: benches/sort.sh
#   env: BENCH_DATA (/tmp/bench-data), SLUICE (a built sluice; default: cargo build --release),
#        RUNS (3), TASK_MEMORY (64MiB), REDUCERS (8), SPARK_PY, SKIP_PEERS=1 (Sluice only)
#   SKEW=1: every other record's key replaced by one key (50% of the records on one key).
#   SIZE_GB=10 EXEC_MEM=1G: the 10 GB variant (generated under $BENCH_DATA, removed after), each
#        executor in a cgroup-v1 memory group limited to EXEC_MEM (needs root and cgroup v1).
set -euo pipefail
RUNS=${RUNS:-3}
TASK_MEMORY=${TASK_MEMORY:-64MiB}
REDUCERS=${REDUCERS:-8}
SIZE_GB=${SIZE_GB:-1}
SPARK_PY=${SPARK_PY:-$HOME/.cache/spark-venv/bin/python}
source "$(dirname "$0")/common.sh"
IN=$D/sort${SIZE_GB}g.txt
[ -f "$IN" ] || "$W/gen/target/release/gen_sort" "$IN" $((SIZE_GB * 10000000)) 1
if [ -n "${SKEW:-}" ]; then
  # Every other record gets one key: half the input on one key, in one reduce range.
  SKEWED=$D/sort${SIZE_GB}g-skew.txt
  [ -f "$SKEWED" ] || LC_ALL=C awk 'NR % 2 == 0 { $0 = "HOT~KEY~~~" substr($0, 11) } 1' "$IN" >"$SKEWED"
  IN=$SKEWED
fi
BYTES=$(stat -c %s "$IN")

S=$SLUICE
rss() { awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$1"; }
port=7461

sluice_run() { # $1 = run number; prints "wall_s job_s coord_MiB exec0_MiB exec1_MiB"
  local c=$W/sort-cluster-$1 url=http://127.0.0.1:$port out=$D/out/sort-sluice
  rm -rf "$c" "$out"; mkdir -p "$c"
  /usr/bin/time -v -o "$c/coord.time" "$S" coordinator --listen 127.0.0.1:$port \
    --state-dir "$c/state" >"$c/coord.log" 2>&1 &
  local cpid=$!
  until "$S" jobs --coordinator "$url" >/dev/null 2>&1; do sleep 0.2; done
  local epids=()
  for i in 0 1; do
    if [ -n "${EXEC_MEM:-}" ]; then
      local g=/sys/fs/cgroup/memory/sluice-bench-exec$i
      mkdir -p "$g"; echo "$EXEC_MEM" >"$g/memory.limit_in_bytes"
      (echo $BASHPID >"$g/cgroup.procs"; exec /usr/bin/time -v -o "$c/exec$i.time" "$S" executor \
        --coordinator "$url" --work-dir "$c/exec$i" --slots 1 --listen 127.0.0.1:0) >"$c/exec$i.log" 2>&1 &
    else
      /usr/bin/time -v -o "$c/exec$i.time" "$S" executor --coordinator "$url" \
        --work-dir "$c/exec$i" --slots 1 --listen 127.0.0.1:0 >"$c/exec$i.log" 2>&1 &
    fi
    epids+=($!)
  done
  sleep 1
  local t0=$(date +%s.%N)
  "$S" submit sort --coordinator "$url" --input "$IN" --output "$out" --reducers "$REDUCERS" \
    --task-memory "$TASK_MEMORY" --wait --json >"$c/status.json" 2>"$c/submit.log"
  local t1=$(date +%s.%N)
  "$S" run sort-validate --input "$IN" --output "$out" >"$c/validate.json"
  # Stop the executors and the coordinator (the children of their `time` processes, so that
  # time -v writes their peaks).
  for p in "${epids[@]}"; do pkill -TERM -P "$p" 2>/dev/null || true; done
  wait "${epids[@]}" 2>/dev/null || true
  pkill -TERM -P "$cpid" 2>/dev/null || true; wait "$cpid" 2>/dev/null || true
  local job_s=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['elapsed_s'])" "$c/status.json")
  echo "$(echo "$t1 - $t0" | bc) $job_s $(rss "$c/coord.time") $(rss "$c/exec0.time") $(rss "$c/exec1.time")"
  port=$((port + 1))
}

echo "== Sluice sort, $BYTES bytes, --task-memory $TASK_MEMORY, $REDUCERS reducers, 2 executors x 1 slot"
for r in $(seq 1 "$RUNS"); do
  line=$(sluice_run "$r")
  echo "sluice run $r: wall_s job_s coordinator_MiB executor0_MiB executor1_MiB = $line"
  read -r _ _ _ e0 e1 <<<"$line"
  if [ "${e0:-9999}" -ge "${MAX_EXEC_MIB:-512}" ] || [ "${e1:-9999}" -ge "${MAX_EXEC_MIB:-512}" ]; then
    echo "FAIL: an executor peaked at or above ${MAX_EXEC_MIB:-512} MiB"; exit 1
  fi
done
cat "$W/sort-cluster-$RUNS/validate.json"; echo

if [ "${SKIP_PEERS:-}" != 1 ]; then
  echo "== GNU sort (LC_ALL=C, --parallel=2, -S 4G)"
  for r in $(seq 1 "$RUNS"); do
    rm -f "$D/out/gnu_sort.txt"
    t0=$(date +%s.%N)
    LC_ALL=C /usr/bin/time -v -o "$W/gnu.time" sort -S 4G --parallel=2 -T "$D" -o "$D/out/gnu_sort.txt" "$IN"
    t1=$(date +%s.%N)
    echo "gnu run $r: wall_s $(echo "$t1 - $t0" | bc) rss_MiB $(rss "$W/gnu.time")"
  done
  if "$SPARK_PY" -c "import pyspark" 2>/dev/null; then
    for api in df rdd; do
      echo "== Spark local[2] $api"
      for r in $(seq 1 "$RUNS"); do
        rm -rf "$D/out/spark_sort_$api"
        t0=$(date +%s.%N)
        (cd "$SHARED" && PYSPARK_PYTHON="$SPARK_PY" /usr/bin/time -v -o "$W/spark.time" \
          "$SPARK_PY" spark_sort.py "$api" "$IN" "$D/out/spark_sort_$api" | grep JOB_SECONDS) || true
        t1=$(date +%s.%N)
        echo "spark $api run $r: wall_s $(echo "$t1 - $t0" | bc) driver_rss_MiB $(rss "$W/spark.time")"
      done
    done
  else
    echo "== Spark: $SPARK_PY cannot import pyspark; skipped"
  fi
fi
if [ "$SIZE_GB" != 1 ]; then rm -f "$IN"; rm -rf "$D/out/sort-sluice"; fi
