# Sourced by the benchmark scripts: start_cluster SLUICE DIR starts a coordinator and two
# executors (1 slot each) on loopback, outside any timed command, as a cluster would be; it
# sets URL, CPID, E1 and E2 and stops them on exit.
start_cluster() {
  local S=$1 C=$2
  rm -rf "$C"; mkdir -p "$C"
  "$S" coordinator --listen 127.0.0.1:0 --state-dir "$C/state" > "$C/coord.out" 2> "$C/coord.err" &
  CPID=$!
  trap 'kill $CPID ${E1:-} ${E2:-} 2>/dev/null || true' EXIT
  for _ in $(seq 50); do grep -q listening "$C/coord.out" 2>/dev/null && break; sleep 0.1; done
  URL=http://$(sed -n 's/^coordinator listening on //p' "$C/coord.out")
  "$S" executor --coordinator "$URL" --work-dir "$C/e1" --slots 1 > "$C/e1.out" 2> "$C/e1.err" & E1=$!
  "$S" executor --coordinator "$URL" --work-dir "$C/e2" --slots 1 > "$C/e2.out" 2> "$C/e2.err" & E2=$!
  sleep 1
}
