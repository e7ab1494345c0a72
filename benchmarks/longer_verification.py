"""Classics and resnet18's neighbours retrained with 4x the default verification's images (16000 x 3 epochs).

The neighbours are the best (gated shortcut) and a middling one (stage 2 depth 1) of
benchmarks/classic_neighbours.py, where none beat resnet18 at 4000 x 3: does more training separate them?
Same recipe otherwise (width 0.5, batch 64, lr 0.05, seeds 0-2, the 10k Fashion-MNIST test split). Every
network is compared with the first one listed, paired over seeds.

    python benchmarks/longer_verification.py 16000                                  # ~13 min on 2 cores
    python benchmarks/longer_verification.py 16000 --networks resnet18 resnet34     # any zoo name, too
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import resnas  # noqa: E402
from resnas._data import load_verification  # noqa: E402
from resnas._verdict import Network, NetworkKind, paired_interval  # noqa: E402
from resnas._verify import Recipe, train_unit  # noqa: E402


def neighbours() -> dict[str, resnas.Arch]:
    """The neighbours measured, by name: two of resnet18's, and resnet34's gated one."""
    r18 = resnas.zoo.get("resnet18")
    shallow = dataclasses.replace(r18.stages[1], depth=1)
    return {"gated resnet18": dataclasses.replace(r18, shortcut="gated"),
            "resnet18 stage2 depth 1": dataclasses.replace(r18, stages=(r18.stages[0], shallow, *r18.stages[2:])),
            "gated resnet34": dataclasses.replace(resnas.zoo.get("resnet34"), shortcut="gated")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train_samples", type=int, nargs="?", default=16000)
    p.add_argument("--networks", nargs="+", default=["resnet18", "gated resnet18", "resnet18 stage2 depth 1"],
                   help="zoo names or the neighbour names above; the first is the reference")
    args = p.parse_args()
    known = neighbours()
    n = args.train_samples
    recipe = Recipe(epochs=3, train_samples=n, batch_size=64, lr=0.05, width=0.5, seeds=3, top=1)
    data = load_verification("fashion-mnist", train_samples=n, seed=0, resolution=32)
    # Scored on the test split, as these measurements always were (verify itself chooses on a held-out split).
    data = dataclasses.replace(data, val_x=data.test_x, val_y=data.test_y)
    print(f"recipe {n} images x 3 epochs, width 0.5, seeds 0-2, {len(data.val_y)} test images", flush=True)
    base: list[float] | None = None
    for name in args.networks:
        arch = resnas.Arch.from_dict((known[name] if name in known else resnas.zoo.get(name)).to_dict())
        started = time.perf_counter()
        net = Network(name, NetworkKind.CLASSIC, arch, 0)
        accs = [train_unit(net, s, recipe, data, torch.device("cpu"))[0].select_accuracy for s in range(3)]
        line = f"{name:<26} {statistics.fmean(accs):.4f} +/- {statistics.stdev(accs):.4f} {[round(a, 4) for a in accs]}"
        if base is None:
            base = accs
        else:
            m, lo, hi = paired_interval([(a - b) * 100 for a, b in zip(accs, base)])
            line += f"  {m:+.2f} [{lo:+.2f}, {hi:+.2f}] points vs {args.networks[0]}"
        print(line + f"  ({time.perf_counter() - started:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
