"""FLOP budgets as people write them ("4GFLOPs", "600M", "1.5G", "4e9") and back."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from resnas._errors import ConfigError

_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}

# Either an exponent or a K/M/G/T suffix, not both: "4e9G" is far more likely a typo than a wish.
# The exponent has at most three digits so that a typo cannot ask for a billion-digit integer.
_BUDGET = re.compile(
    r"(?P<mantissa>\d+(?:\.\d*)?|\.\d+)(?:(?P<exponent>e[+-]?\d{1,3})|\s*(?P<suffix>[kmgt]))?\s*(?:flops?)?",
    re.IGNORECASE,
)

# Far beyond any network (ResNet-152 at 224 px is 1.2e10): larger values are typos, and overflow floats.
MAX_BUDGET = 10**18

BUDGET_FORMS = ("a positive number with an optional K/M/G/T suffix and an optional 'FLOPs', "
                "e.g. 4G, 4GFLOPs, 600MFLOPs, 1.5G, 4e9, 250K, 1T or 4000000000")


def parse_budget(text: str) -> int:
    """The FLOP count that `text` ("4GFLOPs", "600M", "1.5G", "4e9", "250K", "1T", "4000") denotes."""
    match = _BUDGET.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"invalid FLOP budget {text!r}: expected {BUDGET_FORMS}")
    number = match["mantissa"] + (match["exponent"] or "")
    suffix = (match["suffix"] or "").lower()
    # Decimal keeps "1.5G" exactly 1_500_000_000; flooring is exact too, since a network's FLOPs are an
    # integer and so fit under 1234.5 exactly when they fit under 1234.
    flops = math.floor(Decimal(number) * _SCALE[suffix])
    if flops < 1:
        raise ConfigError(f"invalid FLOP budget {text!r}: it must be at least 1 FLOP; expected {BUDGET_FORMS}")
    if flops > MAX_BUDGET:
        raise ConfigError(f"invalid FLOP budget {text!r}: over the limit of 1e18 FLOPs (ResNet-152 needs 1.2e10); "
                          "give a budget in G or T")
    return flops


def format_flops(n: int) -> str:
    """`n` FLOPs for people: "4.11 GFLOPs", "600.00 MFLOPs", "12 FLOPs"."""
    for prefix in "TGMK":
        factor = _SCALE[prefix.lower()]
        # Rounded first, so that 999_999_999 reads "1.00 GFLOPs" rather than "1000.00 MFLOPs".
        if round(n / factor, 2) >= 1:
            return f"{n / factor:.2f} {prefix}FLOPs"
    return f"{n} FLOPs"
