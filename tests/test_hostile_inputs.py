"""Hostile inputs through the CLI: each is one line naming the problem and the fix, exit code 2, found before
anything large is allocated (issue 12: ranges, sizes, nesting, broken files, zero flags, inf and nan)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from resnas import cli
from resnas._arch import MAX_BLOCKS, MAX_WIDTH, Arch
from resnas._build import MAX_PARAMS, count
from resnas._domains import FlopsTrend, IntRange, _RandomSuggester

ROOT = Path(__file__).resolve().parent.parent
CIFAR_FAMILY = str(ROOT / "search_spaces" / "cifar_family.yaml")
# A search that would stop quickly if a check below let it start.
QUICK_SEARCH = ["search", "--space", CIFAR_FAMILY, "--budget", "1G", "--trials", "1", "--epochs", "1",
                "--train-samples", "20", "--val-samples", "10", "--no-classics"]
SPACE = """\
input: {resolution: 32, channels: 3, classes: 10}
stem: cifar
stem_width: STEM
block: basic
shortcut: identity
stages:
  - {depth: [1, 2], width: [8, 16]}
"""


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    """RESNAS_DEBUG would turn the one-line errors under test into tracebacks."""
    monkeypatch.delenv("RESNAS_DEBUG", raising=False)


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI, which must fail with exit code 2 and one `resnas: error:` line; that line."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnas: error: ") and "Traceback" not in err, err
    return lines[0]


def _space(tmp_path: Path, stem_width: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("STEM", stem_width))
    return str(path)


def _arch_file(tmp_path: Path, data: Any, name: str = "arch.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def _basic(*stages: dict[str, Any]) -> dict[str, Any]:
    return {"stages": list(stages), "block": "basic", "stem": "cifar", "stem_width": 16}


# -- 1. space files: ranges are sampled, never listed; absurd sizes are refused ----------------------------


def test_an_absurd_range_is_refused_when_the_space_is_read(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    path = _space(tmp_path, "{min: 1, max: 1000000000000}")
    line = _one_line_error(capsys, ["space", path, "--samples", "10"])
    assert "stem_width.max" in line and "1000000000000" in line and f"<= {MAX_WIDTH}" in line


def test_the_widest_allowed_range_samples_without_listing_it(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    path = _space(tmp_path, f"{{min: 1, max: {MAX_WIDTH}}}")
    assert cli.main(["space", path, "--budget", "1G", "--samples", "200"]) == 0
    assert f"stem_width {'':<3}".split()[0] in capsys.readouterr().out


def test_a_range_far_beyond_memory_is_sampled_by_index() -> None:
    assert len(IntRange(1, 10**12).options()) == 10**12  # lazy: a tuple of it would not fit in memory
    for lean in (1.0, 0.25):
        picks = _RandomSuggester(random.Random(0), {"x": FlopsTrend.INCREASING}, {}, lean)
        value = picks.suggest_int("x", 1, 10**12, step=7)
        assert 1 <= value <= 10**12 * lean + 7 and (value - 1) % 7 == 0


def test_a_two_million_entry_list_is_refused_at_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = _space(tmp_path, "[" + ", ".join(map(str, range(1, 2_000_001))) + "]")
    line = _one_line_error(capsys, ["space", path, "--samples", "0"])
    assert "too long for a search space file" in line and "ranges" in line


def test_a_list_longer_than_any_hand_written_one_is_refused(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    path = _space(tmp_path, "[" + ", ".join(map(str, range(1, 1002))) + "]")
    line = _one_line_error(capsys, ["space", path, "--samples", "0"])
    assert "stem_width" in line and "1,001 values" in line and "range" in line


def test_a_duplicate_at_the_end_of_a_long_list_is_found(capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    path = _space(tmp_path, "[" + ", ".join(map(str, range(1, 1000))) + ", 500]")
    line = _one_line_error(capsys, ["space", path, "--samples", "0"])
    assert "stem_width[999]: 500 is listed twice" in line


def test_too_many_enumerated_combinations_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    # Every one of 2 x 8192 (order, cardinality) networks is valid, but walking them all would take seconds.
    path.write_text(SPACE.replace("STEM", "16").replace(
        "block: basic", "block: bottleneck\norder: [post, pre]\ncardinality: {min: 1, max: 8192}"))
    line = _one_line_error(capsys, ["space", str(path), "--samples", "0"])
    assert "combinations" in line and "list fewer values" in line


def test_deeply_nested_yaml_and_huge_integers_are_config_errors(capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    line = _one_line_error(capsys, ["space", _space(tmp_path, "[" * 100_000 + "]" * 100_000)])
    assert "nested too deeply" in line
    line = _one_line_error(capsys, ["space", _space(tmp_path, "9" * 5000)])
    assert "space.yaml" in line and "invalid YAML value" in line


def test_absurd_sample_counts_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line_error(capsys, ["space", CIFAR_FAMILY, "--samples", str(10**12)])
    assert "--samples" in line and "100,000" in line


# -- 2. arch sizes: caught by the validator or by the parameter count, before any tensor exists ------------


@pytest.mark.parametrize("stage, fragment", [
    ({"depth": 1, "width": 10**7}, f"stages[0].width: 10000000 must be <= {MAX_WIDTH}"),
    ({"depth": 1, "width": 1e30}, "stages[0].width: expected an integer, got 1e+30"),
    ({"depth": 1, "width": 10**30}, f"must be <= {MAX_WIDTH}"),
    ({"depth": 10_000, "width": 16}, f"stages[0].depth: 10000 must be <= {MAX_BLOCKS}"),
])
def test_absurd_arch_sizes_are_refused_by_count_and_export(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           stage: dict[str, Any], fragment: str) -> None:
    path = _arch_file(tmp_path, _basic(stage))
    assert fragment in _one_line_error(capsys, ["count", path])
    out = tmp_path / "net"
    assert fragment in _one_line_error(capsys, ["export", "--arch", path, "--out", str(out)])
    assert not out.exists()  # refused before the folder was made


def test_blocks_over_the_whole_net_are_capped(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = _arch_file(tmp_path, _basic(*[{"depth": MAX_BLOCKS // 2 + 1, "width": 16}] * 2))
    line = _one_line_error(capsys, ["count", path])
    assert f"{MAX_BLOCKS + 2} blocks, at most {MAX_BLOCKS}" in line


def test_a_network_too_large_to_build_is_counted_but_not_exported(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    wide = _basic({"depth": 1, "width": 60_000}, {"depth": 1, "width": 60_000, "stride": 2})
    path = _arch_file(tmp_path, wide)
    params = f"{count(Arch.from_dict(wide)).params:,}"  # about 100 G
    assert cli.main(["count", path]) == 0  # arithmetic only: any size is fine to count
    assert params in capsys.readouterr().out
    out = tmp_path / "net"
    line = _one_line_error(capsys, ["export", "--arch", path, "--out", str(out)])
    assert f"{params} parameters" in line and f"at most {MAX_PARAMS:,}" in line and "lower the widths" in line
    assert not out.exists() or not any(out.iterdir())  # nothing written


# -- 3. nesting ----------------------------------------------------------------------------------------------


def test_a_deeply_nested_arch_json_is_a_config_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    path = _arch_file(tmp_path, deep)
    assert "nested too deeply" in _one_line_error(capsys, ["count", path])
    assert "nested too deeply" in _one_line_error(capsys, ["count", deep])
    assert "nested too deeply" in _one_line_error(capsys, ["export", "--arch", path, "--out", str(tmp_path / "n")])
    with pytest.raises(ValueError, match="nested too deeply"):
        Arch.from_json('{"stages": ' + "[" * 100_000 + "]" * 100_000 + "}")


def test_line_breaks_in_names_do_not_break_the_one_line_error(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    path = _arch_file(tmp_path, {"stages": [{"depth": 1, "width": 8}], "line\nbreak": 1}, name="a\nb.json")
    line = _one_line_error(capsys, ["count", path])
    assert "a\\nb.json" in line and "'line\\nbreak': unknown arch field" in line


# -- 4. and 5. datasets ----------------------------------------------------------------------------------


def test_a_non_image_in_an_image_folder_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "images"
    for label, colour in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
        (images / label).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 40), colour).save(images / label / f"{i}.jpg")
    broken = images / "cat" / "broken.jpg"
    broken.write_text("not a JPEG at all")
    line = _one_line_error(capsys, [*QUICK_SEARCH, "--dataset", "imagefolder", "--data-root", str(images),
                                    "--train-samples", "7", "--val-samples", "2", "--data-cache", str(tmp_path / "cache"),
                                    "--out", str(tmp_path / "run")])
    assert f"cannot decode {broken} as an image" in line and f"delete it or move it out of {images}" in line


def test_a_data_root_that_does_not_exist_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    line = _one_line_error(capsys, [*QUICK_SEARCH, "--dataset", "fashion-mnist", "--data-root", str(missing),
                                    "--out", str(tmp_path / "run")])
    assert line.startswith(f"resnas: error: --data-root {missing} is not a folder")


# -- 6. and 7. flags ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, value", [("--classes", "0"), ("--resolution", "0"), ("--in-channels", "0"),
                                         ("--resolution", "-5")])
def test_count_refuses_zero_instead_of_taking_the_default(capsys: pytest.CaptureFixture[str], flag: str,
                                                          value: str) -> None:
    line = _one_line_error(capsys, ["count", "resnet18", flag, value])
    assert f"{flag} must be at least" in line and f"got {value}" in line


@pytest.mark.parametrize("flags, fragment", [
    (["--timeout", "inf"], "--timeout must be a positive, finite number of seconds, got inf"),
    (["--timeout", "nan"], "--timeout must be a positive, finite number of seconds, got nan"),
    (["--lr", "inf"], "--lr must be positive and finite, got inf"),
    (["--lr", "nan"], "--lr must be positive and finite"),
    (["--proxy-width", "nan"], "--proxy-width must be in (0, 1]"),
    (["--seed", "-1"], "--seed must be at least 0"),
    (["--seed", str(2**40)], "--seed must be at most"),
    (["--train-resolution", str(10**6)], "--train-resolution must be at most"),
    (["--backend", "ray", "--cpus-per-trial", "inf"], "--cpus-per-trial must be positive and finite"),
    (["--backend", "ray", "--gpus-per-trial", "nan"], "--gpus-per-trial must be in [0, 1]"),
])
def test_search_refuses_non_finite_and_out_of_range_settings(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                              flags: list[str], fragment: str) -> None:
    line = _one_line_error(capsys, [*QUICK_SEARCH, "--dataset", "synthetic", "--out", str(tmp_path / "run"),
                                    *flags])
    assert fragment in line
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


# -- 8. version and help ----------------------------------------------------------------------------------


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"resnas {version('resnas')}\n"


def test_every_sub_command_help_shows_its_defaults() -> None:
    import argparse

    parser = cli._parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    checked = 0
    for name, sub in commands.choices.items():
        text = re.sub(r"\s", "", sub.format_help())
        for action in sub._actions:
            if action.help and action.default not in (None, False, argparse.SUPPRESS) \
                    and "default" not in action.help:
                assert re.sub(r"\s", "", f"(default: {action.default})") in text, (name, action.dest)
                checked += 1
    assert checked > 0  # the search flags without a default in their help, at least
