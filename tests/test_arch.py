"""The spec: validation messages, immutability, hashing, JSON round trip, survival schedules."""

from __future__ import annotations

import dataclasses
import json

import pytest

from resnas import Arch, StageSpec, zoo
from resnas._arch import Block, Shortcut, Survival

RESNET = dict(stages=[dict(depth=2, width=16), dict(depth=2, width=32, stride=2)], stem="cifar", stem_width=16)
DENSE = dict(stages=[dict(depth=2), dict(depth=2, stride=2)], shortcut="dense", growth_rate=12,
             bottleneck_size=4, compression=0.5, stem="cifar", stem_width=24)


def test_strings_become_enums_and_defaults_are_resnet_like() -> None:
    a = Arch(**RESNET)
    assert a.block is Block.BOTTLENECK and a.shortcut is Shortcut.IDENTITY and a.survival is Survival.NONE
    assert a.stages == (StageSpec(2, 1, 16), StageSpec(2, 2, 32))


def test_immutable_and_hashable() -> None:
    a = Arch(**RESNET)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.stem_width = 3  # type: ignore[misc]
    assert {a: 1}[Arch(**RESNET)] == 1
    assert hash(a) != hash(a.replace(stem_width=32))


@pytest.mark.parametrize("name", zoo.names())
def test_json_round_trip_is_exact(name: str) -> None:
    a = zoo.get(name)
    text = json.dumps(a.to_dict())
    back = Arch.from_dict(json.loads(text))
    assert back == a and hash(back) == hash(a) and back.to_dict() == a.to_dict()
    assert Arch.from_json(a.to_json()) == a


@pytest.mark.parametrize(
    "changes, field, fragment",
    [
        (dict(block="triangle"), "block", "'triangle'"),
        (dict(shortcut="skip"), "shortcut", "'identity', 'gated', 'dense'"),
        (dict(order="middle"), "order", "'post', 'pre'"),
        (dict(stem="mnist"), "stem", "'imagenet', 'cifar'"),
        (dict(stem_width=0), "stem_width", ">= 1"),
        (dict(stem_width=16.5), "stem_width", "integer"),
        (dict(dropout=1.0), "dropout", "[0, 1)"),
        (dict(survival="linear", survival_prob=0.0), "survival_prob", "(0, 1]"),
        (dict(survival_prob=0.5), "survival_prob", "survival schedule"),
        (dict(block="basic", cardinality=32, base_width=4), "cardinality", "bottleneck"),
        (dict(growth_rate=12), "growth_rate", "only applies to shortcut 'dense'"),
        (dict(width_multiplier=0.0), "width_multiplier", "> 0"),
        (dict(stages=[]), "stages", "non-empty"),
        (dict(stages=[dict(depth=0, width=16)]), "stages[0].depth", ">= 1"),
        (dict(stages=[dict(depth=1, width=16, stride=3)]), "stages[0].stride", "1 or 2"),
        (dict(stages=[dict(depth=1)]), "stages[0].width", "required"),
        (dict(stages=[dict(depth=1, width=16, kernel=5)]), "stages[0]", "kernel"),
    ],
)
def test_residual_validation_names_the_field(changes: dict, field: str, fragment: str) -> None:
    with pytest.raises(ValueError) as e:
        Arch(**{**RESNET, **changes})
    assert str(e.value).startswith(field) and fragment in str(e.value)


@pytest.mark.parametrize(
    "changes, field, fragment",
    [
        (dict(growth_rate=None), "growth_rate", "required"),
        (dict(compression=1.5), "compression", "(0, 1]"),
        (dict(stages=[dict(depth=2, width=64)]), "stages[0].width", "growth_rate"),
        (dict(stages=[dict(depth=2, stride=2)]), "stages[0].stride", "first stage"),
        (dict(width_multiplier=2.0), "width_multiplier", "growth_rate"),
        (dict(cardinality=5), "cardinality", "must divide growth_rate"),
        (dict(cardinality=4, block="basic"), "cardinality", "bottleneck"),
        (dict(stem="imagenet", stages=[dict(depth=1)] + [dict(depth=1, stride=2)] * 4), "stages", "x64"),
    ],
)
def test_dense_validation_names_the_field(changes: dict, field: str, fragment: str) -> None:
    with pytest.raises(ValueError) as e:
        Arch(**{**DENSE, **changes})
    assert str(e.value).startswith(field) and fragment in str(e.value)


def test_from_dict_rejects_unknown_and_missing_fields() -> None:
    with pytest.raises(ValueError, match="^colour: unknown arch field"):
        Arch.from_dict({**Arch(**RESNET).to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="^stages: required"):
        Arch.from_dict({"block": "basic"})
    with pytest.raises(ValueError, match="arch JSON"):
        Arch.from_json("{not json")


def test_cross_family_combinations_are_valid() -> None:
    Arch(**{**DENSE, "cardinality": 4, "order": "post"})
    Arch(**{**RESNET, "shortcut": "gated", "order": "pre"})
    Arch(**{**RESNET, "shortcut": "gated", "survival": "linear", "survival_prob": 0.5})


@pytest.mark.parametrize("schedule, p_last, expected", [
    ("none", 1.0, [1.0]),
    ("uniform", 0.7, [0.7]),
    ("linear", 0.5, [0.5]),  # L = 1: the only block is the last, p_1 = p_L
])
def test_survival_schedule_with_one_block(schedule: str, p_last: float, expected: list[float]) -> None:
    a = Arch(stages=[dict(depth=1, width=16)], stem="cifar", survival=schedule, survival_prob=p_last)
    assert a.num_blocks == 1 and a.survival_probs() == pytest.approx(expected)


def test_linear_schedule_matches_huang_et_al() -> None:
    a = zoo.get("resnet110_stochastic_depth")
    probs = a.survival_probs()
    n = 54
    assert len(probs) == n
    assert probs[0] == pytest.approx(1 - 0.5 / n) and probs[-1] == pytest.approx(0.5)
    assert probs[26] == pytest.approx(1 - 27 / n * 0.5)
    assert all(x > y for x, y in zip(probs, probs[1:]))
