"""GPU training throughput and model-FLOPs utilisation (MFU) of resnas networks, and where the time goes.

For ResNet-50, DenseNet-121, a gated pre-activation ResNet-50 and ResNeXt-50 32x4d at 224 px, each trained
with resnas's own step (SGD + Nesterov, bf16 autocast, channels_last) on random data already on the device:
images/s and MFU, eagerly and under torch.compile. MFU = 3 x forward FLOPs x images/s / the device's dense
bf16 peak, with forward FLOPs = 2 x multiply-adds (`resnas.count(...).macs`; fvcore's FLOP count, the unit of
budgets, counts one per multiply-add, so it would halve MFU). Then the data path: the same steps fed from
pinned host memory (uint8 images copied per batch, as a dataset too large for the device would be) against
data already on the device, as the share of time the GPU waits for data. Last, optionally, a short real
`resnas search` on the GPU with its wall time.

    python benchmarks/gpu_throughput.py                        # on a CUDA machine: everything
    python benchmarks/gpu_throughput.py --device cpu --resolution 64 --steps 2 --no-compile  # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import resnas  # noqa: E402
from resnas._arch import Order, Shortcut  # noqa: E402

# Dense bf16 tensor-core peaks (no sparsity), from the vendors' data sheets.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
             "RTX 4090": 165e12}


def networks() -> dict[str, resnas.Arch]:
    r50 = resnas.zoo.get("resnet50")
    return {"resnet50": r50, "densenet121": resnas.zoo.get("densenet121"),
            "gated_preact_resnet50": r50.replace(shortcut=Shortcut.GATED, order=Order.PRE),
            "resnext50_32x4d": resnas.zoo.get("resnext50_32x4d")}


def peak(device: torch.device, given: float | None) -> float | None:
    if given is not None:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: torch.nn.Module, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """resnas's training step: SGD + Nesterov, bf16 autocast on CUDA, channels_last."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    cuda = device.type == "cuda"

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def timed(step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per step after `warmup` untimed steps (compilation and cuDNN autotuning happen there)."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


@contextlib.contextmanager
def cudnn_benchmark(on: bool) -> Iterator[None]:
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def throughput(name: str, arch: resnas.Arch, args: argparse.Namespace, device: torch.device,
               compiled: bool) -> float:
    """Training images/s of `arch` on data already on the device."""
    torch.manual_seed(0)
    model = resnas.build(arch, num_classes=1000).to(device).to(memory_format=torch.channels_last).train()
    net = torch.compile(model) if compiled else model
    x = torch.randn(args.batch, 3, args.resolution, args.resolution, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    step = make_step(net, device)
    seconds = timed(lambda: step(x, y), args.steps, args.warmup + (5 if compiled else 0), device)
    return args.batch / seconds


def data_wait(arch: resnas.Arch, args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """(images/s with data on the device, images/s fed per batch from pinned host uint8 images)."""
    torch.manual_seed(0)
    model = resnas.build(arch, num_classes=1000).to(device).to(memory_format=torch.channels_last).train()
    step = make_step(model, device)
    n = args.batch * 4
    host = torch.randint(0, 256, (n, 3, args.resolution, args.resolution), dtype=torch.uint8)
    host = host.pin_memory() if device.type == "cuda" else host
    labels = torch.randint(0, 1000, (n,))
    on_device = host.to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1) * 255
    k = [0]

    def batch(source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i = (k[0] % 4) * args.batch
        k[0] += 1
        x = source[i:i + args.batch].to(device, non_blocking=True)
        x = ((x.float() - mean) / std).contiguous(memory_format=torch.channels_last)
        return x, labels[i:i + args.batch].to(device, non_blocking=True)

    resident = timed(lambda: step(*batch(on_device)), args.steps, args.warmup, device)
    streamed = timed(lambda: step(*batch(host)), args.steps, args.warmup, device)
    return args.batch / resident, args.batch / streamed


def search(args: argparse.Namespace) -> str:
    """A short real search on this device, its wall time."""
    cmd = [sys.executable, "-m", "resnas.cli", "search", "--budget", "4GFLOPs", "--trials", str(args.search_trials),
           "--device", args.device, "--out", args.search_out, "--no-classics"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    tail = "\n".join(done.stdout.strip().splitlines()[-4:])
    return f"`resnas {' '.join(cmd[3:])}`: exit {done.returncode}, {wall:.0f} s\n{tail}\n{done.stderr[-500:]}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--peak", type=float, help="the device's dense bf16 peak in FLOP/s (default: by its name)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--search-trials", type=int, default=0, help="then a real search of this many trials")
    p.add_argument("--search-out", default="/tmp/resnas-gpu-search")
    args = p.parse_args()
    device = torch.device(args.device)
    top = peak(device, args.peak)
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {label}; torch {torch.__version__}; bf16 peak "
          f"{'unknown (give --peak)' if top is None else f'{top / 1e12:.0f} TFLOP/s'}; batch {args.batch}, "
          f"{args.resolution} px, {args.steps} timed steps")
    print(f"{'network':<24} {'GMACs':>6} {'mode':>8} {'img/s':>9} {'MFU':>6}")
    with cudnn_benchmark(device.type == "cuda"):
        for name, arch in networks().items():
            macs = resnas.count(arch, resolution=args.resolution, num_classes=1000, in_channels=3).macs
            for compiled in (False, True)[: 1 if args.no_compile else 2]:
                ips = throughput(name, arch, args, device, compiled)
                mfu = "-" if top is None else f"{3 * 2 * macs * ips / top:.1%}"
                print(f"{name:<24} {macs / 1e9:>6.2f} {'compile' if compiled else 'eager':>8} {ips:>9.1f} {mfu:>6}")
        resident, streamed = data_wait(networks()["resnet50"], args, device)
    wait = max(0.0, 1 - streamed / resident)
    print(f"data path (resnet50, eager): {resident:.1f} img/s with data on the device, {streamed:.1f} img/s fed "
          f"from pinned host memory per batch: the GPU waits for data {wait:.1%} of the time")
    if args.search_trials:
        print(search(args))


if __name__ == "__main__":
    main()
