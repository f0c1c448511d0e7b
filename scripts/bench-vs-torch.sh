#!/usr/bin/env bash
# Side-by-side CPU throughput of incrpipe (release build) and the PyTorch reference
# (scripts/torch_reference.py), interleaved so that the machine's drift hits both alike.
# An optional tool for issue 6's ratio, not part of CI: the first run installs PyTorch from
# PyPI into .venv-torch (about 5 GB with its CUDA packages).
#
#   scripts/bench-vs-torch.sh [NET] [ROUNDS]      e.g. scripts/bench-vs-torch.sh resnet20 3
set -euo pipefail
cd "$(dirname "$0")/.."
net=${1:-resnet20}
rounds=${2:-3}
case $net in vgg16*) train_batch=32 ;; *) train_batch=128 ;; esac
venv=.venv-torch
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch
fi
cargo build --release --quiet
incrpipe=${CARGO_TARGET_DIR:-target}/release/incrpipe
# "<what> <net> ... on <device>: <median> images/s, fastest step <fastest> images/s"
line() { grep "images/s" | head -1 | sed -E 's/ \(median.*= ([0-9.]+) images\/s\)/, fastest step \1 images\/s/'; }
for r in $(seq "$rounds"); do
    for what in "train --batch $train_batch" "infer --batch 500"; do
        # shellcheck disable=SC2086
        echo "round $r: $("$incrpipe" bench $what --net "$net" --steps 5 --warmup 2 | line)"
        # shellcheck disable=SC2086
        echo "round $r: $("$venv/bin/python" scripts/torch_reference.py $what --net "$net" \
            --steps 5 --warmup 2 2>/dev/null | line)"
    done
done
