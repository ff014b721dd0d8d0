#!/usr/bin/env python3
"""PyTorch's training speed on the paper's AlexNet: the anchor our step bench is compared with.

The same network as `alexnet train` (docs/network.md): conv1 96 k11 s4, ReLU, LRN, max pool
3/2; conv2 256 k5 p2 groups 2, ReLU, LRN, pool; conv3 384 k3 p1; conv4 384 k3 p1 groups 2; conv5
256 k3 p1 groups 2, ReLU, pool; fc6 4096, ReLU, dropout 0.5; fc7 4096, ReLU, dropout; fc8. Our
LRN's alpha is not divided by the window, PyTorch's is, so PyTorch gets alpha * size. SGD with
momentum 0.9 and weight decay 5e-4, mean cross-entropy, synthetic data already on the device
(so the number is compute only, like the step bench's first table).

    python3 benches/torch_alexnet.py                       # GPU: fp32 (TF32 off), TF32, bf16 AMP
    python3 benches/torch_alexnet.py --device cpu --model quickstart --batch 64

Prints one Markdown row per precision: images/s and ms/step, and a last line of JSON.
"""
import argparse
import json
import time

import torch
import torch.nn as nn


def alexnet(widths, classes, input_size, groups=2, lrn=True):
    c1, c2, c3, c4, c5, f6, f7 = widths

    def norm():
        return [nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0)] if lrn else []

    features = nn.Sequential(
        nn.Conv2d(3, c1, 11, stride=4),
        nn.ReLU(inplace=True),
        *norm(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(c1, c2, 5, padding=2, groups=groups),
        nn.ReLU(inplace=True),
        *norm(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(c2, c3, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c3, c4, 3, padding=1, groups=groups),
        nn.ReLU(inplace=True),
        nn.Conv2d(c4, c5, 3, padding=1, groups=groups),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
    )
    with torch.no_grad():
        side = features(torch.zeros(1, 3, input_size, input_size)).shape[-1]
    return nn.Sequential(
        features,
        nn.Flatten(),
        nn.Linear(c5 * side * side, f6),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(f6, f7),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(f7, classes),
    )


MODELS = {
    # The paper's network: 227x227 input, 1000 classes.
    "paper": dict(widths=(96, 256, 384, 384, 256, 4096, 4096), classes=1000, input_size=227),
    # pipelines/quickstart.toml's: 67x67 input, 10 classes.
    "quickstart": dict(widths=(16, 64, 96, 96, 64, 256, 256), classes=10, input_size=67),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(model, device, batch, input_size, classes, steps, warmup, precision):
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 3, input_size, input_size, generator=g).to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    loss_fn = nn.CrossEntropyLoss()
    amp = precision == "bf16"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync(device)
    secs = time.perf_counter() - t
    if not torch.isfinite(loss):
        raise SystemExit(f"the loss is {loss.item()}: the benchmark is broken")
    return batch * steps / secs, secs / steps * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", choices=sorted(MODELS), default="paper")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--precisions", default=None, help="comma list of fp32,tf32,bf16")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = MODELS[args.model]
    precisions = (args.precisions or ("fp32,tf32,bf16" if device.type == "cuda" else "fp32")).split(",")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    torch.manual_seed(0)
    model = alexnet(spec["widths"], spec["classes"], spec["input_size"]).to(device)
    print(f"PyTorch {torch.__version__} on {name}: {args.model} AlexNet, batch {args.batch}, "
          f"{args.steps} timed steps after {args.warmup}")
    print("| framework | precision | images/s | ms/step |")
    print("|---|---|---|---|")
    out = {"torch": torch.__version__, "device": name, "model": args.model, "batch": args.batch}
    for p in precisions:
        rate, ms = bench(model, device, args.batch, spec["input_size"], spec["classes"],
                         args.steps, args.warmup, p)
        print(f"| PyTorch | {p} | {rate:.0f} | {ms:.2f} |", flush=True)
        out[p] = rate
    print(json.dumps(out))


if __name__ == "__main__":
    main()
