"""`resnas space`: the report on a space, and one-line errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from resnas._budget import format_flops
from resnas._space import SearchSpace
from resnas.cli import main

ROOT = Path(__file__).resolve().parent.parent
RESNET_FAMILY = ROOT / "search_spaces" / "resnet_family.yaml"
CIFAR_FAMILY = ROOT / "search_spaces" / "cifar_family.yaml"


def test_report_on_the_cifar_space(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["space", str(CIFAR_FAMILY), "--budget", "1GFLOPs", "--samples", "300", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    space = SearchSpace.from_yaml(CIFAR_FAMILY)
    extremes = space.flops_range()
    for dim in space.dimensions():
        assert dim.name in out
    assert f"{space.size():,} architectures" in out and "continuous, counted once: survival_prob" in out
    assert f"{format_flops(extremes.min_flops)} to {format_flops(extremes.max_flops)}, exact" in out
    assert "budget     1.00 GFLOPs = 1,000,000,000 FLOPs" in out
    assert "samples    300 (seed 3)" in out
    assert "of the space's architectures" in out and "of random-search proposals" in out


def test_report_on_the_resnet_space_with_the_make_run_budget(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["space", str(RESNET_FAMILY), "--budget", "4GFLOPs", "--samples", "100"]) == 0
    out = capsys.readouterr().out
    assert "input 224x224x3, 1000 classes" in out and "under budget" in out and "samples    100" in out


def test_no_samples_and_a_budget_below_the_minimum(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["space", str(CIFAR_FAMILY), "--samples", "0"]) == 0
    out = capsys.readouterr().out
    assert "exact" in out and "samples" not in out and "budget" not in out
    assert main(["space", str(CIFAR_FAMILY), "--budget", "1K", "--samples", "5"]) == 0
    assert "under budget: nothing; the smallest architecture needs" in capsys.readouterr().out


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnas: error: ")
    return lines[0]


@pytest.mark.parametrize("budget", ["4potatoes", "-1G", "0", "nan", ""])
def test_bad_budget(capsys: pytest.CaptureFixture[str], budget: str) -> None:
    line = _one_line_error(capsys, ["space", str(CIFAR_FAMILY), f"--budget={budget}"])
    assert repr(budget) in line and "4GFLOPs" in line


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "no_such_space.yaml"
    line = _one_line_error(capsys, ["space", str(missing)])
    assert str(missing) in line and "not found" in line


def test_bad_space_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(CIFAR_FAMILY.read_text().replace("dropout: [0.0, 0.1, 0.2, 0.3]", "dropout: [0.0, 1.2]"))
    line = _one_line_error(capsys, ["space", str(path)])
    assert str(path) in line and "dropout[1]: got 1.2" in line


def test_negative_samples(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--samples: -1" in _one_line_error(capsys, ["space", str(CIFAR_FAMILY), "--samples", "-1"])
