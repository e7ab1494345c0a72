"""What a verification judges and how: the networks and their units (network x seed, a verify.csv row each),
and the summary over them: mean and spread per network, each against the most accurate paired over seeds
(Student-t: with 3 seeds a bootstrap would be far too narrow), the pick (`Pick`), the verdict against the best
classic, a line per classic, and the proxy's rank fidelity (Kendall tau)."""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from resnas._arch import Arch

# Below this rank correlation the proxy's ranking does not predict the verified one well enough to trust.
TRUSTED_TAU = 0.5


# The pick may be at most this many points below the most accurate network on average (and not measurably
# below it): with 3 seeds a 95% interval spans about +/-1 point, so the interval alone would accept networks
# visibly worse on average; half a point is about the seed spread of one network at the default recipe.
MARGIN = 0.5


class Pick(str, enum.Enum):
    """Which verified network a verification hands over."""

    CHEAPEST = "cheapest"  # the fewest FLOPs among those as accurate as the most accurate (`as_accurate`)
    ACCURATE = "accurate"  # the most accurate on the selection split


class NetworkKind(str, enum.Enum):
    """Where a verified network comes from."""

    SEARCHED = "searched"
    CLASSIC = "classic"


@dataclass(frozen=True)
class Network:
    """One network to verify: its label, where it comes from, its searched (full-width) arch and proxy score."""

    label: str  # "#12" for trial 12, or the classic's name ("resnet18", "resnet18@w0.5")
    kind: NetworkKind
    arch: Arch
    flops: int  # at the deployment input
    trial: int | None = None
    proxy_accuracy: float | None = None
    origin: str = ""  # who proposed the trial (trials.csv's origin: "scaled resnet18@d0.5", "move of #0: ...")

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "kind": self.kind.value, "arch": self.arch.to_dict(), "flops": self.flops,
                "trial": self.trial, "proxy_accuracy": self.proxy_accuracy, "origin": self.origin}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Network:
        return cls(d["label"], NetworkKind(d["kind"]), Arch.from_dict(d["arch"]), int(d["flops"]), d["trial"],
                   d["proxy_accuracy"], d.get("origin", ""))


@dataclass(frozen=True)
class UnitResult:
    """One network trained with one seed, scored on the selection split: a verify.csv row."""

    label: str
    kind: NetworkKind
    seed: int
    select_accuracy: float
    train_seconds: float
    params: int  # of the trained (width-scaled) network

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value, "select_accuracy": round(self.select_accuracy, 5),
                "train_seconds": round(self.train_seconds, 2)}

    @classmethod
    def from_row(cls, r: Mapping[str, str]) -> UnitResult:
        return cls(r["label"], NetworkKind(r["kind"]), int(r["seed"]), float(r["select_accuracy"]),
                   float(r["train_seconds"]), int(r["params"]))


UNIT_COLUMNS = ("label", "kind", "seed", "select_accuracy", "train_seconds", "params")


# -- the verdict ----------------------------------------------------------------------------------


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long sequences (ties in either count as neither concordant nor discordant)."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("kendall_tau needs two sequences of the same length, at least 2")
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else 0.0


# Student's t, two-sided 95% (the 0.975 quantile) by degrees of freedom: a few seeds need its wide tails.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045,
         2.042)


def paired_interval(diffs: Sequence[float]) -> tuple[float, float, float]:
    """The mean of paired differences and its 95% Student-t confidence interval (needs 2+ pairs)."""
    n = len(diffs)
    if n < 2:
        raise ValueError("a confidence interval needs at least 2 pairs")
    mean = statistics.fmean(diffs)
    half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.96) * statistics.stdev(diffs) / math.sqrt(n)
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Interval:
    """A paired difference in accuracy points: its mean and 95% confidence interval."""

    mean: float
    low: float
    high: float
    pairs: int

    def __str__(self) -> str:
        return f"{self.mean:+.2f} points [{self.low:+.2f}, {self.high:+.2f}]"

    def to_dict(self) -> dict[str, float]:
        return {"mean": round(self.mean, 4), "ci_low": round(self.low, 4), "ci_high": round(self.high, 4),
                "pairs": self.pairs}


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Interval | None:
    """a - b in accuracy points over the seeds both have (None with fewer than 2)."""
    seeds = sorted(a.keys() & b.keys())
    if len(seeds) < 2:
        return None
    return Interval(*paired_interval([100 * (a[s] - b[s]) for s in seeds]), len(seeds))


@dataclass(frozen=True)
class Score:
    """A network's verified accuracy on the selection split over its seeds."""

    network: Network
    accuracies: dict[int, float]  # by seed

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies.values())

    @property
    def spread(self) -> float:
        """Sample standard deviation over seeds (0 with one seed)."""
        values = list(self.accuracies.values())
        return statistics.stdev(values) if len(values) > 1 else 0.0


def as_accurate(diff: Interval | None, margin: float) -> bool:
    """Whether a network `diff` points from the most accurate counts as as accurate: not measurably below it
    (its interval reaches 0) and at most `margin` points below on average."""
    return diff is not None and diff.high >= 0 and diff.mean >= -margin


@dataclass(frozen=True)
class Summary:
    """What a verification concludes (accuracies on the selection split unless said otherwise)."""

    scores: list[Score]  # those that ran every seed, most accurate first, then the dropped ones
    pick: Score
    rule: Pick
    margin: float
    vs_best: dict[str, Interval | None]  # each network minus the most accurate
    reference: Score | None  # the best classic (real or scaled)
    gain: Interval | None  # the pick minus the reference
    verdict: str
    classics: list[str]  # the pick against each classic, a line each
    tau: float | None  # proxy accuracy vs verified mean, over the networks the study trained
    warnings: list[str] = field(default_factory=list)
    # Test-split accuracies by seed of the networks chosen (`chosen`), and the pick minus the reference there.
    test: dict[str, dict[int, float]] = field(default_factory=dict)
    test_gain: Interval | None = None

    @property
    def best(self) -> Score:
        return self.scores[0]

    @property
    def chosen(self) -> list[Score]:
        """The networks the test split scores: the pick, the most accurate and the best classic."""
        out: list[Score] = []
        for s in (self.pick, self.best, self.reference):
            if s is not None and s not in out:
                out.append(s)
        return out

    @property
    def pick_reason(self) -> str:
        """Why the pick, in words."""
        if self.rule is Pick.ACCURATE or self.pick is self.best:
            return f"{self.pick.network.label} is the most accurate network verified"
        return (f"{self.pick.network.label} is the cheapest network as accurate as the most accurate, "
                f"{self.best.network.label} ({self.vs_best[self.pick.network.label]}, at "
                f"{self.pick.network.flops / self.best.network.flops:.2f}x its FLOPs; as accurate: not measurably "
                f"below and at most {self.margin:g} points below on average)")

    def to_dict(self) -> dict[str, Any]:
        best = self.best.network.flops
        return {
            "networks": [{**s.network.to_dict(), "select_accuracy_mean": round(s.mean, 5),
                          "select_accuracy_spread": round(s.spread, 5), "seeds": len(s.accuracies),
                          "vs_best_points": None if (d := self.vs_best.get(s.network.label)) is None else d.to_dict(),
                          "flops_vs_best": round(s.network.flops / best, 4)}
                         for s in self.scores],
            "selected_on": "the selection split: training images held out of every training run",
            "best": self.best.network.label, "pick": self.pick.network.label, "pick_rule": self.rule.value,
            "margin_points": self.margin, "pick_reason": self.pick_reason,
            "reference": None if self.reference is None else self.reference.network.label,
            "gain_points": None if self.gain is None else self.gain.to_dict(),
            "verdict": self.verdict, "classics": self.classics,
            "test": {label: {"mean": round(statistics.fmean(acc.values()), 5),
                             "spread": round(statistics.stdev(acc.values()), 5) if len(acc) > 1 else 0.0,
                             "seeds": {str(k): round(v, 5) for k, v in sorted(acc.items())}}
                     for label, acc in self.test.items()},
            "test_gain_points": None if self.test_gain is None else self.test_gain.to_dict(),
            "kendall_tau": self.tau, "warnings": self.warnings,
        }


def summarize(networks: Sequence[Network], units: Sequence[UnitResult], *, rule: Pick = Pick.CHEAPEST,
              margin: float = MARGIN) -> Summary:
    """Scores, each against the most accurate, the pick, the pick against the classics, the proxy's fidelity."""
    by_label: dict[str, dict[int, float]] = {}
    for u in units:
        by_label.setdefault(u.label, {})[u.seed] = u.select_accuracy
    # Networks dropped from the race (fewer seeds) rank after those that ran every seed.
    scores = sorted((Score(n, by_label[n.label]) for n in networks if n.label in by_label),
                    key=lambda s: (-len(s.accuracies), -s.mean, s.network.flops))
    if not scores:
        raise ValueError("summarize needs at least one trained unit")
    full = [s for s in scores if len(s.accuracies) == len(scores[0].accuracies)]
    best = full[0]
    vs_best = {s.network.label: paired(s.accuracies, best.accuracies) for s in full if s is not best}
    equal = [best] + [s for s in full if s is not best and as_accurate(vs_best[s.network.label], margin)]
    pick = best if rule is Pick.ACCURATE else min(equal, key=lambda s: (s.network.flops, -s.mean))
    classics = [s for s in full if s.network.kind is NetworkKind.CLASSIC]
    reference = classics[0] if classics else None
    gain = None if reference is None or reference is pick else paired(pick.accuracies, reference.accuracies)
    proxied = [s for s in scores if s.network.proxy_accuracy is not None]
    tau = kendall_tau([s.network.proxy_accuracy or 0.0 for s in proxied], [s.mean for s in proxied]) \
        if len(proxied) >= 3 else None
    return Summary(scores, pick, rule, margin, vs_best, reference, gain, _verdict(pick, reference, gain),
                   [_against(pick, s) for s in scores if s.network.kind is NetworkKind.CLASSIC and s is not pick],
                   tau, _warnings(scores, tau))


def _warnings(scores: Sequence[Score], tau: float | None) -> list[str]:
    """Weak proxy fidelity, and networks dropped from the race."""
    warnings = []
    proxied = sum(s.network.proxy_accuracy is not None for s in scores)
    if tau is not None and tau < TRUSTED_TAU:
        warnings.append(f"the proxy ranks these networks poorly (Kendall tau {tau:.2f} < {TRUSTED_TAU}): its "
                        "accuracies are weak evidence; search with more --epochs and --train-samples (or "
                        "--proxy-width 1) to buy fidelity")
    if tau is None:
        warnings.append(f"proxy fidelity needs 3+ networks the study trained; {proxied} here")
    dropped = [s.network.label for s in scores if len(s.accuracies) < len(scores[0].accuracies)]
    if dropped:
        warnings.append(f"{', '.join(dropped)}: far behind after the first seed, so not trained on the other "
                        "seeds (their means are of fewer seeds; --drop-below sets how far)")
    return warnings


def _verdict(pick: Score, reference: Score | None, gain: Interval | None) -> str:
    """The pick against the best classic, in one sentence."""
    p = pick.network.label
    if reference is None:
        return f"nothing to compare: no classic was verified; the pick is {p}"
    c = reference.network.label
    if reference is pick:
        return f"the best classic, {c}, is the pick: no network verified was as accurate at fewer FLOPs"
    if gain is None:
        return "one seed cannot tell a difference from noise: verify with --seeds 3 or more"
    ratio = pick.network.flops / reference.network.flops
    cost = f"at {ratio:.2f}x its FLOPs" + (" (half or less)" if ratio <= 0.5 else "")
    numbers = f"{gain} paired over {gain.pairs} seeds"
    if gain.low > 0:
        return f"{p} is more accurate than the best classic, {c}: {numbers}, {cost}"
    if gain.high < 0:
        return f"{p} is less accurate than the best classic, {c}: {numbers}, {cost}"
    return f"{p} is as accurate as the best classic, {c} ({numbers}), {cost}"


def _against(pick: Score, classic: Score) -> str:
    """One classic against the pick: beaten, dominated (as accurate for fewer FLOPs), matched or not matched."""
    c, p = classic.network.label, pick.network.label
    ratio = pick.network.flops / classic.network.flops
    diff = paired(pick.accuracies, classic.accuracies)
    if diff is None:
        seed = min(classic.accuracies)
        ahead = 100 * (pick.accuracies.get(seed, pick.mean) - classic.accuracies[seed])
        return f"{c}: dropped after seed {seed}, where {p} was {ahead:+.2f} points ahead, at {ratio:.2f}x its FLOPs"
    if diff.low > 0:
        return f"{c}: beaten: {p} is {diff} more accurate, at {ratio:.2f}x its FLOPs"
    if diff.high < 0:
        return f"{c}: not matched: {p} is {diff} less accurate, at {ratio:.2f}x its FLOPs"
    if ratio < 1:
        return f"{c}: dominated: {p} is as accurate, {diff}, at {ratio:.2f}x its FLOPs"
    return f"{c}: matched: {p} is as accurate, {diff}, at {ratio:.2f}x its FLOPs"
