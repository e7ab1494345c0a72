"""Is the best classic a local optimum? Its one-step neighbours in the space, verified as `resnas verify` does.

Issue 10 part 5 asks for a default search that beats the best verified classic under 4 GFLOPs (resnet18 on
this CPU) by more than the seed spread. The searches measured in results/benchmarks/search_quality-cpu.txt
never did. This measures whether *any* architecture next to resnet18 does: every one-step move of it in
search_spaces/resnet_family.yaml that fits the budget (each dimension moved to an adjacent value of its list:
stem width, block, shortcut, order, each stage's depth and width, width multiplier, dropout, survival; a
move that makes new dimensions apply, e.g. block -> bottleneck, draws them with a fixed seed), each trained
from scratch with the default verification recipe (4000 Fashion-MNIST images x 3 epochs, width 0.5, batch
64, lr 0.05, seeds 0-2) and scored on the 10k test split. Prints, per neighbour, its mean test accuracy and
the paired difference to resnet18 with a 95% Student-t interval over the seeds, then how many beat it.

    python benchmarks/classic_neighbours.py                      # every neighbour (~30 min on 2 cores)
    python benchmarks/classic_neighbours.py --only order stages[0].depth   # some dimensions
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import resnas  # noqa: E402
from resnas._budget import format_flops  # noqa: E402
from resnas._data import load_verification  # noqa: E402
from resnas._verdict import Network, NetworkKind, paired_interval  # noqa: E402
from resnas._verify import Recipe, train_unit  # noqa: E402

SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "resnet_family.yaml"


def neighbours(space: resnas.SearchSpace, arch: resnas.Arch, budget: int,
               only: list[str] | None) -> list[tuple[str, resnas.Arch]]:
    """`arch`'s one-step moves in the space (what the search's local moves try) under `budget`."""
    moves = space.neighbours(arch, random.Random(0))
    return [(m.label, m.arch) for m in moves if (not only or m.dimension in only) and space.flops(m.arch) <= budget]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classic", default="resnet18")
    p.add_argument("--budget", default="4GFLOPs")
    p.add_argument("--only", nargs="*", help="move only these dimensions (names as `resnas space` shows them)")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    space = resnas.SearchSpace.from_yaml(str(SPACE))
    budget = resnas.parse_budget(args.budget)
    base = resnas.zoo.get(args.classic)
    recipe = Recipe(epochs=3, train_samples=4000, batch_size=64, lr=0.05, width=0.5, seeds=args.seeds, top=1)
    data = load_verification("fashion-mnist", train_samples=recipe.train_samples, seed=0, resolution=32)
    # Scored on the test split, as these measurements always were (verify itself chooses on a held-out split).
    data = dataclasses.replace(data, val_x=data.test_x, val_y=data.test_y)
    moves = neighbours(space, base, budget, args.only)
    print(f"{args.classic} ({format_flops(space.flops(base))}) and its {len(moves)} one-step neighbours in "
          f"{SPACE.name} under {format_flops(budget)}; recipe {recipe.train_samples} images x {recipe.epochs} "
          f"epochs, width {recipe.width}, seeds 0-{args.seeds - 1}, scored on {len(data.val_y)} test images",
          flush=True)
    baseline = _scores(base, args.classic, recipe, data)
    print(f"{args.classic}: {statistics.fmean(baseline):.4f} +/- {statistics.stdev(baseline):.4f} "
          f"{[round(a, 4) for a in baseline]}", flush=True)
    wins = 0
    for label, arch in moves:
        started = time.perf_counter()
        scores = _scores(arch, label, recipe, data)
        mean, low, high = paired_interval([(a - b) * 100 for a, b in zip(scores, baseline)])
        wins += low > 0
        print(f"{label:<38} {format_flops(space.flops(arch)):>13}  {statistics.fmean(scores):.4f}  "
              f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] points  ({time.perf_counter() - started:.0f}s)", flush=True)
    print(f"{wins} of {len(moves)} neighbours beat {args.classic} (95% interval above 0); the seed spread of "
          f"{args.classic} is {100 * statistics.stdev(baseline):.2f} points")


def _scores(arch: resnas.Arch, label: str, recipe: Recipe, data: Any) -> list[float]:
    net = Network(label, NetworkKind.CLASSIC, arch, 0)
    return [train_unit(net, seed, recipe, data, torch.device("cpu"))[0].select_accuracy
            for seed in range(recipe.seeds)]


if __name__ == "__main__":
    main()
