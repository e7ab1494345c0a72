"""`search`: a FLOP-budgeted search on the backend its config names (resnas._local or resnas._ray).

Over-budget proposals are never trained: they are told to Optuna with an infeasible constraint, so TPE and
NSGA-II learn to stay under the budget, and they do not count towards `trials` (see resnas._lifecycle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resnas._config import Backend, SearchConfig

if TYPE_CHECKING:  # the core imports optuna: loaded when a search starts, so the CLI starts light
    from resnas._lifecycle import Faults, Report, SearchBackend
    from resnas._trial import TrialRecord


def _backend(kind: Backend) -> SearchBackend:
    if kind is Backend.RAY:
        from resnas._ray import RayBackend  # imports ray: only when asked for

        return RayBackend()
    from resnas._local import LocalBackend

    return LocalBackend()


def search(cfg: SearchConfig, report: Report, *, faults: Faults | None = None) -> list[TrialRecord]:
    """Run (or resume) the search until `cfg.trials` candidates are trained; returns every trial's record."""
    from resnas._lifecycle import Faults, SearchCore

    return SearchCore.prepare(cfg, report).run(_backend(cfg.backend), faults or Faults())
