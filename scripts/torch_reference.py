#!/usr/bin/env python3
"""PyTorch reference of `incrpipe bench train|infer`: the same networks, step and optimiser.

Used only for the side-by-side speed ratio of issue 6 (`just bench-vs-torch`); not a
dependency of incrpipe and not run in CI. Mirrors src/engine/model/{spec,net}.rs and
src/engine/bench.rs:
  - ResNet-(6n+2) with option-A shortcuts (stride-2 subsampling, zero channels appended),
    conv3x3 without bias + BatchNorm (momentum 0.1, eps 1e-5) + ReLU, global average pool, dense;
  - VGG-16 with a BatchNorm after each conv (convs with bias), 2x2 max pools, two dense
    layers of 64 * base units, dense classifier;
  - a training step = forward, cross-entropy + 1e-4 * sum of squared conv/dense kernels,
    backward, RMSProp (lr 1e-4, rho 0.9, eps 1e-7, no momentum), on a fixed synthetic batch;
  - `--threads 2` by default (the incrpipe benchmark uses both cores of the CI machine).
Prints the same line and JSON shape as `incrpipe bench`.
"""
import argparse
import json
import re
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        sc = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.pad:
            sc = F.pad(sc, (0, 0, 0, 0, 0, self.pad))
        return F.relu(y + sc)


def conv_bn_relu(cin, cout, bias):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU())


def build(name):
    m = re.fullmatch(r"(resnet(\d+)|vgg16)(?:-w(\d+))?", name)
    if not m:
        raise SystemExit(f"unknown net {name!r}: resnet<6n+2>[-w<base>] or vgg16[-w<base>]")
    if m.group(2):
        depth = int(m.group(2))
        n, base = (depth - 2) // 6, int(m.group(3) or 16)
        layers, cin = [conv_bn_relu(3, base, False)], base
        for stage in range(3):
            cout = base << stage
            for b in range(n):
                layers.append(Block(cin, cout, 2 if stage > 0 and b == 0 else 1))
                cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
    else:
        base = int(m.group(3) or 64)
        layers, cin = [], 3
        for mult, convs in [(1, 2), (2, 2), (4, 3), (8, 3), (8, 3)]:
            for _ in range(convs):
                layers.append(conv_bn_relu(cin, base * mult, True))
                cin = base * mult
            layers.append(nn.MaxPool2d(2, 2))
        hidden = 64 * base
        layers += [nn.Flatten(), nn.Linear(cin, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                   nn.ReLU(), nn.Linear(hidden, 10)]
    net = nn.Sequential(*layers)
    for mod in net.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(mod.weight, mode="fan_in", nonlinearity="relu")
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
    return net


def synthetic(batch):
    i = torch.arange(batch * 3072, dtype=torch.int64)
    x = ((i * 7919) % 1000).float().div(500.0).sub(1.0).reshape(batch, 3, 32, 32)
    y = torch.arange(batch) % 10
    return x, y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["train", "infer"])
    ap.add_argument("--net", default="resnet20")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = build(a.net)
    x, y = synthetic(a.batch)
    kernels = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-4, alpha=0.9, eps=1e-7, momentum=0.0)
    times = []
    for i in range(a.warmup + max(a.steps, 1)):
        t0 = time.perf_counter()
        if a.what == "train":
            net.train()
            loss = F.cross_entropy(net(x), y) + 1e-4 * sum((k * k).sum() for k in kernels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            net.eval()
            with torch.inference_mode():
                net(x)
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    m, fastest = statistics.median(times), min(times)
    # Same line as `incrpipe bench`, so that scripts/bench-vs-torch.sh reads both alike.
    print(f"{a.what} {a.net} batch {a.batch} on torch-cpu ({a.threads} threads): "
          f"{a.batch / m:.1f} images/s (median step {m:.4f} s over {len(times)} steps; "
          f"fastest {fastest:.4f} s = {a.batch / fastest:.1f} images/s)")
    print(json.dumps({"what": a.what, "net": a.net, "batch": a.batch, "steps": len(times),
                      "median_step_seconds": m, "fastest_step_seconds": fastest,
                      "images_per_sec": a.batch / m,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
