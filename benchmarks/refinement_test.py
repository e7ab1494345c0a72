"""pycls's refinement test: do random samples of a refined space have a better error EDF than the original's?

Reads two `resnas sweep` folders, the original space's and the refined space's (`resnas analyze --refine`), and
prints per budget they share: models, mean / median / 25th-percentile validation error, the fraction of models
under the original's median error, the largest EDF gap (Kolmogorov-Smirnov statistic, signed: positive where the
refined EDF lies above, i.e. more of its models reach low error), and the refined - original mean-error
difference with a 95% bootstrap interval (the same resampling `resnas analyze` uses). Only what `analyze`
uses enters: complete, unpruned, sampled trials at the run's full epochs.

    python benchmarks/refinement_test.py results/sweep-cpu/original results/sweep-cpu/refined
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resnas._analyze import bootstrap_difference, collect, expand, load_run  # noqa: E402


def errors_by_budget(sweep: Path) -> dict[int, list[float]]:
    """Validation error in points of every model `analyze` would use, per budget."""
    samples = collect([load_run(p) for p in expand([sweep])])
    return {s.budget: [100 * (1 - m.accuracy) for m in s.models] for s in samples}


def signed_ks(refined: list[float], original: list[float]) -> float:
    """max over e of EDF_refined(e) - EDF_original(e), or its most negative value where that is larger."""
    grid = sorted(set(refined) | set(original))
    gaps = [sum(x <= e for x in refined) / len(refined) - sum(x <= e for x in original) / len(original)
            for e in grid]
    return max(gaps, key=abs)


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(100 * q) - 1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("original", type=Path)
    p.add_argument("refined", type=Path)
    p.add_argument("--resamples", type=int, default=2000)
    args = p.parse_args()
    original, refined = errors_by_budget(args.original), errors_by_budget(args.refined)
    print(f"refinement test: {args.refined} against {args.original} (validation error, points)")
    print(f"{'budget':>8} {'space':>8} {'models':>6} {'mean':>6} {'median':>6} {'p25':>6} {'<orig med':>9}")
    for budget in sorted(original.keys() & refined.keys()):
        o, r = original[budget], refined[budget]
        cut = statistics.median(o)
        for name, e in (("original", o), ("refined", r)):
            under = sum(x < cut for x in e) / len(e)
            print(f"{budget / 1e9:>7g}G {name:>8} {len(e):>6} {statistics.mean(e):>6.2f} "
                  f"{statistics.median(e):>6.2f} {quantile(e, 0.25):>6.2f} {under:>9.0%}")
        diff, low, high = bootstrap_difference(r, o, resamples=args.resamples, seed=0)
        ks = signed_ks(r, o)
        better = high is not None and high < 0
        worse = low is not None and low > 0
        verdict = "refined better" if better else "refined worse" if worse else "no measurable difference"
        print(f"{'':>8} mean error refined - original {diff:+.2f} [{low:+.2f}, {high:+.2f}]; signed KS {ks:+.2f}: "
              f"{verdict}")


if __name__ == "__main__":
    main()
