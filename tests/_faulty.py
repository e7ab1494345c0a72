"""`python -m tests._faulty KEY=VALUE ... -- ARGS`: the resnas CLI with test faults passed in (resnas._lifecycle.Faults).

KEY is a field of `Faults`: `loss=nan` or `loss=oom` (every trial's first step), `exit_once=FILE` (Ray workers).
"""

from __future__ import annotations

import sys

from resnas._lifecycle import Faults
from resnas._train import Fault
from resnas.cli import main


def _faults(words: list[str]) -> Faults:
    given = dict(word.split("=", 1) for word in words)
    return Faults(loss=Fault(given["loss"]) if "loss" in given else None, exit_once=given.get("exit_once"))


if __name__ == "__main__":
    split = sys.argv.index("--")
    sys.exit(main(sys.argv[split + 1:], faults=_faults(sys.argv[1:split])))
