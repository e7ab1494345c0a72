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
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from resnas._arch import Arch
from resnas._budget import format_flops
from resnas._config import SearchConfig
from resnas._errors import ConfigError, StorageError
from resnas._plots import VerifiedPoint, verify_figure
from resnas._runfolder import RunFolder, VerifyFolder
from resnas._trial import NEAR_BEST, Origin, TrialRecord, TrialState, pareto, ranked
from resnas._verdict import (
    MARGIN,
    UNIT_COLUMNS,
    Network,
    NetworkKind,
    Pick,
    Summary,
    UnitResult,
    paired,
    summarize,
)

if TYPE_CHECKING:
    import torch

    from resnas._data import DataSplits

# After seed 0, networks more than this many accuracy points below the best get no more seeds: about 3x the
# spread of a difference between two single trainings at the default recipe (seed spreads of 0.2-0.6 points,
# results/benchmarks/classic_neighbours-cpu.txt), so a network dropped was very unlikely to end up best.
DROP_BELOW = 2.0
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
    proxy = SearchConfig.proxy_of(run.get("settings", {}))
    base = dict(epochs=max(3, proxy.epochs + 1), train_samples=2 * proxy.train_samples,
                batch_size=proxy.batch_size, lr=proxy.lr, width=float(run.get("proxy_width", 1.0)), seeds=3, top=3,
                baselines=None, drop_below=DROP_BELOW, select_samples=None)
    base.update({k: v for k, v in given.items() if v is not None})
    if base["baselines"] is not None:
        base["baselines"] = tuple(base["baselines"])
    return Recipe(**base)


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
