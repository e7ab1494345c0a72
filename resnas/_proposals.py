"""What a search trains besides the sampler's picks, and how a proposal is priced: the classics that fit (or
scaled down to fit), the first of each shortcut kind, half-sized classics (`Openings`), and one-step moves of
the best and of the cheapest near it (`LocalMoves`), queued in the study one at a time."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from resnas._arch import Arch
from resnas._build import count
from resnas._space_moves import Move, Scale
from resnas._study import (
    Screened,
    Study,
    arch_key,
)
from resnas._trial import NEAR_BEST

if TYPE_CHECKING:
    from resnas._space import SearchSpace

STRATIFY_DRAWS = 400  # per kind: half uniform, then ever closer to the cheapest
# Uniform scales tried for scaled classics, largest first (the space's width grid steps by about 0.75x).
SCALE_FACTORS = (0.75, 0.5, 0.25)
# A half-sized classic costs at most this share of the classic's FLOPs: the nearest grid point to half
# (resnet18 by width: 0.57x; by depth: 0.49x).
HALF = 0.6


def screen(arch: Arch, space: SearchSpace, budget: int) -> Screened:
    """`arch` priced at the deployment input (microseconds), whether it fits the budget, and its zoo name."""
    from resnas.zoo import name_of

    cost = count(arch, resolution=space.resolution, num_classes=space.num_classes, in_channels=space.in_channels)
    return Screened(arch, cost, cost.flops <= budget, name_of(arch))


def classics(space: SearchSpace, budget: int) -> list[tuple[str, dict[str, Any]]]:
    """The zoo networks the space contains that fit the budget, with their Optuna parameters, in zoo order."""
    from resnas import zoo

    found = []
    for name in zoo.names():
        arch = zoo.get(name)
        params = space.params(arch)
        if params is not None and screen(arch, space, budget).fits:
            found.append((name, params))
    return found


def _family(arch: Arch) -> tuple[Any, ...]:
    """Which classic family an arch belongs to: ResNet basic or bottleneck, ResNeXt, Wide ResNet, DenseNet."""
    return arch.block, arch.shortcut, arch.cardinality > 1, arch.width_multiplier > 1


def scaled_label(name: str, before: Arch, after: Arch) -> str:
    """"resnet18@w0.5", "resnet50@w0.5d0.75": the classic and the shares of its widths and depths kept."""
    def widths(arch: Arch) -> int:
        return arch.stem_width + sum(s.width or 0 for s in arch.stages) + (arch.growth_rate or 0)

    def depths(arch: Arch) -> int:
        return sum(s.depth for s in arch.stages)

    shares = [(letter, f(after) / f(before)) for letter, f in (("w", widths), ("d", depths))]
    return name + "@" + "".join(f"{letter}{share:.2g}" for letter, share in shares if share != 1)


def _scaled_to_fit(space: SearchSpace, arch: Arch, budget: int) -> Move | None:
    """`arch` scaled uniformly on the space's grid until it fits: widths first, then depths at the least width."""
    narrowest = arch
    for factor in SCALE_FACTORS:
        move = space.scaled(arch, Scale.WIDTH, factor)
        if move is not None and screen(move.arch, space, budget).fits:
            return move
        narrowest = move.arch if move is not None else narrowest
    for factor in SCALE_FACTORS:
        move = space.scaled(narrowest, Scale.DEPTH, factor)
        if move is not None and screen(move.arch, space, budget).fits:
            return move
    return None


def scaled_classics(space: SearchSpace, budget: int) -> list[tuple[str, dict[str, Any]]]:
    """When no classic fits the budget: the cheapest classic of each family the space contains, scaled down
    to fit (`_scaled_to_fit`), labelled "resnet18@w0.5": the baselines a user would otherwise build by hand."""
    from resnas import zoo

    if classics(space, budget):
        return []
    cheapest: dict[tuple[Any, ...], tuple[int, str, Arch]] = {}
    for name in zoo.names():
        arch = zoo.get(name)
        if space.params(arch) is None:
            continue
        flops = screen(arch, space, budget).cost.flops
        if _family(arch) not in cheapest or flops < cheapest[_family(arch)][0]:
            cheapest[_family(arch)] = (flops, name, arch)
    found = []
    for _, name, arch in sorted(cheapest.values(), key=lambda c: c[0]):
        move = _scaled_to_fit(space, arch, budget)
        if move is not None:
            found.append((scaled_label(name, arch, move.arch), move.params))
    return found


def half_sized(space: SearchSpace, budget: int, name: str) -> list[tuple[str, dict[str, Any]]]:
    """Classic `name` scaled by depth, and by width, to at most HALF of its FLOPs: the proposals that test the
    product's promise directly (its accuracy at half its cost), as the search's own trials."""
    from resnas import zoo

    arch = zoo.get(name)
    target = HALF * screen(arch, space, budget).cost.flops
    found = []
    for scale in Scale:
        for factor in SCALE_FACTORS:
            move = space.scaled(arch, scale, factor)
            if move is not None and screen(move.arch, space, budget).cost.flops <= target:
                found.append((scaled_label(name, arch, move.arch), move.params))
                break
    return found


@dataclass(frozen=True)
class Opening:
    """A trial queued before the sampler's: a classic (its zoo name, or a scaled one's label), a half-sized
    classic, or the first of a shortcut kind."""

    params: dict[str, Any]
    classic: str = ""
    kind: str = ""
    scaled: str = ""

    @property
    def label(self) -> str:
        return self.classic or self.scaled or self.kind


class Openings:
    """What a new study trains first: every classic the space contains under the budget (unless turned off;
    when none fits, each family's cheapest scaled down to fit), then one random fitting architecture per
    shortcut kind that no classic covers, then the cheapest classic at half its FLOPs by width and by depth,
    then the sampler's picks.

    Classics make the search's best never worse than the best classic at the proxy, and the sampler learns
    from them; the half-sized ones propose the trade-off the product promises (a classic's accuracy at half its
    FLOPs), which a short search rarely reaches by single moves. The kinds fit a budget very unequally (under
    4 GFLOPs in resnet_family.yaml: about 94% of dense, 36% of identity and 21% of gated samples), so a short
    search would otherwise train mostly one kind. Openings are queued one at a time, only when the queue is
    empty, so that a retried (interrupted) trial goes first. Draws lean to the cheap side while none fits; a
    kind none of whose STRATIFY_DRAWS draws fits is left out.
    """

    def __init__(self, study: Study, space: SearchSpace, budget: int, seed: int, *, with_classics: bool,
                 with_kinds: bool = True, moves: LocalMoves | None = None) -> None:
        self.moves = moves

        started = study.openings_started()  # None: a study that began otherwise is left as it is
        plan, halves = self._classics(space, budget) if with_classics else ([], [])
        covered = {o.params.get("shortcut") for o in plan}
        shortcut = next(d for d in space.dimensions() if d.name == "shortcut")
        kinds = shortcut.domain.options() if with_kinds and shortcut.domain.count > 1 else ()
        rng = random.Random(seed)
        for kind in kinds:
            if kind.value in covered:
                continue
            params = _first_fitting(space, budget, rng, kind.value)
            if params is not None:
                plan.append(Opening(params, kind=kind.value))
        plan += halves
        self._plan = [o for o in plan if o.label not in (started or ())] if started is not None else []
        self.classics = [o.classic for o in self._plan if o.classic]
        self.scaled = [o.scaled for o in self._plan if o.scaled]
        self.kinds = [o.kind for o in self._plan if o.kind]

    @staticmethod
    def _classics(space: SearchSpace, budget: int) -> tuple[list[Opening], list[Opening]]:
        """The classics that fit (or scaled ones), and the cheapest real one at half its FLOPs."""
        from resnas import zoo

        real = classics(space, budget)
        plan = [Opening(params, classic=name) for name, params in real + scaled_classics(space, budget)]
        if not real:
            return plan, []
        cheapest = min(real, key=lambda c: screen(zoo.get(c[0]), space, budget).cost.flops)[0]
        return plan, [Opening(params, scaled=label) for label, params in half_sized(space, budget, cheapest)]

    def queue_next(self, study: Study) -> None:
        """Before each ask: queue the next opening, else perhaps a local move, if nothing else waits."""
        if not study.queue_is_empty():
            return
        if self._plan:
            o = self._plan.pop(0)
            study.enqueue_opening(o.params, classic=o.classic, kind=o.kind, scaled=o.scaled)
        elif self.moves is not None:
            self.moves.queue_next(study)


class LocalMoves:
    """Hill climbing beside the sampler: after the openings, a `share` of the trials are one-step moves
    (`SearchSpace.neighbours`), each new and under the budget, in an order fixed by the seed and the trial
    moved. They take turns: a move of the best complete trial so far (any direction: accuracy), then a move
    that costs fewer FLOPs of the cheapest trial within NEAR_BEST of the best (the trade-off: the cheapest
    network the proxy cannot tell from the best).

    Why: at a small budget the best classic is hard to beat, its neighbours verify within a point of it where
    the sampler's picks land 1-2 points below (results/benchmarks/classic_neighbours-cpu.txt), and with moves
    (before the shrinking ones) a 12-trial search's best verified 0.72 points higher on average; the sampler's
    turns keep exploring. Shrinking moves walk down the FLOPs of networks as good as the best.
    """

    def __init__(self, space: SearchSpace, budget: int, seed: int, share: float) -> None:
        self.space, self.budget, self.seed, self.share = space, budget, seed, share

    def queue_next(self, study: Study) -> None:
        """Queue a move when moves are below their share of the trials after the openings."""
        moves, picks = study.moves_and_picks()
        if moves >= self.share * (moves + picks + 1):
            return
        shrink = moves % 2 == 1
        base = study.cheapest_near_best(NEAR_BEST) if shrink else study.best_trained()
        if base is None:
            return
        number, arch = base
        move = self._untried(Arch.from_dict(arch), number, study.tried(), shrink)
        if move is None and shrink:  # nothing cheaper left to try: climb instead
            best = study.best_trained()
            if best is not None:
                number, arch = best
                move = self._untried(Arch.from_dict(arch), number, study.tried(), False)
        if move is not None:
            study.enqueue_move(move.params, of=number, label=move.label)

    def _untried(self, arch: Arch, number: int, tried: set[str], shrink: bool) -> Move | None:
        """The first move of `arch`, in this seed's order, to an architecture new and under the budget (and,
        when `shrink`, cheaper than `arch`)."""
        moves = self.space.neighbours(arch, random.Random(self.seed))
        random.Random(f"{self.seed}:{number}").shuffle(moves)
        ceiling = screen(arch, self.space, self.budget).cost.flops if shrink else self.budget
        for m in moves:
            if arch_key(m.arch.to_dict()) in tried:
                continue
            screened = screen(m.arch, self.space, self.budget)
            if screened.fits and (not shrink or screened.cost.flops < ceiling):
                return m
        return None


def _first_fitting(space: SearchSpace, budget: int, rng: random.Random, kind: str) -> dict[str, Any] | None:
    """Optuna parameters of a random `kind` architecture under the budget, leaning cheaper draw by draw."""
    for draw in range(STRATIFY_DRAWS):
        lean = min(1.0, 2.0 * (1.0 - draw / STRATIFY_DRAWS))
        arch, params = space.sample_params(rng, fixed={"shortcut": kind}, lean=lean)
        if screen(arch, space, budget).fits:
            return params
    return None
