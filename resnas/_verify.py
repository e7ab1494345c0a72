"""`verify`: a run's best searched networks and the classics, retrained from scratch with one recipe over several
seeds; the cheapest network as accurate as the best is picked on a held-out split of the training data, and only
the networks chosen are scored on the test split, which the search never reads.

    networks   searched trials (the proxy's most accurate, then the cheapest the proxy cannot tell from the best,
               `top` in all) + the classics (trained in the study, scaled ones included, or named)
    units      network x seed, each trained from scratch by `train_candidate` and scored on the selection split
               (training images neither the search nor verification trains on); one verify.csv row per unit,
               written as it finishes, so a killed run loses at most the unit it was training; seed by seed,
               and after seed 0 only the contenders go on (a race: networks far behind get no more seeds)
    summary    mean and spread per network; each against the most accurate, paired over seeds (Student-t CI:
               with 3 seeds a bootstrap would be far too narrow); the pick (`Pick`); the pick against the best
               classic, in words, and a line per classic; the test split's accuracies of the pick, the most
               accurate and the best classic; the proxy's rank fidelity (Kendall tau)
"""

from __future__ import annotations

import dataclasses
import enum
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from resnas._arch import Arch
from resnas._budget import format_flops
from resnas._errors import ConfigError, StorageError
from resnas._plots import VerifiedPoint, verify_figure
from resnas._runfolder import RunFolder, VerifyFolder
from resnas._trial import NEAR_BEST, Origin, TrialRecord, TrialState, pareto, ranked

if TYPE_CHECKING:
    import torch

    from resnas._data import DataSplits

# Below this rank correlation the proxy's ranking does not predict the verified one well enough to trust.
TRUSTED_TAU = 0.5
# After seed 0, networks more than this many accuracy points below the best get no more seeds: about 3x the
# spread of a difference between two single trainings at the default recipe (seed spreads of 0.2-0.6 points,
# results/benchmarks/classic_neighbours-cpu.txt), so a network dropped was very unlikely to end up best.
DROP_BELOW = 2.0
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
class Recipe:
    """How every verified network is trained: the same for all, more data and epochs than the proxy."""

    epochs: int
    train_samples: int
    batch_size: int
    lr: float
    width: float  # widths scaled as the proxy's were (1: the searched network itself)
    seeds: int
    top: int
    baselines: tuple[str, ...] | None = None  # None: every classic the study trained
    # After seed 0, only networks within this many points of the best go on (and the best classic and best
    # searched network); None: every network gets every seed.
    drop_below: float | None = DROP_BELOW
    # Training images held out (beyond train_samples) to choose among the networks; None: SELECT_SAMPLES or
    # what the training set has left.
    select_samples: int | None = None

    def __post_init__(self) -> None:
        if self.select_samples is not None and self.select_samples < 1:
            raise ConfigError(f"must be at least 1, got {self.select_samples}", field="select_samples")
        for name in ("epochs", "train_samples", "batch_size", "seeds", "top"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be at least 1, got {getattr(self, name)}", field=name)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"must be positive, got {self.lr}", field="lr")
        if self.drop_below is not None and not (self.drop_below > 0 and math.isfinite(self.drop_below)):
            raise ConfigError(f"must be positive (accuracy points), got {self.drop_below}", field="drop_below")
        if not 0 < self.width <= 1:
            raise ConfigError(f"must be in (0, 1], got {self.width}", field="width")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["baselines"] = list(self.baselines) if self.baselines is not None else None
        return out


def default_recipe(run: Mapping[str, Any], **given: Any) -> Recipe:
    """The run's proxy with 2x the training images and one more epoch (at least 3): 3x its image-epochs by
    default, affordable on a 2-core CPU (benchmarks/proxy_fidelity.py); `given` overrides."""
    settings = run.get("settings", {})
    base = dict(epochs=max(3, int(settings.get("epochs", 2)) + 1),
                train_samples=2 * int(settings.get("train_samples") or 2000),
                batch_size=int(settings.get("batch_size", 64)), lr=float(settings.get("lr", 0.05)),
                width=float(run.get("proxy_width", 1.0)), seeds=3, top=3, baselines=None, drop_below=DROP_BELOW,
                select_samples=None)
    base.update({k: v for k, v in given.items() if v is not None})
    if base["baselines"] is not None:
        base["baselines"] = tuple(base["baselines"])
    return Recipe(**base)


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


def choose(records: Sequence[TrialRecord], recipe: Recipe, run: Mapping[str, Any]) -> list[Network]:
    """Searched trials (`_searched`) and the half-sized classics, then the classics (pruned ones too), each
    architecture once."""
    complete = ranked(list(records))
    if not complete:
        raise StorageError("the run has no complete trial yet: let the search train some, then verify")
    searched = _searched(complete, recipe.top)
    # The half-sized classics test the product's promise directly: verified whatever the pruner made of them
    # (its one-epoch accuracies say little, and these are cheap to train).
    halves = [r for r in records if Origin.of(r.origin) is Origin.SCALED
              and r.state in (TrialState.COMPLETE, TrialState.PRUNED) and r.arch and r not in searched]
    networks = [_network(r, NetworkKind.SEARCHED) for r in [*searched, *halves]]
    # A classic the pruner stopped early is still a baseline the search must beat.
    classics = [r for r in complete if r.name] + \
        [r for r in records if r.state is TrialState.PRUNED and r.name and r.arch]
    if recipe.baselines is None:
        seen: set[str] = set()
        for r in classics:  # complete ones first, best first: one row per classic
            if r.name not in seen:
                seen.add(r.name)
                networks.append(_network(r, NetworkKind.CLASSIC))
    else:
        trained = {r.name: r for r in reversed(classics)}
        networks += [_network(trained[n], NetworkKind.CLASSIC) if n in trained else _named(n, run)
                     for n in recipe.baselines]
    return networks


def _searched(complete: Sequence[TrialRecord], top: int) -> list[TrialRecord]:
    """`top` searched trials: the proxy's most accurate, then the cheapest of those within NEAR_BEST of the best
    trial (classics included) that are more accurate than every cheaper one, then the next most accurate.

    The proxy cannot tell networks that close apart, so the cheap ones among them are the candidates for a pick
    that costs less than the best at the same accuracy.
    """
    searched = [r for r in complete if not r.name]
    if not searched:
        return []
    top_accuracy = complete[0].val_accuracy or 0.0
    near = [r for r in searched if (r.val_accuracy or 0.0) >= top_accuracy - NEAR_BEST]
    front = pareto(near, lambda r: r.flops or 0, lambda r: r.val_accuracy or 0.0)
    chosen = [searched[0]]
    for r in front + searched:
        if len(chosen) >= top:
            break
        if r not in chosen:
            chosen.append(r)
    return chosen


def _network(rec: TrialRecord, kind: NetworkKind) -> Network:
    """A trial as a network to verify; a pruned trial's accuracy (of fewer epochs) is left out of the ranking."""
    arch = Arch.from_dict(rec.arch or {})
    label = rec.name if kind is NetworkKind.CLASSIC else f"#{rec.number}"
    proxy = rec.val_accuracy if rec.state is TrialState.COMPLETE else None
    return Network(label, kind, arch, rec.flops or 0, rec.number, proxy, rec.origin)


def _named(name: str, run: Mapping[str, Any]) -> Network:
    """A zoo network the study did not train, priced at the run's deployment input; refused over the budget."""
    from resnas import zoo
    from resnas._build import count

    arch = zoo.get(name)  # ConfigError naming the known ones
    deploy = run["deployment_input"]
    flops = count(arch, resolution=deploy["resolution"], num_classes=deploy["classes"],
                  in_channels=deploy["channels"]).flops
    budget = int(run["settings"]["budget"])
    if flops > budget:
        raise ConfigError(f"{name} needs {format_flops(flops)} at the run's input, over its {format_flops(budget)} "
                          "budget: name classics under the budget", field="baselines")
    return Network(name, NetworkKind.CLASSIC, arch, flops)


# -- training the units ---------------------------------------------------------------------------


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


def train_unit(net: Network, seed: int, recipe: Recipe, data: DataSplits,
               device: torch.device) -> tuple[UnitResult, dict[str, Any]]:
    """`net` narrowed by the recipe's width, built and trained from scratch with `seed`; scored on `data.val_*`."""
    import torch

    from resnas._build import build, count
    from resnas._train import TrainConfig, train_candidate

    arch = net.arch.narrowed(recipe.width)
    torch.manual_seed(seed)
    model = build(arch, num_classes=data.num_classes, in_channels=data.in_channels)
    cfg = TrainConfig(epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr, seed=seed,
                      evaluate_each_epoch=False)
    started = time.perf_counter()
    result = train_candidate(model, data, cfg, device=device)
    params = count(arch, resolution=data.resolution, num_classes=data.num_classes,
                   in_channels=data.in_channels).params
    unit = UnitResult(net.label, net.kind, seed, result.val_accuracy, time.perf_counter() - started, params)
    return unit, {k: v.detach().cpu() for k, v in model.state_dict().items()}


def test_accuracy(net: Network, state: Mapping[str, torch.Tensor], recipe: Recipe, data: DataSplits,
                  device: torch.device) -> float:
    """A trained unit's accuracy on `data`'s test split, normalised as it was trained."""
    from resnas._build import build
    from resnas._train import accuracy

    if data.test_x is None or data.test_y is None:
        raise ValueError("test_accuracy needs data with a test split (load_verification)")
    model = build(net.arch.narrowed(recipe.width), num_classes=data.num_classes, in_channels=data.in_channels)
    model.load_state_dict(state)
    return accuracy(model, data.test_x, data.test_y, data.mean, data.std, device=device,
                    batch_size=2 * recipe.batch_size)


# -- the summary ----------------------------------------------------------------------------------


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


# -- the whole verification -----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A verification's settings as verify.json holds them: recipe, networks, data."""

    recipe: Recipe
    networks: list[Network]

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe.to_dict(), "networks": [n.to_dict() for n in self.networks]}


def plan(folder: RunFolder, recipe: Recipe) -> Plan:
    """The networks to verify with `recipe`; a verification already begun must have been planned the same way."""
    run = folder.read_run()
    fresh = Plan(recipe, choose(folder.read_trials(), recipe, run))
    known = folder.verification().read_plan()
    if known is None:
        return fresh
    if "select_samples" not in known["recipe"]:
        raise StorageError(f"{folder.verification().path} was begun by an earlier resnas, which chose on the test "
                           "split; move that folder away to verify afresh")
    # One begun before the race (network by network) goes on under the given rule.
    known["recipe"] = {"drop_below": recipe.drop_below, **known["recipe"]}
    if known["recipe"] != recipe.to_dict():
        diff = ", ".join(f"{k} {v!r} -> {recipe.to_dict()[k]!r}" for k, v in known["recipe"].items()
                         if recipe.to_dict()[k] != v)
        raise ConfigError(f"{folder.verification().path} was begun with another recipe ({diff}); rerun with the "
                          "same flags to resume it, or move that folder away to verify afresh")
    # Keep the networks it began with, even if the search has gone on since.
    return Plan(recipe, [Network.from_dict(d) for d in known["networks"]])


def contenders(networks: Sequence[Network], units: Sequence[UnitResult], drop_below: float | None) -> list[Network]:
    """The networks that go on after seed 0: within `drop_below` points of the best seed-0 accuracy, and the
    best classic and best searched network whatever their distance (the verdict compares those two)."""
    if drop_below is None:
        return list(networks)
    first = {u.label: u.select_accuracy for u in units if u.seed == 0}
    top = max(first[n.label] for n in networks)
    keep = {n.label for n in networks if 100 * (top - first[n.label]) <= drop_below}
    for kind in NetworkKind:
        of_kind = [n for n in networks if n.kind is kind]
        if of_kind:
            keep.add(max(of_kind, key=lambda n: first[n.label]).label)
    return [n for n in networks if n.label in keep]


def remaining(networks: Sequence[Network], units: Sequence[UnitResult], recipe: Recipe) -> list[tuple[Network, int]]:
    """The units still to train, seed by seed: every network's seed 0 (until those are in, every later seed
    may still be needed), then the contenders' other seeds."""
    done = {(u.label, u.seed) for u in units}
    first = [(n, 0) for n in networks if (n.label, 0) not in done]
    racing = networks if first else contenders(networks, units, recipe.drop_below)
    rest = [(n, s) for s in range(1, recipe.seeds) for n in racing if (n.label, s) not in done]
    return first + rest


def verify(folder: RunFolder, recipe: Recipe, *, device: torch.device, data: DataSplits, rule: Pick = Pick.CHEAPEST,
           margin: float = MARGIN, progress: Callable[[UnitResult, int, int], None] | None = None) -> Summary:
    """Train the plan's remaining units (`remaining`), summarize, score the chosen on the test split (and write
    summary, plot)."""
    the_plan = plan(folder, recipe)
    out = folder.verification()
    known = out.read_plan()
    selected = len(data.val_y)
    if known is not None and known.get("select_images", selected) != selected:
        raise ConfigError(f"{out.path} chose on {known['select_images']} held-out images, this run would on "
                          f"{selected}; rerun with --select-samples {known['select_images']} to resume it, or move "
                          "that folder away to verify afresh")
    # `input`: how raw images became the verified networks' inputs; the exported pick carries it.
    out.write_plan({**the_plan.to_dict(), "data": data.description, "select_images": selected,
                    "input": data.contract.to_dict()})
    units = _read_units(out)
    k = 0
    while todo := remaining(the_plan.networks, units, recipe):
        net, seed = todo[0]
        unit, state = train_unit(net, seed, recipe, data, device)
        out.save_weights(net.label, state, seed)  # seed 0's is what export ships
        units.append(unit)
        out.write_units([u.row() for u in units], UNIT_COLUMNS)
        k += 1
        if progress is not None:
            progress(unit, k, k + len(todo) - 1)
    summary = summarize(the_plan.networks, units, rule=rule, margin=margin)
    summary = _tested(summary, out, recipe, data, device)
    out.write_summary(summary.to_dict())
    out.save_plot(verify_figure([VerifiedPoint(s.network.label, s.network.kind.value, s.network.flops,
                                               list(s.accuracies.values()), s.mean, s.spread, s is summary.pick)
                                 for s in summary.scores], summary.verdict))
    return summary


def _tested(summary: Summary, out: VerifyFolder, recipe: Recipe, data: DataSplits, device: torch.device) -> Summary:
    """`summary` with the test-split accuracies of the networks it chose, from their kept weights."""
    if data.test_x is None:
        return summary
    test = {s.network.label: {seed: test_accuracy(s.network, out.read_weights(s.network.label, seed), recipe, data,
                                                  device)
                              for seed in sorted(s.accuracies)}
            for s in summary.chosen}
    gain = None
    if summary.reference is not None and summary.reference is not summary.pick:
        gain = paired(test[summary.pick.network.label], test[summary.reference.network.label])
    return dataclasses.replace(summary, test=test, test_gain=gain)


def _read_units(out: VerifyFolder) -> list[UnitResult]:
    try:
        return [UnitResult.from_row(r) for r in out.read_units()]
    except (KeyError, ValueError) as e:
        raise StorageError(f"{out.path / out.UNITS} is damaged ({e}); move {out.path} away to verify afresh") from None
