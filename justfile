# incrpipe tasks. `just --list` shows them.

# The paper's Table 2 (GPU); without a GPU, says what the CPU would need and offers table2-cpu.
reproduce:
    scripts/reproduce.sh

# Table 2 at CPU scale (the README's main command).
reproduce-cpu:
    cargo run --release -- run pipelines/table2-cpu.toml

# The whole test suite, as CI runs it.
test:
    scripts/test.sh

# Runner overhead on 1,000 synthetic stages (figures in docs/performance.md).
bench-runner:
    cargo run --release -- bench runner --jobs 1
    cargo run --release -- bench runner --jobs 2

# Training and inference throughput of one network on this machine.
bench-train net="resnet20":
    cargo run --release -- bench train --net {{net}} --batch 128
    cargo run --release -- bench infer --net {{net}} --batch 500

# The CPU kernels against burn's ops, per layer shape of a network (vgg16: kernels only).
bench-kernels net="resnet20":
    cargo run --release -- bench kernels --net {{net}} {{ if net == "resnet20" { "" } else { "--without-burn" } }}

# incrpipe against the PyTorch reference, interleaved (optional: installs PyTorch, ~5 GB).
bench-vs-torch net="resnet20" rounds="3":
    scripts/bench-vs-torch.sh {{net}} {{rounds}}

# incrpipe's step on burn's libtorch backend (the `tch` feature), for comparison only; the
# first run installs PyPI's torch 2.9.0 into .venv-tch (about 5 GB) and builds into target-tch.
bench-libtorch net="resnet20" batch="128":
    scripts/bench-libtorch.sh {{net}} {{batch}}
