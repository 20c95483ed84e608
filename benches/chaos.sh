#!/usr/bin/env bash
# Soak: the chaos test of crates/cli/tests/chaos.rs (coordinator + 3 executor processes; word
# count and sort over 64+ splits; in each run one executor killed with SIGKILL at a random moment
# and a fresh one started; output and `_SUCCESS` checked exactly) for $ITERATIONS iterations,
# each with its own moments and victims drawn from $CHAOS_SEED. CI runs 3 iterations. The test
# profile is the workspace's optimized one, so this shares the CI build.
# Usage: benches/chaos.sh   env: ITERATIONS (20), CHAOS_SEED (default: the clock; printed)
set -euo pipefail
cd "$(dirname "$0")/.."
export CHAOS_ITERATIONS=${ITERATIONS:-20}
[ -n "${CHAOS_SEED:-}" ] && export CHAOS_SEED
cargo test --locked -p sluice-cli --test chaos \
  wordcount_and_sort_are_exact_with_executors_killed_at_random_moments -- --nocapture
