"""Proxy fidelity: does the search's cheap training rank architectures as more training does?

Draws N random architectures of a space that fit the budget (seeded), trains each (i) at several proxies (train
images x epochs, scored on the search's validation split, as a search would) and (ii) at a reference >= 4x the
default proxy's fidelity (more images and epochs, scored on the test split, as `resnas verify` would), then
prints per proxy: Kendall tau and Spearman rho against the reference, the regret of picking the proxy's best
(reference accuracy of the reference's best minus that of the proxy's pick), and its cost; and the same taus
for two trivial predictors, parameters and FLOPs. Everything is trained at the proxy width (0.5 on CPU).

    python benchmarks/proxy_fidelity.py                       # 12 archs of resnet_family.yaml under 4 GFLOPs
    python benchmarks/proxy_fidelity.py --archs 16 --reference 8000x6
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resnas._budget import parse_budget  # noqa: E402
from resnas._build import build, count  # noqa: E402
from resnas._config import SearchConfig  # noqa: E402
from resnas._data import DataSplits, load_verification  # noqa: E402
from resnas._lifecycle import load_training_data  # noqa: E402
from resnas._proposals import screen  # noqa: E402
from resnas._space import SearchSpace  # noqa: E402
from resnas._train import TrainConfig, train_candidate  # noqa: E402
from resnas._verdict import kendall_tau  # noqa: E402


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho: Pearson's correlation of the ranks (average ranks for ties)."""
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    return statistics.correlation(ranks(x), ranks(y))


def train(arch, data: DataSplits, epochs: int, width: float, seed: int, each_epoch: bool) -> tuple[float, float]:
    """Accuracy on data's validation split after training `arch` narrowed to `width`, and seconds taken."""
    torch.manual_seed(seed)
    model = build(arch.narrowed(width), num_classes=data.num_classes, in_channels=data.in_channels)
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.05, seed=seed, evaluate_each_epoch=each_epoch)
    started = time.perf_counter()
    result = train_candidate(model, data, cfg, device="cpu")
    return result.val_accuracy, time.perf_counter() - started


def parse_fidelity(text: str) -> tuple[int, int]:
    images, epochs = text.lower().split("x")
    return int(images), int(epochs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="search_spaces/resnet_family.yaml")
    p.add_argument("--budget", default="4GFLOPs")
    p.add_argument("--archs", type=int, default=12)
    p.add_argument("--proxies", default="1000x1,1000x2,2000x2,4000x2",
                   help="train images x epochs of each proxy, scored on 1000 validation images")
    p.add_argument("--reference", default="8000x4", help="train images x epochs, scored on the test split")
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(2)

    space = SearchSpace.from_yaml(args.space)
    budget = parse_budget(args.budget)
    rng = random.Random(args.seed)
    archs = []
    while len(archs) < args.archs:
        arch = space.sample(rng)
        if screen(arch, space, budget).fits and arch not in archs:
            archs.append(arch)
    proxies = [parse_fidelity(t) for t in args.proxies.split(",")]
    ref_images, ref_epochs = parse_fidelity(args.reference)
    datasets = {n: load_training_data(SearchConfig(space=args.space, budget=budget, out="-", train_samples=n,
                                                   val_samples=1000)) for n, _ in proxies}
    reference = load_verification("fashion-mnist", train_samples=ref_images, resolution=32)
    # Scored on the test split, as these measurements always were (verify itself chooses on a held-out split).
    reference = dataclasses.replace(reference, val_x=reference.test_x, val_y=reference.test_y)
    default = (2000, 2)
    print(f"{len(archs)} random archs of {args.space} under {args.budget} (seed {args.seed}), width x{args.width}, "
          f"2 CPU threads; reference {ref_images} images x {ref_epochs} epochs on the 10000-image test split "
          f"({ref_images * ref_epochs / (default[0] * default[1]):.1f}x the default proxy's image-epochs)")
    rows = []
    for i, arch in enumerate(archs):
        cost = count(arch, resolution=space.resolution, num_classes=space.num_classes, in_channels=space.in_channels)
        accs, secs = [], []
        for n, epochs in proxies:
            acc, s = train(arch, datasets[n], epochs, args.width, args.seed, True)
            accs.append(acc)
            secs.append(s)
        ref, ref_s = train(arch, reference, ref_epochs, args.width, args.seed, False)
        rows.append((arch, cost, accs, secs, ref, ref_s))
        print(f"arch {i:2d}: {arch.shortcut.value:8s} {arch.block.value:10s} {cost.flops / 1e9:5.2f} GFLOPs "
              f"{cost.params / 1e6:6.2f} M params | proxies " + " ".join(f"{a:.3f}" for a in accs)
              + f" | reference {ref:.4f} ({ref_s:.0f}s)", flush=True)
    refs = [r[4] for r in rows]
    best_ref = max(refs)
    print()
    print(f"{'predictor':>22} {'Kendall tau':>11} {'Spearman rho':>12} {'regret (pts)':>12} {'seconds/arch':>12}")
    chosen = None
    for k, (n, epochs) in enumerate(proxies):
        pred = [r[2][k] for r in rows]
        tau, rho = kendall_tau(pred, refs), spearman(pred, refs)
        pick = max(range(len(rows)), key=lambda i: pred[i])
        seconds = statistics.fmean(r[3][k] for r in rows)
        mark = " (default)" if (n, epochs) == default else ""
        print(f"{f'proxy {n}x{epochs}{mark}':>22} {tau:11.2f} {rho:12.2f} {100 * (best_ref - refs[pick]):12.2f} "
              f"{seconds:12.1f}")
        if tau >= 0.7 and (chosen is None or seconds < chosen[3]):
            chosen = (n, epochs, tau, seconds)
    for name, pred in (("params", [float(r[1].params) for r in rows]), ("FLOPs", [float(r[1].flops) for r in rows])):
        pick = max(range(len(rows)), key=lambda i: pred[i])
        print(f"{name:>22} {kendall_tau(pred, refs):11.2f} {spearman(pred, refs):12.2f} "
              f"{100 * (best_ref - refs[pick]):12.2f} {0.0:12.1f}")
    print(f"{'reference':>22} {'':11} {'':12} {'':12} {statistics.fmean(r[5] for r in rows):12.1f}")
    if chosen is None:
        print("no proxy reached Kendall tau 0.7")
    else:
        print(f"cheapest proxy with tau >= 0.7: {chosen[0]} images x {chosen[1]} epochs (tau {chosen[2]:.2f}, "
              f"{chosen[3]:.1f} s per architecture)")


if __name__ == "__main__":
    main()
