"""`resnas` command line: one sub-command per module in `resnas._commands`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn, Sequence

from resnas._errors import UserError

# Sub-command modules, each with `register(subparsers)` setting `func(args) -> int` on its parser.
_COMMANDS = ("count", "space", "search", "export", "submit", "jobs")


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError) as e:
        # ValueError is what the spec, budget and space validators raise for bad user input.
        if os.environ.get("RESNAS_DEBUG"):
            raise
        print(f"resnas: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("resnas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
