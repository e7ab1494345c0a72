"""Shared test set-up."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread per test: pytest-xdist runs a worker per core, and on the tests' small inputs a
    second thread costs more in synchronisation than it saves (10x slower when two workers thrash)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment for subprocesses that use Ray: a token of the tests' own, this venv on PATH."""
    from tests._e2e import environment

    return environment(tmp_path_factory.mktemp("token"))


@pytest.fixture(params=["optuna", "ray"])
def backend(request: pytest.FixtureRequest, ray_env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Each search backend in turn: its flags and the environment its subprocesses need."""
    from tests._e2e import BACKENDS

    return BACKENDS[request.param], ray_env
