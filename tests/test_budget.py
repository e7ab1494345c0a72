"""FLOP budgets: every accepted spelling parses exactly; anything else is a one-line ValueError."""

from __future__ import annotations

import pytest

from resnas._budget import format_flops, parse_budget


@pytest.mark.parametrize("text, flops", [
    ("4G", 4_000_000_000),
    ("4GFLOPs", 4_000_000_000),
    ("4gflops", 4_000_000_000),
    ("4GFLOP", 4_000_000_000),
    ("4 GFLOPs", 4_000_000_000),
    ("  4G  ", 4_000_000_000),
    ("600MFLOPs", 600_000_000),
    ("600M", 600_000_000),
    ("600m", 600_000_000),
    ("1.5G", 1_500_000_000),
    ("0.1G", 100_000_000),
    (".5K", 500),
    ("4e9", 4_000_000_000),
    ("4E+9", 4_000_000_000),
    ("1.5e3", 1500),
    ("4e9FLOPs", 4_000_000_000),
    ("250K", 250_000),
    ("250kflops", 250_000),
    ("1T", 1_000_000_000_000),
    ("4000000000", 4_000_000_000),
    ("4000FLOPs", 4000),
    ("1", 1),
    ("1.0000000001G", 1_000_000_000),  # floored: FLOPs are whole, so <= 1000000000.1 means <= 1000000000
])
def test_accepted_forms_parse_exactly(text: str, flops: int) -> None:
    assert parse_budget(text) == flops
    assert isinstance(parse_budget(text), int)


def test_decimal_arithmetic_has_no_float_error() -> None:
    # 0.3 * 1e9 and 4.35 * 1e9 are off by one ulp in binary floating point.
    assert parse_budget("0.3G") == 300_000_000
    assert parse_budget("4.35G") == 4_350_000_000
    assert parse_budget("1.1T") == 1_100_000_000_000


@pytest.mark.parametrize("text", [
    "4potatoes", "-1G", "0", "0G", "0.0004K", "nan", "inf", "", "   ", "G", "GFLOPs", "4GF", "4 G F",
    "1e3K", "4..5G", "4,000", "4_000", "4P", "0x10", "1e-3",
])
def test_rejected_forms_name_the_string_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_budget(text)
    message = str(info.value)
    assert repr(text) in message and "4GFLOPs" in message and "600MFLOPs" in message
    assert "\n" not in message


@pytest.mark.parametrize("text", ["1e400", "1e19", "2000000T", "1000000000000000001"])
def test_absurd_budgets_are_refused_before_any_float_overflows(text: str) -> None:
    with pytest.raises(ValueError, match="over the limit of 1e18 FLOPs") as info:
        parse_budget(text)
    assert repr(text) in str(info.value)
    assert parse_budget("1e18") == 10**18


@pytest.mark.parametrize("flops, text", [
    (4_110_000_000, "4.11 GFLOPs"),
    (4_000_000_000, "4.00 GFLOPs"),
    (600_000_000, "600.00 MFLOPs"),
    (1_500_000_000_000, "1.50 TFLOPs"),
    (250_000, "250.00 KFLOPs"),
    (999_999_999, "1.00 GFLOPs"),
    (12, "12 FLOPs"),
    (0, "0 FLOPs"),
])
def test_format_flops(flops: int, text: str) -> None:
    assert format_flops(flops) == text


def test_format_round_trips_through_parse() -> None:
    for flops in (4_110_000_000, 600_000_000, 250_000, 1_500_000_000_000):
        assert parse_budget(format_flops(flops).replace(" ", "")) == flops
