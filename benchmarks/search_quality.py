"""Search quality: what a user takes home, per search seed: the verified pick against the best classic.

Runs the product as a user would, once per search seed: `resnas search --space S --budget B --seed N --verify`
(the default job's settings unless flags are passed through), then reads verify/summary.json. The pick is chosen
on the selection split (training images no training saw); the test split scores only the chosen networks.

Prints, per seed: the pick (and who proposed it), its FLOPs against the best classic's (real or scaled), the
paired difference on the selection split with its 95% t interval, the same on the test split, and the verdict;
then how many seeds kept the promise: "not measurably less accurate than the best classic at half its FLOPs or
less", or "measurably more accurate at no more FLOPs".

    python benchmarks/search_quality.py                                    # the default job, seeds 0, 1, 2
    python benchmarks/search_quality.py --budget 1GFLOPs                   # below every classic: scaled ones
    python benchmarks/search_quality.py --search-seeds 0 -- --trials 16    # flags after -- go to the search
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run(out: Path, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One search + verification as a user runs it; verify/summary.json and the trials' origins."""
    cmd = [sys.executable, "-m", "resnas.cli", "search", "--space", args.space, "--budget", args.budget, "--seed",
           str(seed), "--verify", "--out", str(out), *args.search_flags]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"search failed: {done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads((out / "verify" / "summary.json").read_text())
    return summary


def _mean(test: dict[str, Any], label: str) -> str:
    entry = test.get(label)
    return "-" if entry is None else f"{entry['mean']:.4f} +/- {entry['spread']:.4f}"


def _interval(d: dict[str, float] | None) -> str:
    return "-" if d is None else f"{d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"


def kept_promise(summary: dict[str, Any]) -> str | None:
    """Which promise the pick kept against the best classic, or None."""
    gain, nets = summary.get("gain_points"), {n["label"]: n for n in summary["networks"]}
    pick, ref = summary["pick"], summary.get("reference")
    if ref is None or gain is None:
        return None
    ratio = nets[pick]["flops"] / nets[ref]["flops"]
    if gain["ci_high"] >= 0 and ratio <= 0.5:
        return "as accurate at half the FLOPs or less"
    if gain["ci_low"] > 0 and ratio <= 1:
        return "more accurate at no more FLOPs"
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="search_spaces/resnet_family.yaml")
    p.add_argument("--budget", default="4GFLOPs")
    p.add_argument("--search-seeds", default="0,1,2")
    p.add_argument("--keep", metavar="DIR", help="write the run folders to DIR/seed-N (default: a temporary folder)")
    p.add_argument("search_flags", nargs="*", help="after --: more `resnas search` flags (default: none)")
    args = p.parse_args()
    seeds = [int(s) for s in args.search_seeds.split(",")]
    extra = "".join(f" {f}" for f in args.search_flags) or " (the default job's other settings)"
    print(f"resnas search --space {args.space} --budget {args.budget} --verify --seed N{extra}, N in {seeds}; "
          "picked on the selection split, the chosen scored on the test split")
    kept, ratios, gains, test_gains = 0, [], [], []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            t0 = time.monotonic()
            s = run(Path(args.keep or tmp) / f"seed-{seed}", args, seed)
            nets = {n["label"]: n for n in s["networks"]}
            pick, ref = nets[s["pick"]], nets.get(s.get("reference") or "")
            origin = pick.get("origin") or pick["kind"]
            line = (f"seed {seed}: pick {pick['label']} ({origin}) {pick['flops'] / 1e9:.2f} GFLOPs, selection "
                    f"{pick['select_accuracy_mean']:.4f} +/- {pick['select_accuracy_spread']:.4f}")
            if ref is not None and ref is not pick:
                ratio = pick["flops"] / ref["flops"]
                ratios.append(ratio)
                line += (f"; best classic {ref['label']} {ref['flops'] / 1e9:.2f} GFLOPs: FLOPs ratio {ratio:.2f}, "
                         f"selection {_interval(s['gain_points'])} pts, test {_mean(s['test'], pick['label'])} vs "
                         f"{_mean(s['test'], ref['label'])}: {_interval(s['test_gain_points'])} pts")
                if s["gain_points"]:
                    gains.append(s["gain_points"]["mean"])
                if s["test_gain_points"]:
                    test_gains.append(s["test_gain_points"]["mean"])
            elif ref is not None:
                ratios.append(1.0)
                line += f"; the pick is the best classic (test {_mean(s['test'], pick['label'])})"
            promise = kept_promise(s)
            kept += promise is not None
            print(line + f"; promise: {promise or 'not kept'}; {time.monotonic() - t0:.0f}s", flush=True)
            print(f"  verdict: {s['verdict']}", flush=True)
            for c in s["classics"]:
                print(f"    {c}", flush=True)
    print()
    if ratios:
        print(f"FLOPs of the pick / the best classic's: median {statistics.median(ratios):.2f} "
              f"(per seed {', '.join(f'{r:.2f}' for r in ratios)})")
    if gains:
        print(f"pick - best classic, mean over seeds: selection {statistics.fmean(gains):+.2f} pts"
              + (f", test {statistics.fmean(test_gains):+.2f} pts" if test_gains else ""))
    print(f"promise kept in {kept} of {len(seeds)} seeds; {time.monotonic() - started:.0f}s in all")


if __name__ == "__main__":
    main()
