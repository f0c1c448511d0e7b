#!/usr/bin/env bash
# incrpipe's training step on burn's libtorch backend (burn-tch), for issue 6's comparison
# only: the same network and step as `incrpipe bench train`, on libtorch's CPU kernels.
# burn-tch 0.21 links against libtorch 2.9.0, which here only PyPI's torch 2.9.0 provides
# (about 5 GB with its CUDA packages): the first run installs it into .venv-tch and builds
# incrpipe with the `tch` feature into its own target directory (about 10 minutes on 2 cores).
#
#   scripts/bench-libtorch.sh [NET] [BATCH] [STEPS]      e.g. scripts/bench-libtorch.sh resnet20 128 5
set -euo pipefail
cd "$(dirname "$0")/.."
net=${1:-resnet20}
batch=${2:-128}
steps=${3:-5}
venv=.venv-tch
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "torch==2.9.0"
fi
torch_lib=$("$venv/bin/python" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))" 2>/dev/null)
target=${TCH_TARGET_DIR:-target-tch}
PATH="$PWD/$venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1 CARGO_TARGET_DIR="$target" \
    cargo build --release --quiet --features tch
LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$target/release/incrpipe" bench train --device libtorch --net "$net" --batch "$batch" \
    --steps "$steps" --warmup 2
