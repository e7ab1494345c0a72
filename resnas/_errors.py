"""Errors a user can cause, typed by layer; the CLI prints them as one line and exits with code 2.

Anything else (a bug) keeps its traceback. Library messages name settings by their field names
(`trials`, `budget`); the CLI alone words them as flags (`--trials`), through `ResnasError.field`.
"""

from __future__ import annotations


class ResnasError(Exception):
    """A problem in the user's input (settings, files, data, storage) with a message naming the fix.

    `field` is the setting at fault, where one is (a `SearchConfig` field name): the CLI words the
    message as being about that flag.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only `field` survives pickling (Ray ships exceptions between processes).
        return (_rebuild, (type(self), self.message, self.field))


def _rebuild(cls: type[ResnasError], message: str, field: str | None) -> ResnasError:
    return cls(message, field=field)


class ConfigError(ResnasError, ValueError):
    """Settings, a space file or an arch that cannot work (also a ValueError, as validators raise)."""


class DataError(ResnasError):
    """A dataset that is missing, unreadable or not what it claims to be."""


class StorageError(ResnasError):
    """A run folder, study storage or cluster that cannot be used as asked."""


class UserError(ResnasError):
    """A misuse of the command line itself (flag combinations); raised by resnas._commands only."""
