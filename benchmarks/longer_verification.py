"""resnet18 against two of its neighbours with 4x the default verification's images (16000 x 3 epochs).

The neighbours are the best (gated shortcut) and a middling one (stage 2 depth 1) of
benchmarks/classic_neighbours.py, where none beat resnet18 at 4000 x 3: does more training separate them?
Same recipe otherwise (width 0.5, batch 64, lr 0.05, seeds 0-2, the 10k Fashion-MNIST test split).

    python benchmarks/longer_verification.py 16000     # ~13 min on 2 cores
"""
import dataclasses, statistics, sys, time, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import resnas
from resnas._data import load_verification
from resnas._verify import Network, NetworkKind, Recipe, paired_interval, train_unit
r18 = resnas.zoo.get("resnet18")
cands = {"resnet18": r18, "gated resnet18": dataclasses.replace(r18, shortcut="gated"),
         "resnet18 stage2 depth 1": dataclasses.replace(r18, stages=(r18.stages[0], dataclasses.replace(r18.stages[1], depth=1), *r18.stages[2:]))}
n = int(sys.argv[1]) if len(sys.argv) > 1 else 16000
recipe = Recipe(epochs=3, train_samples=n, batch_size=64, lr=0.05, width=0.5, seeds=3, top=1)
data = load_verification("fashion-mnist", train_samples=n, seed=0, resolution=32)
print(f"recipe {n} images x 3 epochs, width 0.5, seeds 0-2, {len(data.val_y)} test images", flush=True)
base = None
for name, arch in cands.items():
    arch = resnas.Arch.from_dict(arch.to_dict())
    t = time.perf_counter()
    accs = [train_unit(Network(name, NetworkKind.CLASSIC, arch, 0), s, recipe, data, torch.device("cpu"))[0].test_accuracy for s in range(3)]
    line = f"{name:<26} {statistics.fmean(accs):.4f} +/- {statistics.stdev(accs):.4f} {[round(a,4) for a in accs]}"
    if base is None: base = accs
    else:
        m, lo, hi = paired_interval([(a-b)*100 for a, b in zip(accs, base)]); line += f"  {m:+.2f} [{lo:+.2f}, {hi:+.2f}] points vs resnet18"
    print(line + f"  ({time.perf_counter()-t:.0f}s)", flush=True)
