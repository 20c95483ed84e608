#!/usr/bin/env bash
# Read throughput, in one sitting: a ~1 GiB Parquet dataset and the 1 GiB text corpus, each read
# from local disk and from a loopback S3 server (s3s-fs), by Sluice's built-in `count` job
# (embedded: `sluice run count`) and by pyarrow reading the same files (benches/read_pyarrow.py:
# parquet.read_table / csv.read_csv, one string column per line). Page cache warm.
# Timings and RSS come from ../shared/bench/bench.py; it writes results/results.jsonl under $W.
# Every Sluice count is checked against pyarrow's row count for the same files (exit 1 if not).
# Usage: benches/read_throughput.sh
#   env: BENCH_DATA, BENCH_WORK, BENCH_S3 (s3s-fs root), RUNS, PY (python with pyarrow),
#        SLUICE (a built sluice binary; default: cargo build --release in this repo),
#        S3S_FS (the s3s-fs binary), PQ_ROWS (rows of the Parquet dataset, 90M ≈ 1.0 GiB)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$REPO/../shared/bench}
D=${BENCH_DATA:-/tmp/bench-data}
W=${BENCH_WORK:-/tmp/sluice-bench}
S3ROOT=${BENCH_S3:-/tmp/bench-data-s3}
O=$D/out
RUNS=${RUNS:-5}
PY=${PY:-$HOME/.cache/sluice-venv/bin/python}
S3S_FS=${S3S_FS:-$HOME/.cargo/bin/s3s-fs}
PQ_ROWS=${PQ_ROWS:-90000000}
PQ=pq$((PQ_ROWS / 1000000))m
mkdir -p "$O" "$W"

# Data. The generator is built from a copy: shared/ is not ours to write into.
if [ ! -d "$W/gen" ]; then cp -a "$SHARED/gen" "$W/"; chmod -R u+w "$W/gen"; fi
(cd "$W/gen" && cargo build --release --quiet)
[ -d "$D/text1g" ] || "$W/gen/target/release/gen_text" "$D/text1g" 1024 8 43
"$PY" -c "import pyarrow, numpy" 2>/dev/null || "$PY" -m pip install pyarrow numpy
[ -d "$D/$PQ" ] || "$PY" "$SHARED/gen_parquet.py" "$D/$PQ" "$PQ_ROWS" 8 5

if [ -z "${SLUICE:-}" ]; then
  (cd "$REPO" && cargo build --release --quiet --bin sluice)
  SLUICE=${CARGO_TARGET_DIR:-$REPO/target}/release/sluice
fi
S=$SLUICE

# The S3 side: bucket `bench` of an s3s-fs root holds the same files, hard-linked (copied if the
# root is on another filesystem). s3s-fs keeps each object's ETag in a sidecar that PutObject
# writes; without one it MD5-hashes the whole object on every GET (ranged or not) and every
# listing, so the script writes the sidecar a PutObject would have written.
for ds in text1g "$PQ"; do
  mkdir -p "$S3ROOT/bench/$ds"
  for f in "$D/$ds"/*; do
    t=$S3ROOT/bench/$ds/$(basename "$f")
    [ "$t" -ef "$f" ] || ln -f "$f" "$t" 2>/dev/null || cp -f "$f" "$t"
  done
done
"$PY" - "$S3ROOT" bench <<'EOF'
import base64, hashlib, json, os, sys
root, bucket = sys.argv[1], sys.argv[2]
b64 = lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")
for dirpath, _, files in os.walk(os.path.join(root, bucket)):
    for name in files:
        path = os.path.join(dirpath, name)
        key = os.path.relpath(path, os.path.join(root, bucket))
        side = os.path.join(root, f".bucket-{b64(bucket)}.object-{b64(key)}.internal.json")
        if os.path.exists(side) and os.path.getmtime(side) >= os.path.getmtime(path):
            continue
        h = hashlib.md5()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        with open(side, "w") as f:
            json.dump({"e_tag": h.hexdigest()}, f)
EOF
PORT=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$S3S_FS" --host 127.0.0.1 --port "$PORT" --access-key benchkey --secret-key benchsecret \
  "$S3ROOT" > "$W/s3s-fs.log" 2>&1 &
S3PID=$!
trap 'kill $S3PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=benchkey \
  AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true

cd "$W"   # bench.py writes results/ relative to the working directory
B="python3 $SHARED/bench.py"
echo "sitting start: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A BYTES=([text1g]=$(cat "$D"/text1g/* | wc -c) [$PQ]=$(cat "$D/$PQ"/* | wc -c))
declare -A KIND=([text1g]=text [$PQ]=parquet)
declare -A FMT=([text1g]="" [$PQ]="--input-format parquet")
NAMES=()
for ds in text1g "$PQ"; do
  for src in local s3; do
    if [ $src = local ]; then in=$D/$ds; else in=s3://bench/$ds; fi
    out=$O/rt_sluice_${src}_$ds
    # shellcheck disable=SC2086
    $B "read_sluice_${src}_$ds" "${BYTES[$ds]}" --runs "$RUNS" --clean "$out" -- \
      "$S" run count --input "$in" ${FMT[$ds]} --output "$out" --format tsv --top 0
    # pyarrow's S3 text read makes one GET per 1 MiB block (~1,000 GETs, ~35 s): 3 runs there.
    r=$RUNS; if [ $src = s3 ] && [ $ds = text1g ] && [ "$r" -gt 3 ]; then r=3; fi
    $B "read_pyarrow_${src}_$ds" "${BYTES[$ds]}" --runs "$r" -- \
      "$PY" "$REPO/benches/read_pyarrow.py" "${KIND[$ds]}" "$in"
    NAMES+=("read_sluice_${src}_$ds" "read_pyarrow_${src}_$ds")
    if [ $src = s3 ] && [ $ds = text1g ]; then
      # The same read with the stream buffered to 64 MiB requests (Sluice's split size).
      $B "read_pyarrow-buf64MiB_${src}_$ds" "${BYTES[$ds]}" --runs "$RUNS" -- \
        "$PY" "$REPO/benches/read_pyarrow.py" text "$in" 64
      NAMES+=("read_pyarrow-buf64MiB_${src}_$ds")
    fi
    # The same count both ways: Sluice's output (last timed run) vs pyarrow's ROWS= (last run).
    sl=$(cat "$out"/part-*.tsv | awk -F'\t' '$1 == "records" { n += $2 } END { print n + 0 }')
    for n in "${NAMES[@]}"; do
      case $n in read_pyarrow*_${src}_$ds) ;; *) continue ;; esac
      pa=$(python3 -c 'import json, re, sys
recs = [json.loads(l) for l in open("results/results.jsonl")]
rec = [r for r in recs if r["name"] == sys.argv[1]][-1]
print(re.findall(r"ROWS=(\d+)", rec["last_output"])[-1])' "$n")
      if [ "$sl" = "$pa" ] && [ "$sl" -gt 0 ]; then
        echo "VERIFY $src $ds: sluice count $sl == $n rows $pa"
      else
        echo "VERIFY $src $ds: sluice count $sl != $n rows $pa"; exit 1
      fi
    done
  done
done
echo "sitting end: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "s3s-fs peak RSS (whole sitting): $(grep VmHWM /proc/$S3PID/status)"

# The sitting's table (last record of each name).
python3 - "${NAMES[@]}" <<'EOF'
import json, sys
recs = {}
for line in open("results/results.jsonl"):
    r = json.loads(line)
    recs[r["name"]] = r
print("| engine | source | dataset | median wall s | MB/s | read-only s | peak RSS MiB | runs (s) |")
print("|---|---|---|---:|---:|---:|---:|---|")
for n in sys.argv[1:]:
    r = recs[n]
    _, eng, src, ds = n.split("_", 3)
    print(f"| {eng} | {src} | {ds} | {r['median_s']:.2f} | {r['mb_per_s']:.0f} | "
          f"{r['median_job_s'] if r['median_job_s'] is not None else ''} | {r['tree_rss_mib']} | "
          f"{' '.join(f'{w:.2f}' for w in r['walls'])} |")
EOF
