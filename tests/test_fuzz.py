"""Fuzzing the user's inputs (FLOP budgets, arch JSON, space YAML) through the library and the CLI.

Every input must give a result or a `ResnasError` (exit code 2 and one line on the CLI): never another
exception, a hang or a large allocation. Examples are derandomised, so a failure reproduces everywhere.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnas import cli, zoo
from resnas._arch import Arch
from resnas._budget import MAX_BUDGET, parse_budget
from resnas._build import count
from resnas._errors import ResnasError
from resnas._space import SearchSpace
from resnas._space_table import _SPECS

ROOT = Path(__file__).resolve().parent.parent
CIFAR_FAMILY = str(ROOT / "search_spaces" / "cifar_family.yaml")
# Per example: generous for a loaded 2-core machine, yet far below a materialised range or a built giant.
SECONDS = 20.0
MEGABYTES = 500


def fuzz(examples: int) -> Callable[[Any], Any]:
    """Hypothesis settings: reproducible (derandomised, no example database), no deadline (the guard times)."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """The example must finish within SECONDS and raise the process's peak memory by under MEGABYTES."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.monotonic()
    yield
    took = time.monotonic() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert took < SECONDS, f"took {took:.1f} s"
    assert grown < MEGABYTES, f"peak memory grew by {grown:.0f} MB"


def accepted_or_refused(call: Callable[[], Any]) -> Any:
    """`call()`'s result, or None where it raised a ResnasError; any other exception fails the test."""
    try:
        return call()
    except ResnasError as e:
        assert "\n" not in str(e) and len(str(e)) < 2000, str(e)
        return None


def run_cli(argv: list[str]) -> tuple[int, str]:
    """The CLI's exit code and stdout; exit code 2 must come with one `resnas: error:` line and no traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    if code == 2:
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("resnas: error: "), err.getvalue()
    else:
        assert code == 0, (code, err.getvalue())
    return code, out.getvalue()


# -- FLOP budgets ---------------------------------------------------------------------------------------------

BUDGET_LIKE = st.from_regex(r"\s?[-+]?[0-9]{0,25}(\.[0-9]{0,5})?([eE][-+]?[0-9]{1,5})?\s?[kKmMgGtTpP]?\s?"
                            r"(flops?|FLOPs|FLOP)?\s?", fullmatch=True)
BUDGETS = BUDGET_LIKE | st.text(max_size=30)


@fuzz(300)
@given(text=BUDGETS)
def test_parse_budget_gives_an_integer_in_range_or_a_config_error(text: str) -> None:
    with guard():
        flops = accepted_or_refused(lambda: parse_budget(text))
    assert flops is None or (isinstance(flops, int) and 1 <= flops <= MAX_BUDGET)


@fuzz(40)
@given(text=BUDGETS)
def test_space_command_with_any_budget(text: str) -> None:
    with guard():
        code, out = run_cli(["space", CIFAR_FAMILY, f"--budget={text}", "--samples", "0"])
    assert code == 2 or f"{parse_budget(text):,} FLOPs" in out


# -- arch JSON ------------------------------------------------------------------------------------------------

NUMBERS = (st.integers(min_value=-10**40, max_value=10**40)
           | st.sampled_from([0, 1, 2, 3, 64, 2000, 2001, 2**16, 2**16 + 1, 10**7, 10**30, 10**400])
           | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.5, 1.0, 1e7, 1e30]))
SCALARS = st.none() | st.booleans() | NUMBERS | st.text(max_size=12)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=16)
ENUMS = st.sampled_from(["imagenet", "cifar", "basic", "bottleneck", "identity", "gated", "dense", "post", "pre",
                         "none", "uniform", "linear"])
STAGE = st.fixed_dictionaries({}, optional={"depth": NUMBERS | SCALARS, "stride": st.sampled_from([1, 2, 3, 1.0]),
                                            "width": NUMBERS | st.none()})
ARCH_FIELDS = ["block", "shortcut", "order", "stem", "stem_width", "cardinality", "base_width", "width_multiplier",
               "dropout", "growth_rate", "bottleneck_size", "compression", "survival", "survival_prob"]
RANDOM_ARCHS = st.builds(
    lambda stages, fields: {"stages": stages, **fields},
    st.lists(STAGE, min_size=0, max_size=9) | JSON,
    st.dictionaries(st.sampled_from(ARCH_FIELDS + ["colour"]), ENUMS | NUMBERS | JSON, max_size=8),
) | JSON
# Valid networks with a field or two changed, to a plausible value or a hostile one: many are accepted.
WIDTHS = st.integers(min_value=1, max_value=70_000) | st.sampled_from([1, 2, 4, 16, 64, 65_536, 65_537])
FRACTIONS = st.floats(min_value=0.0, max_value=1.0)
PLAUSIBLE = {"stem_width": WIDTHS, "cardinality": WIDTHS, "base_width": WIDTHS, "growth_rate": WIDTHS,
             "bottleneck_size": WIDTHS, "width_multiplier": st.floats(min_value=0.01, max_value=70_000.0),
             "dropout": FRACTIONS, "compression": FRACTIONS, "survival_prob": FRACTIONS,
             "depth": st.integers(min_value=1, max_value=2100), "width": WIDTHS, "stride": st.sampled_from([1, 2])}
BASE_ARCHS = st.sampled_from(["resnet20", "resnet50", "resnext50_32x4d", "densenet_bc_100_12", "wrn_28_10"]).map(
    lambda name: zoo.get(name).to_dict())


def change(names: list[str]) -> st.SearchStrategy[list[tuple[str, Any]]]:
    """At most one (name, value) pair: a plausible value (enum values for the kind fields) or a hostile one."""
    pair = st.sampled_from(names).flatmap(lambda name: st.tuples(st.just(name), PLAUSIBLE.get(name, ENUMS) | NUMBERS))
    return st.lists(pair, max_size=1)


def _perturb(arch: dict[str, Any], changes: list[tuple[str, Any]], stage_changes: list[tuple[str, Any]]
             ) -> dict[str, Any]:
    """`arch` with the fields in `changes`, and those in `stage_changes` in its first stage, set."""
    return {**arch, **dict(changes), "stages": [{**arch["stages"][0], **dict(stage_changes)}, *arch["stages"][1:]]}


PERTURBED_ARCHS = st.builds(_perturb, BASE_ARCHS, change(ARCH_FIELDS), change(["depth", "width", "stride"]))
ARCHS = PERTURBED_ARCHS | RANDOM_ARCHS


def nested(depth: int) -> str:
    """An arch JSON text nested `depth` levels deep."""
    return '{"stages": ' + "[" * depth + "]" * depth + "}"


def check_arch(data: Any) -> None:
    """`data` (and its JSON) make an Arch that round-trips and counts, or a ConfigError."""
    with guard():
        arch = accepted_or_refused(lambda: Arch.from_dict(data) if isinstance(data, dict) else Arch.from_json(
            json.dumps(data)))
        if arch is not None:
            assert Arch.from_json(arch.to_json()) == arch
            count(arch, resolution=64)  # arithmetic only: instant at any size Arch accepts
        again = accepted_or_refused(lambda: Arch.from_json(json.dumps(data)))
    assert again == arch


@fuzz(500)
@given(data=PERTURBED_ARCHS)
def test_changed_valid_archs_are_accepted_or_refused(data: Any) -> None:
    check_arch(data)


@fuzz(300)
@given(data=RANDOM_ARCHS)
def test_random_json_is_accepted_or_refused_as_an_arch(data: Any) -> None:
    check_arch(data)


@fuzz(20)
@given(depth=st.sampled_from([50, 900, 1100, 20_000, 300_000]), text=st.text(max_size=200))
def test_deep_and_random_arch_texts_are_config_errors(depth: int, text: str) -> None:
    with guard():
        for candidate in (nested(depth), "[" * depth, text):
            assert accepted_or_refused(lambda: Arch.from_json(candidate)) is None


@fuzz(60)
@given(data=ARCHS)
def test_count_command_with_any_arch_file(tmp_path_factory: pytest.TempPathFactory, data: Any) -> None:
    path = tmp_path_factory.mktemp("arch") / "arch.json"
    path.write_text(json.dumps(data))
    with guard():
        code, out = run_cli(["count", str(path)])
    assert code == 2 or "FLOPs" in out


# -- space YAML -----------------------------------------------------------------------------------------------

KEYS = [spec.key for spec in _SPECS if not spec.stage]
STAGE_KEYS = [spec.key for spec in _SPECS if spec.stage]
RANGES = st.fixed_dictionaries({}, optional={"min": NUMBERS, "max": NUMBERS, "step": NUMBERS})
VALUES = ENUMS | NUMBERS | st.lists(ENUMS | NUMBERS, max_size=4) | RANGES | JSON
INPUT = st.fixed_dictionaries({}, optional={"resolution": st.sampled_from([0, 16, 32, 64, 224, 10**5]) | NUMBERS,
                                            "channels": NUMBERS, "classes": NUMBERS})
SPACES = st.builds(
    lambda given_input, stages, top: {"input": given_input, "stages": stages, **top},
    INPUT | JSON,
    st.lists(st.dictionaries(st.sampled_from(STAGE_KEYS + ["kernel"]), VALUES, max_size=3), max_size=9) | JSON,
    st.dictionaries(st.sampled_from(KEYS + ["colour"]), VALUES, max_size=8),
)
# Small valid spaces, perturbed one key at a time, so that the walks past loading are reached too.
BASE = {"input": {"resolution": 32, "channels": 3, "classes": 10}, "stem": "cifar", "stem_width": [8, 16],
        "block": ["basic", "bottleneck"], "shortcut": ["identity", "dense"],
        "stages": [{"depth": {"min": 1, "max": 3}, "width": [8, 16]}, {"depth": 2, "width": 32, "stride": 2}],
        "cardinality": [1, 4], "base_width": [16, 32], "growth_rate": [4, 8], "bottleneck_size": 4,
        "compression": [0.5, 1.0], "dense_cardinality": [1, 2], "survival": ["none", "linear"],
        "survival_prob": {"min": 0.5, "max": 1.0}}
MILD = (st.integers(min_value=1, max_value=64) | st.floats(min_value=0.05, max_value=1.0)
        | st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=4, unique=True)
        | st.builds(lambda low, span: {"min": low, "max": low + span}, st.integers(min_value=1, max_value=64),
                    st.integers(min_value=1, max_value=65_536))
        | st.builds(lambda low, span: {"min": low, "max": low + span}, st.floats(min_value=0.05, max_value=0.5),
                    st.floats(min_value=0.0, max_value=0.5)))


def _perturb_space(changes: list[tuple[str, Any]], stage_changes: list[tuple[str, Any]]) -> dict[str, Any]:
    """BASE with the keys in `changes`, and those in `stage_changes` in its first stage, set."""
    return {**BASE, **dict(changes), "stages": [{**BASE["stages"][0], **dict(stage_changes)}, BASE["stages"][1]]}


PERTURBED = st.builds(_perturb_space, st.lists(st.tuples(st.sampled_from(KEYS), MILD | VALUES), max_size=2),
                      st.lists(st.tuples(st.sampled_from(STAGE_KEYS), MILD | st.sampled_from([1, 2])), max_size=1))


def exercise(space: SearchSpace) -> None:
    """Every walk a search or `resnas space` takes."""
    space.size()
    space.flops_range()
    rng = random.Random(0)
    for lean in (1.0, 0.3):
        for _ in range(5):
            arch, params = space.sample_params(rng, lean=lean)
            assert space.contains(arch) and space.params(arch) is not None and space.probability(arch) > 0


def check_space(data: Any) -> None:
    """`data` makes a space that every walk can take, or a ConfigError."""
    with guard():
        space = accepted_or_refused(lambda: SearchSpace.from_dict(data))
        if space is not None:
            exercise(space)


@fuzz(300)
@given(data=PERTURBED)
def test_changed_valid_spaces_are_accepted_or_refused(data: Any) -> None:
    check_space(data)


@fuzz(200)
@given(data=SPACES)
def test_random_mappings_are_accepted_or_refused_as_spaces(data: Any) -> None:
    check_space(data)


@fuzz(40)
@given(data=SPACES | PERTURBED, text=st.text(max_size=300))
def test_space_command_with_any_file(tmp_path_factory: pytest.TempPathFactory, data: Any, text: str) -> None:
    folder = tmp_path_factory.mktemp("space")
    (folder / "space.yaml").write_text(yaml.safe_dump(data))
    (folder / "text.yaml").write_text(text)
    with guard():
        code, out = run_cli(["space", str(folder / "space.yaml"), "--budget", "1G", "--samples", "20"])
        assert code == 2 or "under budget" in out
        run_cli(["space", str(folder / "text.yaml"), "--samples", "5"])
