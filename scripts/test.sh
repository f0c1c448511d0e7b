#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, runs the whole
# suite, compiles the CUDA path, and ends with one summary line.
set -uo pipefail
cd "$(dirname "$0")/.."

# Package installs below must never stop to ask (CI has no standard input).
export DEBIAN_FRONTEND=noninteractive

log=$(mktemp)
status=0

# A real one-node Slurm for tests/slurm.rs (needs root and mknod). If it cannot
# start, those tests fail and say so; they are never skipped.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
slurm_started=0
if as_root scripts/slurm-up.sh >/dev/null; then
  slurm_started=1
else
  echo "scripts/slurm-up.sh failed: the Slurm tests will fail"
fi
# tests/report.rs checks results/index.html in a real headless browser.
command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

# Both crates of the workspace (see Cargo.toml profiles); --locked keeps CI on Cargo.lock.
# Without --all-targets, cargo test builds the examples as plain binaries (--all-targets
# builds them only as test harnesses, and the run below would find no binary).
cargo test --locked --no-fail-fast --workspace 2>&1 | tee "$log" || status=1
# The engine's README example, built by the line above, must run (on CIFAR-10 as the tests find it).
cifar=${INCRPIPE_CIFAR10:-../shared/data/cifar-10-batches-bin}
if ! target/debug/examples/incremental "$cifar" 2>&1 | tail -n 2; then
  echo "the engine example (crates/engine/examples/incremental.rs) failed"
  status=1
fi
if [ "$slurm_started" = 1 ]; then
  as_root scripts/slurm-down.sh || true
fi
# The GPU backend must keep compiling even where no GPU exists.
if ! cargo check --locked --features cuda --lib --bins 2>&1 | tail -n 3; then
  echo "cargo check --features cuda failed"
  status=1
fi

# The kernel tests compare every path the CPU has; name the ones this CPU lacks, which
# passed tests did not check.
for flag_path in "avx2:avx2+fma" "avx512f:avx512"; do
  grep -qw "${flag_path%%:*}" /proc/cpuinfo ||
    echo "kernel path ${flag_path#*:}: not run (this CPU lacks ${flag_path%%:*})"
done

passed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | paste -sd+ - | bc)
failed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | paste -sd+ - | bc)
rm -f "$log"
echo "${passed:-0} passed, ${failed:-0} failed"
exit $status
