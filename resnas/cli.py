"""`resnas` command line: one sub-command per module in `resnas._commands`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn, Sequence

from resnas._errors import ResnasError

if TYPE_CHECKING:
    from resnas._lifecycle import Faults

# Sub-command modules, each with `register(subparsers)` setting `func(args) -> int` on its parser.
_COMMANDS = ("count", "space", "search", "sweep", "analyze", "verify", "export", "submit", "jobs")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each option's default, unless it has none (None, off) or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_ = action.help or ""
        if action.default in (None, False) or "default" in help_ or "%(default)" in help_:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `resnas: error: ...` and exit code 2, no usage dump.

    Sub-command parsers are made by `add_parser` with this class too, so they share the help format.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"resnas: error: {self.prog.removeprefix('resnas').strip() or 'usage'}: {message} "
                     f"(see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog="resnas", description="Architecture search over the ResNet family.")
    parser.add_argument("--version", action="version", version=f"resnas {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"resnas._commands.{name}").register(sub)
    return parser


def version() -> str:
    """The installed package's version, else the source tree's `resnas.__version__`, else 'unknown'."""
    from importlib import metadata

    try:
        return metadata.version("resnas")
    except metadata.PackageNotFoundError:
        import resnas

        return str(getattr(resnas, "__version__", "unknown"))


def message(e: ResnasError) -> str:
    """The error as one line, worded about the flag at fault where there is one: `--trials must be ...`."""
    text = e.message if e.field is None else f"--{e.field.replace('_', '-')} {e.message}"
    # A file name or value quoted in the message may hold a line break; escaped, the message stays one line.
    return text.replace("\r", "\\r").replace("\n", "\\n")


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
