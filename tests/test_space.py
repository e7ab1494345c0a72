"""Search spaces: shipped files, define-by-run suggest and sample, contains, size, FLOP range, errors."""

from __future__ import annotations

import dataclasses
import itertools
import random
import statistics
import textwrap
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest

from resnas import zoo
from resnas._arch import Arch, Block, Order, Shortcut, StageSpec, Stem, Survival
from resnas._domains import plain_value
from resnas._errors import ConfigError
from resnas._space import SearchSpace
from resnas._space_table import _SPECS, _layout, applicable, inapplicable, is_size, locate
from resnas._space_yaml import load_yaml

ROOT = Path(__file__).resolve().parent.parent
RESNET_FAMILY = ROOT / "search_spaces" / "resnet_family.yaml"
CIFAR_FAMILY = ROOT / "search_spaces" / "cifar_family.yaml"

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- the networks each shipped space must contain, from their literal definitions -------------------

def _imagenet_resnet(**kw: Any) -> Arch:
    stages = (StageSpec(3, 1, 64), StageSpec(4, 2, 128), StageSpec(6, 2, 256), StageSpec(3, 2, 512))
    return Arch(stages=stages, block=Block.BOTTLENECK, shortcut=Shortcut.IDENTITY, order=Order.POST,
                stem=Stem.IMAGENET, stem_width=64, **kw)


def _cifar(depth: int, **kw: Any) -> Arch:
    fields: dict[str, Any] = {"block": Block.BASIC, "shortcut": Shortcut.IDENTITY, "order": Order.POST,
                              "stem": Stem.CIFAR, "stem_width": 16}
    fields.update(kw)
    return Arch(stages=(StageSpec(depth, 1, 16), StageSpec(depth, 2, 32), StageSpec(depth, 2, 64)), **fields)


IMAGENET_NETS = {
    "resnet50": _imagenet_resnet(),
    "resnext50_32x4d": _imagenet_resnet(cardinality=32, base_width=4),
    "wide_resnet50_2": _imagenet_resnet(width_multiplier=2.0),
    "densenet121": Arch(
        stages=tuple(StageSpec(d, s, None) for d, s in zip((6, 12, 24, 16), (1, 2, 2, 2))),
        block=Block.BOTTLENECK, shortcut=Shortcut.DENSE, order=Order.PRE, stem=Stem.IMAGENET, stem_width=64,
        growth_rate=32, bottleneck_size=4, compression=0.5),
}
CIFAR_NETS = {
    "resnet20": _cifar(3),
    "resnet32": _cifar(5),
    "resnet44": _cifar(7),
    "resnet56": _cifar(9),
    "resnet110": _cifar(18),
    "resnet110_stochastic_depth": _cifar(18, survival=Survival.LINEAR, survival_prob=0.5),
    "preact_resnet164": _cifar(18, block=Block.BOTTLENECK, order=Order.PRE),
    "preact_resnet1001": _cifar(111, block=Block.BOTTLENECK, order=Order.PRE),
    "wrn_28_10": _cifar(4, order=Order.PRE, width_multiplier=10.0, dropout=0.3),
    "densenet_bc_100_12": Arch(
        stages=tuple(StageSpec(16, s, None) for s in (1, 2, 2)), block=Block.BOTTLENECK,
        shortcut=Shortcut.DENSE, order=Order.PRE, stem=Stem.CIFAR, stem_width=24, growth_rate=12,
        bottleneck_size=4, compression=0.5),
    "highway_resnet32": _cifar(5, shortcut=Shortcut.GATED),
}


@pytest.fixture(scope="module")
def imagenet_space() -> SearchSpace:
    return SearchSpace.from_yaml(RESNET_FAMILY)


@pytest.fixture(scope="module")
def cifar_space() -> SearchSpace:
    return SearchSpace.from_yaml(CIFAR_FAMILY)


def test_shipped_spaces_load_with_their_inputs(imagenet_space: SearchSpace, cifar_space: SearchSpace) -> None:
    for space, expected in ((imagenet_space, (224, 3, 1000)), (cifar_space, (32, 3, 10))):
        assert (space.resolution, space.in_channels, space.num_classes) == expected
    assert imagenet_space.num_stages == 4 and cifar_space.num_stages == 3
    for space in (imagenet_space, cifar_space):
        assert space.continuous_dimensions() == ["survival_prob"]
        assert space.size() > 10**8


@pytest.mark.parametrize("name", IMAGENET_NETS)
def test_resnet_family_contains_the_torchvision_networks(imagenet_space: SearchSpace, name: str) -> None:
    assert imagenet_space.contains(IMAGENET_NETS[name])


@pytest.mark.parametrize("name", CIFAR_NETS)
def test_cifar_family_contains_the_classic_cifar_networks(cifar_space: SearchSpace, name: str) -> None:
    assert cifar_space.contains(CIFAR_NETS[name])


def test_every_zoo_network_is_in_the_space_for_its_input(imagenet_space: SearchSpace,
                                                        cifar_space: SearchSpace) -> None:
    for name in zoo.names():
        entry = zoo.entry(name)
        space = imagenet_space if entry.resolution == 224 else cifar_space
        assert space.contains(entry.arch), name


@pytest.mark.parametrize("change", [
    {"base_width": 4},  # cardinality 1 always has base_width 64 in a space
    {"cardinality": 3, "base_width": 4},
    {"dropout": 0.5},
    {"stem": "cifar"},
    {"stem_width": 65},
    {"width_multiplier": 3.0},
    {"survival": "uniform", "survival_prob": 0.4},
    {"stages": [StageSpec(7, 1, 64), StageSpec(4, 2, 128), StageSpec(6, 2, 256), StageSpec(3, 2, 512)]},
    {"stages": [StageSpec(3, 1, 64), StageSpec(4, 2, 128), StageSpec(6, 2, 256), StageSpec(3, 1, 512)]},
    {"stages": [StageSpec(3, 1, 64), StageSpec(4, 2, 100), StageSpec(6, 2, 256), StageSpec(3, 2, 512)]},
    {"stages": [StageSpec(3, 1, 64), StageSpec(4, 2, 128), StageSpec(6, 2, 256)]},
])
def test_near_misses_are_not_contained(imagenet_space: SearchSpace, change: dict[str, Any]) -> None:
    arch = IMAGENET_NETS["resnet50"].replace(**{k: [s.to_dict() for s in v] if k == "stages" else v
                                                for k, v in change.items()})
    assert not imagenet_space.contains(arch)
    assert imagenet_space.probability(arch) == 0.0


def test_cifar_networks_are_not_in_the_imagenet_space(imagenet_space: SearchSpace) -> None:
    assert not any(imagenet_space.contains(a) for a in CIFAR_NETS.values())


# -- define-by-run ------------------------------------------------------------------------------------

def _arch_params(arch: Arch) -> dict[str, Any]:
    """The parameters a define-by-run suggest must ask for `arch`, with their values (Optuna's form)."""
    params: dict[str, Any] = {
        "stem": arch.stem.value, "stem_width": arch.stem_width, "block": arch.block.value,
        "shortcut": arch.shortcut.value, "order": arch.order.value, "dropout": arch.dropout,
        "survival": arch.survival.value}
    for i, s in enumerate(arch.stages):
        params[f"stages[{i}].depth"] = s.depth
        params[f"stages[{i}].stride"] = s.stride
    if arch.shortcut is Shortcut.DENSE:
        params.update(growth_rate=arch.growth_rate, bottleneck_size=arch.bottleneck_size,
                      compression=arch.compression)
        if arch.block is Block.BOTTLENECK:
            params["dense_cardinality"] = arch.cardinality
    else:
        params["width_multiplier"] = arch.width_multiplier
        params.update({f"stages[{i}].width": s.width for i, s in enumerate(arch.stages)})
        if arch.block is Block.BOTTLENECK:
            params["cardinality"] = arch.cardinality
            if arch.cardinality > 1:
                params["base_width"] = arch.base_width
    if arch.survival is not Survival.NONE:
        params["survival_prob"] = arch.survival_prob
    return params


def _suggested(space: SearchSpace, arch: Arch) -> dict[str, Any]:
    fixed = {d.name for d in space.dimensions() if d.domain.fixed}
    return {k: v for k, v in _arch_params(arch).items() if k not in fixed}


@pytest.mark.parametrize("path", [RESNET_FAMILY, CIFAR_FAMILY], ids=["resnet", "cifar"])
def test_optuna_suggest_asks_only_applicable_parameters(path: Path) -> None:
    space = SearchSpace.from_yaml(path)
    seen = set()
    for seed in range(5):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        for _ in range(60):
            trial = study.ask()
            arch = space.suggest(trial)
            assert space.contains(arch)
            assert trial.params == _suggested(space, arch)
            assert space.suggest(optuna.trial.FixedTrial(trial.params)) == arch  # rebuild a trial's Arch
            seen.add((arch.block, arch.shortcut, arch.cardinality > 1, arch.survival))
    assert "stem" not in trial.params and "stages[0].stride" not in trial.params  # fixed: never suggested
    # Every branch of the conditional structure was reached.
    assert {(b, s) for b, s, _, _ in seen} == set(itertools.product(Block, Shortcut))
    assert {v for _, _, _, v in seen} == set(Survival) and {c for _, _, c, _ in seen} == {True, False}


def test_tpe_accepts_the_conditional_parameters(cifar_space: SearchSpace) -> None:
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=5)
    study = optuna.create_study(sampler=sampler)
    archs: list[Arch] = []

    def objective(trial: optuna.Trial) -> float:
        archs.append(cifar_space.suggest(trial))
        return float(archs[-1].num_blocks)

    study.optimize(objective, n_trials=15)
    assert len(archs) == 15 and all(cifar_space.contains(a) for a in archs)


class _Recorder:
    """A Suggester over random.Random that records the names it is asked for."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.names: list[str] = []

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1) -> int:
        self.names.append(name)
        return self.rng.randrange(low, high + 1, step)

    def suggest_float(self, name: str, low: float, high: float) -> float:
        self.names.append(name)
        return self.rng.uniform(low, high)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.names.append(name)
        return self.rng.choice(list(choices))


@pytest.mark.parametrize("path", [RESNET_FAMILY, CIFAR_FAMILY], ids=["resnet", "cifar"])
def test_sample_params_rebuild_their_arch_and_lean_reaches_the_exact_minimum(path: Path) -> None:
    space = SearchSpace.from_yaml(path)
    rng = random.Random(3)
    for lean in (1.0, 0.3, 0.0):
        for _ in range(60):
            arch, params = space.sample_params(rng, lean=lean)
            assert space.contains(arch) and space.suggest(optuna.trial.FixedTrial(params)) == arch
    arch, params = space.sample_params(rng, fixed={"shortcut": "gated", "order": "pre"})
    assert (arch.shortcut, arch.order) == (Shortcut.GATED, Order.PRE) and params["shortcut"] == "gated"
    # At lean 0 only the kind dimensions vary: their cheapest combination is flops_range's exact minimum.
    cheapest = min(space.flops(space.sample_params(rng, lean=0.0)[0]) for _ in range(400))
    assert cheapest == space.min_flops()
    assert statistics.median(space.flops(space.sample_params(rng, lean=0.2)[0]) for _ in range(100)) < \
           statistics.median(space.flops(space.sample(rng)) for _ in range(100))


def _restage(arch: Arch, i: int, **kw: Any) -> Arch:
    stages = list(arch.stages)
    stages[i] = dataclasses.replace(stages[i], **kw)
    return dataclasses.replace(arch, stages=tuple(stages))


def test_neighbours_of_resnet18_are_its_one_step_moves(imagenet_space: SearchSpace) -> None:
    # resnet18 in resnet_family.yaml, moved one listed value at a time (the lists in the file, read by hand).
    r18 = Arch(stages=(StageSpec(2, 1, 64), StageSpec(2, 2, 128), StageSpec(2, 2, 256), StageSpec(2, 2, 512)),
               block=Block.BASIC, shortcut=Shortcut.IDENTITY, order=Order.POST, stem=Stem.IMAGENET, stem_width=64)
    assert r18 == zoo.get("resnet18")
    expected = {
        "stem_width 64 -> 48": dataclasses.replace(r18, stem_width=48),
        "stem_width 64 -> 96": dataclasses.replace(r18, stem_width=96),
        "shortcut identity -> gated": dataclasses.replace(r18, shortcut=Shortcut.GATED),  # dense is 2 steps away
        "order post -> pre": dataclasses.replace(r18, order=Order.PRE),
        "width_multiplier 1.0 -> 0.75": dataclasses.replace(r18, width_multiplier=0.75),
        "width_multiplier 1.0 -> 1.5": dataclasses.replace(r18, width_multiplier=1.5),
        "dropout 0.0 -> 0.1": dataclasses.replace(r18, dropout=0.1),
    }
    widths = ((48, 96), (96, 192), (192, 384), (384, 768))
    for i, (narrow, wide) in enumerate(widths):
        base = r18.stages[i].width
        expected |= {f"stages[{i}].depth 2 -> 1": _restage(r18, i, depth=1),
                     f"stages[{i}].depth 2 -> 3": _restage(r18, i, depth=3),
                     f"stages[{i}].width {base} -> {narrow}": _restage(r18, i, width=narrow),
                     f"stages[{i}].width {base} -> {wide}": _restage(r18, i, width=wide)}
    moves = {m.label: m for m in imagenet_space.neighbours(r18, random.Random(0))}
    # Two moves make new dimensions apply, which are drawn: survival_prob, and a bottleneck's cardinality.
    assert set(moves) == set(expected) | {"survival none -> uniform", "block basic -> bottleneck"}
    for label, arch in expected.items():
        assert moves[label].arch == arch, label
    drawn = moves["survival none -> uniform"].arch
    assert drawn.survival is Survival.UNIFORM and dataclasses.replace(drawn, survival=Survival.NONE,
                                                                       survival_prob=1.0) == r18
    assert moves["block basic -> bottleneck"].arch.block is Block.BOTTLENECK
    for m in moves.values():  # each rebuilds from its Optuna parameters, as an enqueued trial does
        assert imagenet_space.suggest(optuna.trial.FixedTrial(m.params)) == m.arch
    with pytest.raises(ValueError, match="not in"):
        imagenet_space.neighbours(_cifar(3), random.Random(0))


@pytest.mark.parametrize("path", [RESNET_FAMILY, CIFAR_FAMILY], ids=["resnet", "cifar"])
def test_sample_is_seeded_contained_and_covers_every_kind(path: Path) -> None:
    space = SearchSpace.from_yaml(path)
    rng = random.Random(7)
    archs = [space.sample(rng) for _ in range(1500)]
    assert all(space.contains(a) for a in archs)
    assert {a.block for a in archs} == set(Block) and {a.shortcut for a in archs} == set(Shortcut)
    assert {a.order for a in archs} == set(Order) and {a.survival for a in archs} == set(Survival)
    assert len({a.cardinality for a in archs if a.shortcut is not Shortcut.DENSE}) > 3
    assert len({a.width_multiplier for a in archs}) > 3 and len({a.dropout for a in archs}) > 2
    assert len({a.growth_rate for a in archs if a.growth_rate}) > 3
    rng = random.Random(7)
    assert [space.sample(rng) for _ in range(20)] == archs[:20]
    for seed in range(100):
        recorder = _Recorder(seed)
        arch = space.suggest(recorder)
        assert sorted(recorder.names) == sorted(_suggested(space, arch))
        assert len(set(recorder.names)) == len(recorder.names)


# -- YAML errors ------------------------------------------------------------------------------------

TINY = """\
input: {resolution: 32, channels: 3, classes: 10}
stem: cifar
stem_width: 16
block: [basic, bottleneck]
shortcut: [identity, dense]
stages:
  - {depth: {min: 1, max: 3}, width: [8, 16]}
cardinality: [1, 4]
base_width: [16, 32]
growth_rate: [4, 8]
bottleneck_size: 4
compression: [0.5, 1.0]
dense_cardinality: [1, 2]
survival: [none, linear]
survival_prob: {min: 0.5, max: 1.0}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_yaml(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_size_of_a_hand_counted_space(tmp_path: Path) -> None:
    space = SearchSpace.from_yaml(_write(tmp_path, TINY))
    # depth 3 x (residual: width 2 x (basic 1 + bottleneck (cardinality 1: 1, cardinality 4: base_width 2))
    #            + dense: growth 2 x compression 2 x (basic 1 + bottleneck dense_cardinality 2))
    # x survival (none 1 + linear x survival_prob counted once) = 3 x (8 + 12) x 2
    assert space.size() == 120
    assert space.continuous_dimensions() == ["survival_prob"]
    applies = {d.name: d.applies for d in space.dimensions()}
    assert applies["base_width"] == "shortcut not dense, bottleneck, cardinality > 1"
    assert applies["dense_cardinality"] == "shortcut dense, bottleneck"


@pytest.mark.parametrize("edit, expected", [
    (("cardinality: [1, 4]", "cardinalty: [1, 4]"), ["cardinalty", "did you mean 'cardinality'", "allowed:"]),
    (("width: [8, 16]", "widht: [8, 16]"), ["stages[0].widht", "unknown key"]),
    (("max: 3}", "max: 3, stp: 1}"), ["stages[0].depth.stp", "min, max, step"]),
    (("resolution: 32", "resolution: 32, colour: rgb"), ["input.colour", "unknown key"]),
    (("stem_width: 16", "stem_width: abc"), ["stem_width", "'abc'", "an integer >= 1"]),
    (("stem_width: 16", "stem_width: 16.5"), ["stem_width", "16.5", "an integer >= 1"]),
    (("{min: 1, max: 3}", "2.5"), ["stages[0].depth", "2.5", "an integer >= 1"]),
    (("survival_prob: {min: 0.5, max: 1.0}", "survival_prob: true"), ["survival_prob", "True", "(0, 1]"]),
    (("compression: [0.5, 1.0]", "compression: [0.5, 1.5]"), ["compression[1]", "1.5", "(0, 1]"]),
    (("block: [basic, bottleneck]", "block: [basic, bottlenek]"),
     ["block[1]", "'bottlenek'", "'bottleneck'"]),
    (("width: [8, 16]", "width: [8, 16], stride: 3"), ["stages[0].stride", "3", "1 or 2"]),
    (("{min: 1, max: 3}", "{min: 5, max: 2}"), ["stages[0].depth", "min 5 is above max 2"]),
    (("{min: 1, max: 3}", "{min: 1, max: 4, step: 2}"), ["stages[0].depth", "step 2"]),
    (("{min: 1, max: 3}", "{min: 1}"), ["stages[0].depth", "both min and max"]),
    (("width: [8, 16]", "width: [8, 8]"), ["stages[0].width[1]", "8", "twice"]),
    (("width: [8, 16]", "width: []"), ["stages[0].width", "empty list"]),
    (("stem: cifar", "stem: {min: cifar, max: imagenet}"), ["stem", "range needs numbers"]),
    (("resolution: 32", "resolution: 16"), ["input.resolution", "16", ">= 32"]),
    (("input: {resolution: 32, channels: 3, classes: 10}", "input: {resolution: 32, channels: 3}"),
     ["input.classes", "missing"]),
    (("input: {resolution: 32, channels: 3, classes: 10}", ""), ["input", "missing"]),
    (("  - {depth: {min: 1, max: 3}, width: [8, 16]}", "  - {width: [8, 16]}"),
     ["stages[0].depth", "missing"]),
    (("  - {depth: {min: 1, max: 3}, width: [8, 16]}", "  - {depth: 2}"), ["stages[0].width", "missing"]),
    (("stages:\n  - {depth: {min: 1, max: 3}, width: [8, 16]}", "stages: []"), ["stages", "1 to 8 stages"]),
    (("survival_prob: {min: 0.5, max: 1.0}", ""), ["survival_prob", "missing"]),
    (("growth_rate: [4, 8]", ""), ["growth_rate", "missing"]),
    (("shortcut: [identity, dense]", "shortcut: [identity, gated]"),
     ["growth_rate", "never applies", "'dense'"]),
    (("shortcut: [identity, dense]", "shortcut: dense"), ["stages[0].width", "never applies"]),
    (("cardinality: [1, 4]", "cardinality: 1"), ["base_width", "never applies", "cardinality is never > 1"]),
    (("block: [basic, bottleneck]", "block: basic"), ["cardinality", "never applies", "'bottleneck'"]),
    (("survival: [none, linear]", "survival: none"), ["survival_prob", "never applies"]),
    # Combinations that Arch would reject are refused at load time.
    (("dense_cardinality: [1, 2]", "dense_cardinality: [1, 3]"), ["dense_cardinality", "3", "growth_rate 4"]),
    (("base_width: [16, 32]", "base_width: [4, 32]"), ["base_width 4", "stages[0].width 8", "0-channel"]),
    # ... also without groups: a bottleneck's 1x1 would keep int(1 * 0.5) = 0 channels.
    (("width: [8, 16]}\ncardinality: [1, 4]\nbase_width: [16, 32]",
      "width: [1, 16]}\ncardinality: 1\nwidth_multiplier: [0.5, 1.0]"),
     ["stages[0].width", "stages[0].width 1, width_multiplier 0.5", "0-channel"]),
    (("width: [8, 16]", "width: [8, 16], stride: [1, 2]"), ["stages[0].stride", "dense", "stride 1"]),
])
def test_bad_files_name_file_key_and_value(tmp_path: Path, edit: tuple[str, str],
                                           expected: list[str]) -> None:
    old, new = edit
    assert old in TINY
    message = _error(_write(tmp_path, TINY.replace(old, new, 1)))
    for part in expected:
        assert part in message, (part, message)


def test_dense_downsampling_beyond_x32_is_refused(tmp_path: Path) -> None:
    stages = "\n".join(f"  - {{depth: 1, stride: {1 if i == 0 else 2}}}" for i in range(5))
    text = TINY.replace("stem: cifar", "stem: [cifar, imagenet]").replace(
        "shortcut: [identity, dense]", "shortcut: dense").replace(
        "stages:\n  - {depth: {min: 1, max: 3}, width: [8, 16]}", "stages:\n" + stages)
    text = "\n".join(line for line in text.splitlines() if not line.startswith(("cardinality", "base_width")))
    message = _error(_write(tmp_path, text))
    assert "stages: allows the invalid combination stem imagenet: total downsampling x64" in message


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    text = TINY.replace("block: [basic, bottleneck]", "block: [basic, bottleneck")  # line 4
    message = _error(_write(tmp_path, text))
    assert "invalid YAML" in message and "from line 4" in message and "line 5" in message
    message = _error(_write(tmp_path, TINY + "stem_width: 32\n"))  # line 16 repeats line 3's key
    assert "line 16" in message and "'stem_width' is given twice" in message
    message = _error(_write(tmp_path, TINY.replace("stem: cifar", "stem: cifar\n\tbad: tab")))
    assert "line 3" in message


def test_missing_empty_and_non_mapping_files(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "space.yaml"
    assert "not found" in _error(missing)
    assert "empty" in _error(_write(tmp_path, "# nothing here\n"))
    assert "expected a mapping" in _error(_write(tmp_path, "- 1\n- 2\n"))


def test_from_dict_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"^mine: stem_width: got -1"):
        SearchSpace.from_dict({"input": {"resolution": 32, "channels": 3, "classes": 10},
                               "stages": [{"depth": 1, "width": 8}], "stem_width": -1}, source="mine")


def test_left_out_keys_take_arch_defaults() -> None:
    space = SearchSpace.from_dict({"input": {"resolution": 32, "channels": 3, "classes": 10},
                                   "stages": [{"depth": 1, "width": 8}]})
    assert space.size() == 1 and all(d.domain.fixed for d in space.dimensions())
    assert space.sample(random.Random(0)) == Arch(stages=(StageSpec(1, 1, 8),))


def test_every_condition_refers_to_a_dimension_asked_before_it() -> None:
    # A walk evaluates a dimension's conditions in order, so each names an earlier whole-net dimension
    # that the conditions before it guarantee was asked.
    names = [spec.key for spec in _SPECS]
    for spec in _SPECS:
        for i, when in enumerate(spec.when):
            earlier = _SPECS[names.index(when.key)]
            assert names.index(when.key) < names.index(spec.key) and not earlier.stage, (spec.key, when.key)
            prefix = spec.when[:len(earlier.when)]
            assert earlier.when == prefix and len(earlier.when) <= i, (spec.key, when.key)


# -- questions asked of the table without a space ---------------------------------------------------


def test_applicable_is_what_the_space_asks_to_rebuild_an_arch(imagenet_space: SearchSpace,
                                                               cifar_space: SearchSpace) -> None:
    # The space's own replay (params) names the unfixed dimensions it asks for: applicable must agree on
    # them, and add exactly the fixed ones, at the values the space fixes them to.
    rng = random.Random(0)
    for space in (imagenet_space, cifar_space):
        fixed = {d.name: plain_value(d.domain.first) for d in space.dimensions() if d.domain.fixed}
        classics = [*IMAGENET_NETS.values(), *CIFAR_NETS.values()]
        for arch in [space.sample(rng) for _ in range(300)] + classics:
            if not space.contains(arch):
                continue
            params, found = space.params(arch), applicable(arch)
            assert params is not None and {k: found[k] for k in params} == params
            assert {k: v for k, v in found.items() if k not in params} == {k: v for k, v in fixed.items()
                                                                            if k in found}
    resnext = applicable(IMAGENET_NETS["resnext50_32x4d"])
    assert resnext["cardinality"] == 32 and resnext["base_width"] == 4 and "growth_rate" not in resnext
    assert "base_width" not in applicable(IMAGENET_NETS["resnet50"])
    dense = applicable(IMAGENET_NETS["densenet121"])
    assert dense["dense_cardinality"] == 1 and "stages[0].width" not in dense and "cardinality" not in dense
    assert dense["shortcut"] == "dense" and "survival_prob" not in dense


def test_sizes_are_the_widths_and_depths_a_uniform_scale_moves() -> None:
    names = {s.name for s in _layout(2)}
    stages = {f"stages[{i}].{k}" for i in range(2) for k in ("depth", "width")}
    assert {n for n in names if is_size(n)} == {"stem_width", "growth_rate"} | stages


def test_inapplicable_names_what_dropped_values_leave_without_a_use() -> None:
    raw = load_yaml(RESNET_FAMILY)
    assert inapplicable(raw) == []  # a valid file gives no such key
    only_dense = {**raw, "shortcut": ["dense"]}
    assert inapplicable(only_dense) == [f"stages[{i}].width" for i in range(4)] + [
        "width_multiplier", "cardinality", "base_width"]
    assert inapplicable({**raw, "block": "basic"}) == ["cardinality", "base_width", "dense_cardinality"]
    assert inapplicable({**raw, "cardinality": [1]}) == ["base_width"]
    assert inapplicable({**raw, "survival": "none"}) == ["survival_prob"]
    no_dense = {k: v for k, v in raw.items() if k != "shortcut"}  # left out: Arch's identity shortcut
    assert inapplicable(no_dense) == ["growth_rate", "bottleneck_size", "compression", "dense_cardinality"]
    assert locate(raw, "stages[2].depth") == (raw["stages"][2], "depth")
    assert locate(raw, "order") == (raw, "order")


# -- exactness against brute force ------------------------------------------------------------------

SMALL = """\
input: {resolution: 64, channels: 3, classes: 10}
stem: [imagenet, cifar]
stem_width: [8, 16]
block: [basic, bottleneck]
shortcut: [identity, gated, dense]
order: [post, pre]
stages:
  - {depth: [1, 2], width: [8, 16], stride: 1}
  - {depth: [1, 3], width: 24, stride: [1, 2]}
width_multiplier: [1.0, 2.0]
cardinality: [1, 2]
base_width: [32, 64]
growth_rate: [4, 8]
bottleneck_size: 2
compression: [0.5, 1.0]
dense_cardinality: [1, 2]
dropout: 0.1
survival: [none, linear]
survival_prob: 0.5
"""


def stub_count(arch: Arch, *, resolution: int, num_classes: int, in_channels: int) -> SimpleNamespace:
    """Monotone in depth, widths, growth, compression (falling in stride); arbitrary in the kind dims."""
    side = resolution // (4 if arch.stem is Stem.IMAGENET else 1)
    channels = arch.stem_width
    total = channels * side * side * in_channels
    for i, s in enumerate(arch.stages):
        side //= s.stride
        if arch.shortcut is Shortcut.DENSE:
            grown = channels + s.depth * (arch.growth_rate or 0)
            total += s.depth * grown * (arch.growth_rate or 0) * (arch.bottleneck_size or 0) * side * side
            channels = int(grown * (arch.compression or 0))
        else:
            total += int(s.depth * (s.width or 0) * arch.width_multiplier * side * side)
    kind = ((arch.cardinality * 7 + arch.base_width) % 5 + 3 * (arch.order is Order.PRE)
            + 2 * (arch.block is Block.BASIC) + list(Shortcut).index(arch.shortcut) * 4
            + (arch.stem is Stem.CIFAR))
    return SimpleNamespace(flops=(total + num_classes) * (kind + 1))


def _every_arch(space: SearchSpace) -> set[Arch]:
    """Brute force: every Arch built from any combination of the values SMALL mentions, kept if contained."""
    found = set()
    stage_choices = [
        [StageSpec(d, 1, w) for d in (1, 2) for w in (8, 16, None)],
        [StageSpec(d, s, w) for d in (1, 3) for s in (1, 2) for w in (24, None)],
    ]
    survivals = [(Survival.NONE, 1.0), (Survival.LINEAR, 0.5), (Survival.LINEAR, 1.0)]
    kinds = itertools.product(Stem, (8, 16), Block, Shortcut, Order, *stage_choices, (1, 2), (32, 64))
    for (stem, sw, block, shortcut, order, s0, s1, card, bw), (survival, prob) in itertools.product(
            kinds, survivals):
        common: dict[str, Any] = {
            "stages": (s0, s1), "block": block, "shortcut": shortcut, "order": order, "stem": stem,
            "stem_width": sw, "cardinality": card, "base_width": bw, "dropout": 0.1,
            "survival": survival, "survival_prob": prob}
        variants: list[dict[str, Any]] = (
            [{"growth_rate": g, "bottleneck_size": 2, "compression": c} for g in (4, 8) for c in (0.5, 1.0)]
            if shortcut is Shortcut.DENSE else [{"width_multiplier": m} for m in (1.0, 2.0)])
        for extra in variants:
            try:
                arch = Arch(**common, **extra)
            except ValueError:
                continue
            if space.contains(arch):
                found.add(arch)
    return found


def test_size_probability_and_flops_range_match_brute_force(tmp_path: Path) -> None:
    space = SearchSpace.from_yaml(_write(tmp_path, SMALL))
    every = _every_arch(space)
    assert space.size() == len(every) and space.continuous_dimensions() == []
    assert sum(space.probability(a) for a in every) == pytest.approx(1.0)
    flops = {a: space.flops(a, stub_count) for a in every}
    extremes = space.flops_range(stub_count)
    assert extremes.min_flops == min(flops.values()) == space.min_flops(stub_count)
    assert extremes.max_flops == max(flops.values()) == space.max_flops(stub_count)
    assert flops[extremes.min_arch] == extremes.min_flops and flops[extremes.max_arch] == extremes.max_flops
    assert extremes.counted < len(every) / 20  # the point of corner enumeration
    rng = random.Random(0)
    assert all(space.sample(rng) in every for _ in range(300))


@pytest.mark.parametrize("path", [RESNET_FAMILY, CIFAR_FAMILY], ids=["resnet", "cifar"])
def test_real_flops_range_brackets_samples_and_zoo(path: Path) -> None:
    space = SearchSpace.from_yaml(path)
    extremes = space.flops_range()  # the default counter: resnas._build.count
    assert 0 < extremes.min_flops < extremes.max_flops
    assert space.flops(extremes.min_arch) == extremes.min_flops
    rng = random.Random(1)
    for arch in [space.sample(rng) for _ in range(150)] + [zoo.get(n) for n in zoo.names()]:
        if space.contains(arch):
            assert extremes.min_flops <= space.flops(arch) <= extremes.max_flops


def test_scaling_a_classic_on_the_grid_gives_torchvision_s_shallower_and_narrower_resnets() -> None:
    """resnet18 at half depth is torchvision's ResNet(BasicBlock, [1, 1, 1, 1]) and costs what fvcore counts
    for it (0.49x resnet18); at three quarters of its widths every width drops one grid step."""
    from torchvision.models.resnet import BasicBlock, ResNet

    from resnas import count
    from resnas._space_moves import Scale
    from tests._reference import fvcore_flops

    space = SearchSpace.from_yaml(RESNET_FAMILY)
    resnet18 = zoo.get("resnet18")
    half = space.scaled(resnet18, Scale.DEPTH, 0.5)
    assert half is not None and [s.depth for s in half.arch.stages] == [1, 1, 1, 1]
    assert [s.width for s in half.arch.stages] == [64, 128, 256, 512] and half.arch.stem_width == 64
    flops = count(half.arch, resolution=224, num_classes=1000, in_channels=3).flops
    assert flops == fvcore_flops(ResNet(BasicBlock, [1, 1, 1, 1]), 224)
    full = count(resnet18, resolution=224, num_classes=1000, in_channels=3).flops
    assert flops / full == pytest.approx(0.49, abs=0.01)
    narrow = space.scaled(resnet18, Scale.WIDTH, 0.75)
    assert narrow is not None and [s.width for s in narrow.arch.stages] == [48, 96, 192, 384]
    assert narrow.arch.stem_width == 48 and [s.depth for s in narrow.arch.stages] == [2, 2, 2, 2]
    assert space.params(narrow.arch) == narrow.params  # a point of the space the search can queue
    # Already at the grid's least width: nothing to scale.
    least = space.scaled(space.scaled(resnet18, Scale.WIDTH, 0.5).arch, Scale.WIDTH, 0.5)  # type: ignore[union-attr]
    assert least is None
