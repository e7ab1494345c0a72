"""`resnas` command line: one sub-command per module in `resnas._commands`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, NoReturn, Sequence

from resnas._errors import ResnasError

if TYPE_CHECKING:
    from resnas._lifecycle import Faults

# Sub-command modules, each with `register(subparsers)` setting `func(args) -> int` on its parser.
_COMMANDS = ("count", "space", "search", "verify", "export", "submit", "jobs")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `resnas: error: ...` and exit code 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"resnas: error: {self.prog.removeprefix('resnas').strip() or 'usage'}: {message} "
                     f"(see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog="resnas", description="Architecture search over the ResNet family.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"resnas._commands.{name}").register(sub)
    return parser


def message(e: ResnasError) -> str:
    """The error as one line, worded about the flag at fault where there is one: `--trials must be ...`."""
    if e.field is None:
        return e.message
    return f"--{e.field.replace('_', '-')} {e.message}"


def main(argv: Sequence[str] | None = None, *, faults: Faults | None = None) -> int:
    """Run one command; `faults` (tests only) breaks trials of a search on purpose."""
    parser = _parser()
    args = parser.parse_args(argv)
    args.faults = faults
    try:
        return int(args.func(args) or 0)
    except ResnasError as e:
        # Problems a user can cause; anything else is a bug and keeps its traceback.
        if os.environ.get("RESNAS_DEBUG"):
            raise
        print(f"resnas: error: {message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("resnas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
