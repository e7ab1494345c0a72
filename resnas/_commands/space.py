"""`resnas space PATH [--budget B]`: a space's dimensions, size, exact FLOP range and share under a budget."""

from __future__ import annotations

import argparse
import math
import random
import time

from rich.console import Console
from rich.table import Table

from resnas._budget import BUDGET_FORMS, format_flops, parse_budget
from resnas._errors import UserError
from resnas._space import SearchSpace

# z for a two-sided 95% interval.
_Z95 = 1.959964
# Samples at most: the 95% interval of a share is within +-0.3 points by then, and each sample takes about
# 0.1 ms; more would only keep the terminal waiting.
MAX_SAMPLES = 100_000


def _wilson(hits: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of a binomial proportion; unlike the normal one it stays sane at 0 or n hits."""
    p = hits / n
    centre = (p + _Z95**2 / (2 * n)) / (1 + _Z95**2 / n)
    half = _Z95 * math.sqrt(p * (1 - p) / n + _Z95**2 / (4 * n * n)) / (1 + _Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _dimension_table(space: SearchSpace) -> Table:
    """One row per dimension: name, values, count, when it applies."""
    table = Table(title=f"{space.source}: input {space.resolution}x{space.resolution}x{space.in_channels}, "
                        f"{space.num_classes} classes", title_justify="left")
    table.add_column("dimension")
    table.add_column("values")
    table.add_column("count", justify="right")
    table.add_column("applies when")
    for dim in space.dimensions():
        table.add_row(dim.name, str(dim.domain), "continuous" if dim.continuous else str(dim.domain.count),
                      dim.applies)
    return table


def _run(args: argparse.Namespace) -> int:
    """Print the dimension table, size, exact FLOP range and, with samples, the share under the budget."""
    budget = parse_budget(args.budget) if args.budget is not None else None
    if not 0 <= args.samples <= MAX_SAMPLES:
        raise UserError(f"--samples: {args.samples} must be >= 0 and <= {MAX_SAMPLES:,}")
    space = SearchSpace.from_yaml(args.path)
    from resnas._build import count  # torch is only needed once the space is known to be valid

    out = Console(highlight=False, soft_wrap=True)
    out.print(_dimension_table(space))

    size = space.size()
    continuous = space.continuous_dimensions()
    note = f" (continuous, counted once: {', '.join(continuous)})" if continuous else ""
    out.print(f"size       {size:,} architectures = {size:.3g}{note}")

    start = time.perf_counter()
    extremes = space.flops_range(count)
    took = time.perf_counter() - start
    out.print(f"FLOPs      {format_flops(extremes.min_flops)} to {format_flops(extremes.max_flops)}, exact "
              f"({extremes.counted} corner architectures counted in {took:.2f} s)")
    if budget is not None:
        out.print(f"budget     {format_flops(budget)} = {budget:,} FLOPs")
    if args.samples == 0:
        return 0

    rng = random.Random(args.seed)
    start = time.perf_counter()
    archs = [space.sample(rng) for _ in range(args.samples)]
    flops = [space.flops(a, count) for a in archs]
    took = time.perf_counter() - start
    n = len(flops)
    ranked = sorted(flops)
    quantiles = ", ".join(f"p{q} {format_flops(ranked[min(n - 1, n * q // 100)])}" for q in (5, 50, 95))
    out.print(f"samples    {n:,} (seed {args.seed}) sampled and counted in {took:.2f} s "
              f"({took / n * 1e6:.0f} us each); FLOPs {quantiles}")
    if budget is None:
        return 0
    if budget < extremes.min_flops:
        smallest = format_flops(extremes.min_flops)
        out.print(f"under budget: nothing; the smallest architecture needs {smallest}")
        return 0
    fits = [f <= budget for f in flops]
    # Sampling is uniform per decision, not per architecture (a dense net has fewer width choices than a
    # residual one), so weighting each sample by 1 / its probability estimates the share of the space.
    weights = [1 / space.probability(a) for a in archs]
    share = sum(w for w, ok in zip(weights, fits) if ok) / sum(weights)
    effective = round(sum(weights) ** 2 / sum(w * w for w in weights))
    lo, hi = _wilson(round(share * effective), effective)
    out.print(f"under budget {share:.2%} of the space's architectures (weighted samples; 95% interval about "
              f"{lo:.2%} to {hi:.2%}, {effective:,} effective samples)")
    hits = sum(fits)
    lo, hi = _wilson(hits, n)
    out.print(f"             {hits / n:.2%} of random-search proposals ({hits:,} of {n:,}; 95% interval "
              f"{lo:.2%} to {hi:.2%})")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `space` sub-command."""
    p = subparsers.add_parser(
        "space", help="describe a search space: dimensions, size, FLOP range, share under a budget",
        description="Print a search space's dimensions, its exact size and FLOP range, and the share of "
                    "it under a FLOP budget, estimated by counting sampled architectures.")
    p.add_argument("path", metavar="PATH",
                   help="search-space YAML file, e.g. search_spaces/resnet_family.yaml")
    p.add_argument("--budget", metavar="B", help=f"FLOP budget: {BUDGET_FORMS}")
    p.add_argument("--samples", metavar="N", type=int, default=5000,
                   help="architectures to sample for the FLOP distribution (default 5000; 0 skips)")
    p.add_argument("--seed", metavar="S", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=_run)
