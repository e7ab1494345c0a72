"""The CLI's error contract: a user's error is one line naming the flag, exit 2; a bug keeps its traceback."""

from __future__ import annotations

import argparse

import pytest

from resnas import cli
from resnas._errors import ConfigError, DataError


def _run_with(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> int:
    """`resnas count resnet18` with the command replaced by one raising `error`."""
    from resnas._commands import count

    def fail(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(count, "_run", fail)
    return cli.main(["count", "resnet18"])


def test_a_config_error_is_one_line_naming_the_flag(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("RESNAS_DEBUG", raising=False)
    error = ConfigError("must be at least 1, got 0", field="train_samples")
    assert str(error) == "train_samples: must be at least 1, got 0"  # the library names the field
    assert _run_with(monkeypatch, error) == 2
    assert capsys.readouterr().err == "resnas: error: --train-samples must be at least 1, got 0\n"


def test_an_error_without_a_field_is_printed_as_it_is(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("RESNAS_DEBUG", raising=False)
    assert _run_with(monkeypatch, DataError("no data here; set data_root")) == 2
    assert capsys.readouterr().err == "resnas: error: no data here; set data_root\n"


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESNAS_DEBUG", raising=False)
    # A plain ValueError is not a user's error (the validators raise ConfigError): it must not be swallowed.
    with pytest.raises(ValueError, match="internal"):
        _run_with(monkeypatch, ValueError("internal"))


def test_resnas_debug_shows_the_traceback_of_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNAS_DEBUG", "1")
    with pytest.raises(ConfigError):
        _run_with(monkeypatch, ConfigError("bad", field="lr"))


def test_typed_errors_survive_pickling() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(ConfigError("must be positive", field="lr")))
    assert type(error) is ConfigError and error.field == "lr" and str(error) == "lr: must be positive"
