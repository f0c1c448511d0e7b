#!/usr/bin/env bash
# Side-by-side CPU throughput of incrpipe (release build) and the PyTorch reference
# (scripts/torch_reference.py), interleaved so that the machine's drift hits both alike.
# An optional tool for issues 6 and 17, not part of CI: the first run installs PyTorch from
# PyPI into .venv-torch (about 5 GB with its CUDA packages).
#
#   scripts/bench-vs-torch.sh [NET] [ROUNDS]      e.g. scripts/bench-vs-torch.sh resnet20 5
#   KERNELS="avx2+fma avx512" scripts/bench-vs-torch.sh resnet20 5
#
# KERNELS: incrpipe kernel paths (INCRPIPE_KERNELS values) to run in each round, in turn
# (default: auto, the best the CPU has). The last lines are each side's geometric mean over
# the rounds and its ratio to PyTorch's.
set -euo pipefail
cd "$(dirname "$0")/.."
net=${1:-resnet20}
rounds=${2:-3}
kernels=${KERNELS:-auto}
case $net in vgg16*) train_batch=32 ;; *) train_batch=128 ;; esac
venv=.venv-torch
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch
fi
cargo build --release --quiet
incrpipe=${CARGO_TARGET_DIR:-target}/release/incrpipe
echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs)," \
    "$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -cE '^avx512') avx512 flags"
# "<what> <net> ... on <device>: <median> images/s, fastest step <fastest> images/s"
line() { grep "images/s" | head -1 | sed -E 's/ \(median.*= ([0-9.]+) images\/s\)/, fastest step \1 images\/s/'; }
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for r in $(seq "$rounds"); do
    for what in "train --batch $train_batch" "infer --batch 500"; do
        for k in $kernels; do
            # shellcheck disable=SC2086
            out=$(INCRPIPE_KERNELS=$k "$incrpipe" bench $what --net "$net" --steps 5 --warmup 2 | line)
            echo "round $r: [incrpipe $k] $out" | tee -a "$results"
        done
        # shellcheck disable=SC2086
        out=$("$venv/bin/python" scripts/torch_reference.py $what --net "$net" \
            --steps 5 --warmup 2 2>/dev/null | line)
        echo "round $r: [torch] $out" | tee -a "$results"
    done
done
# Geometric means of the medians, per side and benchmark, and the ratio to PyTorch.
awk '{
    for (e = 3; e <= NF && $e !~ /\]$/; e++) {}
    side = $3; for (i = 4; i <= e; i++) side = side " " $i
    gsub(/[\[\]]/, "", side)
    what = $(e + 1); ips = ""
    for (j = e + 1; j < NF; j++) if ($(j + 1) ~ /^images\/s/) { ips = $j; break }
    key = what SUBSEP side; s[key] += log(ips); n[key]++; sides[side] = 1; whats[what] = 1
} END {
    for (w in whats) {
        t = exp(s[w SUBSEP "torch"] / n[w SUBSEP "torch"])
        for (sd in sides) if ((w SUBSEP sd) in n) {
            g = exp(s[w SUBSEP sd] / n[w SUBSEP sd])
            printf "geometric mean over %d rounds: %s %s %.1f images/s, ratio to torch %.2f\n", n[w SUBSEP sd], w, sd, g, g / t
        }
    }
}' "$results" | sort
