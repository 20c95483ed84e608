#!/usr/bin/env bash
# Recovery: word count of the 1 GiB corpus of ../shared/bench (`gen_text text1g 1024 8 43`) on
# a coordinator and 2 executor processes (1 slot each) on loopback, clean, and again with one
# executor killed with SIGKILL once half of the maps are done (a fresh executor started at
# once, as a cluster manager would); the coordinator declares an executor lost after
# $EXECUTOR_TIMEOUT without heartbeats. Both outputs are compared word for word.
# Usage: benches/recovery.sh   env: BENCH_DATA, SLUICE, RUNS (3), EXECUTOR_TIMEOUT (3s)
set -euo pipefail
RUNS=${RUNS:-3}
EXECUTOR_TIMEOUT=${EXECUTOR_TIMEOUT:-3s}
source "$(dirname "$0")/common.sh"
IN=$D/text1g
[ -d "$IN" ] || "$W/gen/target/release/gen_text" "$IN" 1024 8 43
S=$SLUICE
port=7561
counts() { cat "$1"/part-* | LC_ALL=C sort | md5sum | cut -d' ' -f1; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

run() { # $1 = clean|kill, $2 = run number; prints "wall_s maps_rerun"
  local c=$W/recovery-$1-$2 url=http://127.0.0.1:$port out=$D/out/recovery-$1
  rm -rf "$c" "$out"; mkdir -p "$c"
  "$S" coordinator --listen 127.0.0.1:$port --state-dir "$c/state" \
    --executor-timeout "$EXECUTOR_TIMEOUT" >"$c/coord.log" 2>&1 &
  local cpid=$!
  until "$S" jobs --coordinator "$url" >/dev/null 2>&1; do sleep 0.2; done
  local epids=()
  for i in 0 1; do
    "$S" executor --coordinator "$url" --work-dir "$c/exec$i" --slots 1 \
      --listen 127.0.0.1:0 >"$c/exec$i.log" 2>&1 &
    epids+=($!)
  done
  sleep 1
  local t0=$(date +%s.%N)
  local job=$("$S" submit wordcount --coordinator "$url" --input "$IN" --output "$out" --format tsv)
  if [ "$1" = kill ]; then
    while :; do
      local st=$("$S" status "$job" --coordinator "$url" --json)
      local done=$(echo "$st" | field maps_done) total=$(echo "$st" | field maps_total)
      [ $((done * 2)) -ge "$total" ] && break
      sleep 0.05
    done
    kill -9 "${epids[1]}"
    "$S" executor --coordinator "$url" --work-dir "$c/exec2" --slots 1 \
      --listen 127.0.0.1:0 >"$c/exec2.log" 2>&1 &
    epids+=($!)
  fi
  while :; do
    "$S" status "$job" --coordinator "$url" --json >"$c/status.json"
    case $(field state <"$c/status.json") in
      succeeded) break ;;
      failed|cancelled) echo "FAIL: job $job: $(cat "$c/status.json")" >&2; exit 1 ;;
    esac
    sleep 0.05
  done
  local t1=$(date +%s.%N)
  local rerun=$(python3 -c "
import json,sys
st=json.load(open(sys.argv[1]))
print(sum(len(t['history'])-1 for t in st['tasks'] if t['task_id'].startswith('m-')))" "$c/status.json")
  for p in "${epids[@]}"; do kill "$p" 2>/dev/null || true; done
  kill "$cpid" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "$(echo "$t1 - $t0" | bc) $rerun"
  port=$((port + 1))
}

echo "== word count 1 GiB, 2 executors x 1 slot, executor timeout $EXECUTOR_TIMEOUT"
for r in $(seq 1 "$RUNS"); do
  read -r clean _ <<<"$(run clean "$r")"
  read -r killed rerun <<<"$(run kill "$r")"
  a=$(counts "$D/out/recovery-clean"); b=$(counts "$D/out/recovery-kill")
  [ "$a" = "$b" ] || { echo "FAIL: outputs differ ($a vs $b)"; exit 1; }
  echo "run $r: clean ${clean}s, killed at 50% ${killed}s, map attempts rerun $rerun, outputs equal ($a)"
done
