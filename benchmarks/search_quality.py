"""Search quality: does the search beat the classics it contains, verified, and does TPE beat random search?

Runs `resnas search` in several arms (by default TPE and random sampling, both with the default local moves,
and TPE without them) at equal trials over several seeds (classics first, as every new study), then verifies as `resnas verify` does: each run's best searched network (proxy top-1 that is
no classic) and every classic are retrained from scratch with one recipe over the verification seeds and scored
on the test split. A network trained with the same recipe and seed gives the same result (CPU training is
deterministic), so each (architecture, seed) unit is trained once and shared by the runs that need it.

Prints, per run: the searched best's verified accuracy against the best classic's with a paired 95% t interval;
then each arm against the first over the search seeds, and how many trained trials each run needed before a
searched network's proxy accuracy passed the best classic's.

    python benchmarks/search_quality.py                        # 4 GFLOPs, resnet_family.yaml, default proxy
    python benchmarks/search_quality.py --trials 16 --search-seeds 0,1,2 --verify 4000x3 --arms tpe,random
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resnas._arch import Arch  # noqa: E402
from resnas._data import load_verification  # noqa: E402
from resnas._verify import Network, NetworkKind, Recipe, paired_interval, train_unit  # noqa: E402


def search(out: Path, args: argparse.Namespace, arm: str, seed: int) -> list[dict[str, str]]:
    """One search's trials.csv rows (run as a user would); `arm` is SAMPLER[/LOCAL_MOVES_SHARE[/PRUNER]]."""
    sampler, moves, pruner = (arm.split("/") + ["", ""])[:3]
    cmd = [sys.executable, "-m", "resnas.cli", "search", "--space", args.space, "--budget", args.budget,
           "--trials", str(args.trials), "--sampler", sampler, "--seed", str(seed), "--out", str(out),
           *(["--local-moves", moves] if moves else []), *(["--pruner", pruner] if pruner else [])]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"search failed: {done.stderr[-2000:]}")
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def trials_to_beat(rows: list[dict[str, str]]) -> int | None:
    """Trained trials until a searched one's proxy accuracy passes every classic's (None: never)."""
    trained = [r for r in sorted(rows, key=lambda r: int(r["number"])) if r["state"] in ("complete", "pruned")]
    best_classic = max((float(r["val_accuracy"]) for r in trained if r["name"] and r["state"] == "complete"),
                       default=None)
    if best_classic is None:
        return None
    for k, r in enumerate(trained, 1):
        if not r["name"] and r["state"] == "complete" and float(r["val_accuracy"]) > best_classic:
            return k
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="search_spaces/resnet_family.yaml")
    p.add_argument("--budget", default="4GFLOPs")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--search-seeds", default="0,1,2")
    p.add_argument("--arms", default="tpe,random,tpe/0",
                   help="searches to compare: SAMPLER[/LOCAL_MOVES_SHARE[/PRUNER]] (default 0.5, hyperband)")
    p.add_argument("--verify", default="4000x3", help="verification recipe: train images x epochs")
    p.add_argument("--verify-seeds", type=int, default=3)
    p.add_argument("--baselines", help="comma-separated classics to verify (default: every classic a run trained); "
                                       "verification is deterministic, so a known best classic can stand alone")
    p.add_argument("--width", type=float, default=0.5)
    args = p.parse_args()
    torch.set_num_threads(2)
    images, epochs = (int(v) for v in args.verify.lower().split("x"))
    recipe = Recipe(epochs=epochs, train_samples=images, batch_size=64, lr=0.05, width=args.width,
                    seeds=args.verify_seeds, top=1)
    data = load_verification("fashion-mnist", train_samples=images, resolution=32)
    seeds = [int(s) for s in args.search_seeds.split(",")]
    print(f"search: {args.space} under {args.budget}, {args.trials} trials, default proxy; verify: {images} images "
          f"x {epochs} epochs, width x{args.width}, seeds 0..{args.verify_seeds - 1}, on the 10000-image test split")
    cache: dict[tuple[str, int], float] = {}

    def verified(net: Network) -> list[float]:
        accs = []
        for s in range(args.verify_seeds):
            key = (json.dumps(net.arch.to_dict(), sort_keys=True), s)
            if key not in cache:
                unit, _ = train_unit(net, s, recipe, data, torch.device("cpu"))
                cache[key] = unit.test_accuracy
            accs.append(cache[key])
        return accs

    arms = args.arms.split(",")
    results: dict[str, list[tuple[float, float, int | None]]] = {arm: [] for arm in arms}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for arm in arms:
                rows = search(Path(tmp) / f"{arm.replace('/', '-')}-{seed}", args, arm, seed)
                complete = sorted((r for r in rows if r["state"] == "complete"), key=lambda r: -float(r["val_accuracy"]))
                classics = {r["name"]: r for r in complete
                            if r["name"] and (not args.baselines or r["name"] in args.baselines.split(","))}
                searched = next((r for r in complete if not r["name"]), None)
                scores = {name: verified(Network(name, NetworkKind.CLASSIC, Arch.from_dict(json.loads(r["arch"])),
                                                 int(r["flops"])))
                          for name, r in classics.items()}
                best_classic = max(scores, key=lambda n: statistics.fmean(scores[n]))
                line = f"{arm:14s} seed {seed}: "
                if searched is None:
                    print(line + "no searched network completed", flush=True)
                    continue
                mine = verified(Network(f"#{searched['number']}", NetworkKind.SEARCHED,
                                        Arch.from_dict(json.loads(searched["arch"])), int(searched["flops"])))
                diffs = [100 * (a - b) for a, b in zip(mine, scores[best_classic])]
                mean, low, high = paired_interval(diffs)
                need = trials_to_beat(rows)
                results[arm].append((statistics.fmean(mine), statistics.fmean(scores[best_classic]), need))
                print(line + f"searched best #{searched['number']} ({searched.get('origin') or 'sampler'}, proxy "
                      f"{float(searched['val_accuracy']):.4f}) "
                      f"verified {statistics.fmean(mine):.4f} +/- {statistics.stdev(mine):.4f}; best classic "
                      f"{best_classic} {statistics.fmean(scores[best_classic]):.4f} +/- "
                      f"{statistics.stdev(scores[best_classic]):.4f}; gain {mean:+.2f} pts [{low:+.2f}, {high:+.2f}]; "
                      f"trained trials until a searched proxy accuracy passed the best classic's: "
                      f"{need if need is not None else 'never'}", flush=True)
    print()
    for arm, rs in results.items():
        if rs:
            gains = [100 * (m - c) for m, c, _ in rs]
            beat = sum(g > 0 for g in gains)
            print(f"{arm:14s}: searched best {statistics.fmean(m for m, _, _ in rs):.4f} verified on average; "
                  f"gain over the best classic {statistics.fmean(gains):+.2f} pts (per seed "
                  f"{', '.join(f'{g:+.2f}' for g in gains)}); ahead in {beat} of {len(rs)} runs")
    first = arms[0]
    for arm in arms[1:]:
        if len(results[first]) == len(results[arm]) >= 2:
            diffs = [100 * (a[0] - b[0]) for a, b in zip(results[first], results[arm])]
            mean, low, high = paired_interval(diffs)
            print(f"{first} - {arm} (searched best, verified): {mean:+.2f} pts [{low:+.2f}, {high:+.2f}] paired "
                  f"over {len(diffs)} search seeds")
    print(f"{len(cache)} verification units trained; {time.monotonic() - started:.0f}s in all")


if __name__ == "__main__":
    main()
