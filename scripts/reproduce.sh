#!/usr/bin/env bash
# `just reproduce`: Table 2 at the paper's scale on the GPUs of this machine. Without a
# GPU it measures this CPU's training speed, says how long the paper's scale would take,
# and offers the CPU-scale pipeline instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  cargo build --release --features cuda
  exec target/release/incrpipe run pipelines/table2.toml
fi

cargo build --release
echo "No GPU found (nvidia-smi lists none). Measuring this CPU's ResNet-20 training speed..."
ips=$(target/release/incrpipe bench train --net resnet20 --batch 128 --warmup 1 --steps 3 | tail -n 1 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["images_per_sec"])')
# Table 2 is 15 runs (5 networks x 3 methods). Per run, assume ~100 epochs of 45,000
# images (the paper's Figure 3 shows 100-150 epochs for ResNet-56), in ResNet-20 units of
# work: ResNet-32/44/56 cost 1.6/2.2/2.8x a ResNet-20 image, VGG-16 (batch 32) ~7.7x.
python3 - "$ips" <<'PY'
import sys
ips = float(sys.argv[1])
units = 3 * (1 + 1.6 + 2.2 + 2.8 + 7.7)   # 3 methods per network
seconds = units * 100 * 45000 / ips
print(f"This CPU trains ResNet-20 at {ips:.0f} images/s. Table 2 at the paper's scale would need")
print(f"about {seconds/86400:.0f} days of this machine (estimate: ~100 epochs per run).")
PY
echo "The CPU-scale pipeline runs the same three methods in minutes:"
echo "  cargo run --release -- run pipelines/table2-cpu.toml"
if [ -t 0 ]; then
  read -r -p "Run it now? [y/N] " answer
  case "$answer" in
    [yY]*) exec target/release/incrpipe run pipelines/table2-cpu.toml ;;
  esac
fi
