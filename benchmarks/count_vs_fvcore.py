"""Analytic `resnas.count` vs fvcore's trace-based count: time ratio over many distinct architectures.

Target: count is >= 1000x faster than fvcore (FlopCountAnalysis on an already built module; building the
module would only add to fvcore's side). Both counts are checked equal on every architecture.

    .venv/bin/python benchmarks/count_vs_fvcore.py [--per-space 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from fvcore.nn import FlopCountAnalysis

import resnas
from resnas import SearchSpace

ROOT = Path(__file__).resolve().parent.parent


def fvcore_seconds(model: torch.nn.Module, resolution: int, in_channels: int) -> tuple[int, float]:
    start = time.perf_counter()
    analysis = FlopCountAnalysis(model.eval(), torch.randn(1, in_channels, resolution, resolution))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    total = int(analysis.total())
    return total, time.perf_counter() - start


def count_seconds(arch: resnas.Arch, resolution: int, classes: int, in_channels: int) -> tuple[int, float]:
    reps = 50
    start = time.perf_counter()
    for _ in range(reps):
        cost = resnas.count(arch, resolution=resolution, num_classes=classes, in_channels=in_channels)
    return cost.flops, (time.perf_counter() - start) / reps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-space", type=int, default=20, help="distinct architectures per space")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=64,
                        help="input size for both counters (fvcore at 224 on the largest nets is slow)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ratios = []
    print(f"{'space':<20} {'arch':>4} {'GFLOPs':>8} {'fvcore ms':>10} {'count us':>9} {'ratio':>8}")
    for space_file in ("resnet_family.yaml", "cifar_family.yaml"):
        space = SearchSpace.from_yaml(ROOT / "search_spaces" / space_file)
        seen: set[resnas.Arch] = set()
        while len(seen) < args.per_space:
            arch = space.sample(rng)
            if arch in seen or resnas.count(arch, resolution=32).params > 60_000_000:
                continue  # distinct, and small enough to build quickly on a 2-core machine
            seen.add(arch)
            with torch.device("meta"):
                model = resnas.build(arch, num_classes=space.num_classes, in_channels=space.in_channels)
            model = model.to_empty(device="cpu")
            fv, t_fv = fvcore_seconds(model, args.resolution, space.in_channels)
            ours, t_ours = count_seconds(arch, args.resolution, space.num_classes, space.in_channels)
            if fv != ours:
                print(f"MISMATCH fvcore {fv} != count {ours} for {arch.to_json()}", file=sys.stderr)
                return 1
            ratios.append(t_fv / t_ours)
            print(f"{space_file:<20} {len(seen):>4} {ours / 1e9:>8.3f} {t_fv * 1e3:>10.1f} {t_ours * 1e6:>9.0f} "
                  f"{ratios[-1]:>8.0f}")
    print(f"\n{len(ratios)} architectures, counts identical; speed-up count vs fvcore: "
          f"median {statistics.median(ratios):.0f}x, min {min(ratios):.0f}x, max {max(ratios):.0f}x "
          f"(target >= 1000x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
