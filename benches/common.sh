# Shared by the benchmark scripts: paths, the data generators of ../shared/bench (built from a
# copy, since shared/ is not ours to write into) and the sluice binary to measure.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-$REPO/../shared/bench}
D=${BENCH_DATA:-/tmp/bench-data}
W=${BENCH_WORK:-/tmp/sluice-bench}
mkdir -p "$D/out" "$W"
if [ ! -d "$W/gen" ]; then cp -a "$SHARED/gen" "$W/"; chmod -R u+w "$W/gen"; fi
(cd "$W/gen" && cargo build --release --quiet)
if [ -z "${SLUICE:-}" ]; then
  (cd "$REPO" && cargo build --release --quiet --bin sluice)
  SLUICE=${CARGO_TARGET_DIR:-$REPO/target}/release/sluice
fi
