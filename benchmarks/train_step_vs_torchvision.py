"""Train-step time of resnas-built ResNet-50 / DenseNet-121 vs torchvision's own modules.

Target: torchvision time / resnas time >= 0.97 (resnas no more than ~3% slower). Steps of the two models
are interleaved in one run so that machine noise hits both alike; the median of each is compared.

    .venv/bin/python benchmarks/train_step_vs_torchvision.py [--batch 8] [--resolution 128] [--steps 6]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torchvision

import resnas


def step_fn(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> Callable[[], float]:
    """A function that runs one timed training step of `model` on (x, y) and returns its seconds."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    use_amp = device.type == "cuda"

    def step() -> float:
        """One forward, backward and SGD update, synchronised so the time covers all of it."""
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return step


def main() -> int:
    """Time both implementations of each network, interleaved, and print the medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    print(f"device {device}, batch {args.batch}, {args.resolution}x{args.resolution}, {args.steps} timed steps each")
    for name in ("resnet50", "densenet121"):
        torch.manual_seed(0)
        x = torch.randn(args.batch, 3, args.resolution, args.resolution, device=device).to(memory_format=fmt)
        y = torch.randint(0, 1000, (args.batch,), device=device)
        models = {
            "torchvision": getattr(torchvision.models, name)(),
            "resnas": resnas.build(resnas.zoo.get(name)),
        }
        steps = {k: step_fn(m.to(device, memory_format=fmt).train(), x, y, device) for k, m in models.items()}
        for step in steps.values():  # warm-up
            step()
        times: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(args.steps):
            for k, step in steps.items():
                times[k].append(step())
        tv, ours = statistics.median(times["torchvision"]), statistics.median(times["resnas"])
        print(f"{name:<12} torchvision {tv * 1e3:8.1f} ms/step   resnas {ours * 1e3:8.1f} ms/step   "
              f"ratio torchvision/resnas {tv / ours:.3f} (target >= 0.97)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
