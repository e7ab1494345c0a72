"""The search's Optuna study: the only reader and writer of what a trial stores, through Optuna's public API.

A trial's resnas record lives in its user attributes under the keys of `_Key`; nothing else reads or writes
them. Only Optuna's public API is used: a trial cut off by a dead process is marked through a study attribute
(`_Key.INTERRUPTED` + its number), since a stored trial takes attributes only through private calls.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from resnas._config import PrunerName, SamplerName, SearchConfig
from resnas._errors import ConfigError, StorageError
from resnas._runfolder import pid_alive
from resnas._trial import Origin, TrialRecord, TrialState

if TYPE_CHECKING:
    from resnas._arch import Arch
    from resnas._blocks import Cost

_FROZEN = optuna.trial.TrialState


class _Key:
    """User-attribute names of a trial's record (trial level) and of the study's settings (study level)."""

    STATE, REASON, ARCH, FLOPS, MACS, PARAMS = "state", "reason", "arch", "flops", "macs", "params"
    WORKER, NODE, TRAINED_ARCH, TRAIN_FLOPS = "worker", "node", "trained_arch", "train_flops"
    EPOCHS, VAL_ACCURACY, IMAGES_PER_S, TRAIN_SECONDS = "epochs", "val_accuracy", "images_per_s", "train_seconds"
    RESUMED_FROM_EPOCH, RETRY_OF, FIRST_OF_KIND = "resumed_from_epoch", "retry_of", "stratified_start"
    NAME, CLASSIC, DUPLICATE_OF, MOVE, MOVE_OF = "name", "classic", "duplicate_of", "local_move", "move_of"
    SHORTCUT, ORDER, BLOCK, SCALED = "shortcut", "order", "block", "scaled_classic"
    SETTINGS, STUDY_ID, INTERRUPTED = "resnas_settings", "resnas_study_id", "resnas_interrupted:"


# Feasible when <= 0: the samplers read it to learn where the budget's edge lies.
CONSTRAINT = "flops_over_budget"


def worker_id() -> str:
    """This process, as a trial records who trains it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def make_sampler(cfg: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler named by `cfg`; TPE is multivariate, grouped (define-by-run) and constraint-aware."""
    if cfg.sampler is SamplerName.RANDOM:
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.sampler is SamplerName.NSGA2:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, cfg.trials)))
    # Optuna's default of 10 random startup trials: budget rejections count among them, and fewer let TPE
    # lock onto the first family that happened to fit. `group` is still marked experimental.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=10)


def prunes(cfg: SearchConfig) -> bool:
    """Whether trials may stop early: Optuna cannot prune multi-objective studies, nor one-epoch trials."""
    return cfg.pruner is not PrunerName.NONE and not cfg.multi_objective and cfg.epochs >= 2


def make_pruner(cfg: SearchConfig) -> optuna.pruners.BasePruner:
    if not prunes(cfg):
        return optuna.pruners.NopPruner()
    if cfg.pruner is PrunerName.MEDIAN:
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg.epochs, reduction_factor=3)


@dataclass(frozen=True)
class Screened:
    """A proposal priced at the deployment input: its arch and cost, whether it fits the budget, and the zoo
    network it is (or "")."""

    arch: Arch
    cost: Cost
    fits: bool
    name: str = ""


@dataclass(frozen=True)
class Twin:
    """A trial with the same Arch as a proposal: its number, resnas state and objective values (if settled)."""

    number: int
    state: TrialState
    values: tuple[float, ...] | None


def record_screen(trial: optuna.Trial, screened: Screened, budget: int) -> None:
    """Store a proposal's arch, name and costs, and its constraint for the sampler."""
    arch = screened.arch
    # The kind, order and block on their own too: optuna-dashboard shows user attributes as columns.
    attrs = {_Key.ARCH: arch.to_dict(), _Key.FLOPS: screened.cost.flops, _Key.MACS: screened.cost.macs,
             _Key.PARAMS: screened.cost.params, _Key.SHORTCUT: arch.shortcut.value, _Key.ORDER: arch.order.value,
             _Key.BLOCK: arch.block.value}
    if screened.name:
        attrs[_Key.NAME] = screened.name
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    trial.set_constraint(CONSTRAINT, screened.cost.flops / budget - 1.0)


def tell_duplicate(trial: optuna.Trial, twin: Twin) -> None:
    """Settle a proposal that repeats `twin`'s Arch with twin's result, never training it again.

    The sampler learns the twin's value again (complete), or nothing new (pruned: its epochs are the twin's;
    still running: failed, so that the sampler may propose it again once the twin's result is known).
    """
    trial.set_user_attr(_Key.STATE, TrialState.DUPLICATE.value)
    trial.set_user_attr(_Key.DUPLICATE_OF, twin.number)
    trial.set_user_attr(_Key.REASON, f"the same architecture as trial {twin.number} ({twin.state.value}); "
                                     "its result is reused, not trained again")
    if twin.state is TrialState.COMPLETE and twin.values is not None:
        trial.study.tell(trial, list(twin.values))
    elif twin.state is TrialState.PRUNED:
        trial.study.tell(trial, state=_FROZEN.PRUNED)
    else:
        trial.study.tell(trial, state=_FROZEN.FAIL)


def record_start(trial: optuna.Trial, trained_arch: Arch, train_flops: int) -> None:
    """Store the network to train; this process answers for the trial until it settles."""
    trial.set_user_attr(_Key.WORKER, worker_id())
    trial.set_user_attr(_Key.NODE, socket.gethostname())
    trial.set_user_attr(_Key.TRAINED_ARCH, trained_arch.to_dict())
    trial.set_user_attr(_Key.TRAIN_FLOPS, train_flops)


@dataclass(frozen=True)
class Progress:
    """A trial's state after an epoch, as trials.csv shows a running trial."""

    epoch: int
    val_accuracy: float
    node: str | None = None
    images_per_s: float | None = None
    train_seconds: float | None = None
    resumed_from_epoch: int = 0  # the checkpoint a retried trial went on from


def record_epoch(trial: optuna.Trial, p: Progress) -> None:
    """Store a finished epoch (and where it ran, where known)."""
    trial.set_user_attr(_Key.EPOCHS, p.epoch)
    trial.set_user_attr(_Key.VAL_ACCURACY, p.val_accuracy)
    for key, value in ((_Key.NODE, p.node), (_Key.IMAGES_PER_S, p.images_per_s),
                       (_Key.TRAIN_SECONDS, p.train_seconds)):
        if value is not None:
            trial.set_user_attr(key, value)
    if p.resumed_from_epoch:
        trial.set_user_attr(_Key.RESUMED_FROM_EPOCH, p.resumed_from_epoch)
        trial.set_user_attr(_Key.REASON, f"its worker died; resumed from its epoch {p.resumed_from_epoch} "
                                         "checkpoint")


def tell_over_budget(trial: optuna.Trial, flops: int, multi_objective: bool) -> None:
    """Settle a rejected proposal; NSGA-II learns from complete trials only, so there it is complete and
    ranked last by its constraint."""
    trial.set_user_attr(_Key.STATE, TrialState.OVER_BUDGET.value)
    if multi_objective:
        trial.study.tell(trial, [0.0, float(flops)])
    else:
        trial.study.tell(trial, state=_FROZEN.PRUNED)


def tell_trained(trial: optuna.Trial, state: TrialState, accuracy: float | None, flops: int,
                 multi_objective: bool, images_per_s: float | None = None, note: str = "") -> None:
    """Settle a trained trial: complete with its objective values, or pruned; `note` says how it trained."""
    if images_per_s is not None:
        trial.set_user_attr(_Key.IMAGES_PER_S, images_per_s)
    if note:
        trial.set_user_attr(_Key.REASON, note)
    trial.set_user_attr(_Key.STATE, state.value)
    if state is TrialState.PRUNED:
        trial.study.tell(trial, state=_FROZEN.PRUNED)
    else:
        assert accuracy is not None
        trial.study.tell(trial, [accuracy, float(flops)] if multi_objective else accuracy)


def tell_failed(trial: optuna.Trial, reason: str) -> None:
    """Settle a trial that could not be trained, with the reason."""
    trial.set_user_attr(_Key.STATE, TrialState.FAILED.value)
    trial.set_user_attr(_Key.REASON, reason[:300])
    trial.study.tell(trial, state=_FROZEN.FAIL)


def tell_interrupted(trial: optuna.Trial, reason: str) -> None:
    """Settle a trial cut off before it ended, and queue its architecture again."""
    trial.set_user_attr(_Key.STATE, TrialState.INTERRUPTED.value)
    trial.set_user_attr(_Key.REASON, reason)
    trial.study.enqueue_trial(trial.params, user_attrs={_Key.RETRY_OF: trial.number})
    trial.study.tell(trial, state=_FROZEN.FAIL)


@dataclass(frozen=True)
class Found:
    """A stored study before it is opened: the id resnas gave it (None: not made by resnas) and its trial count."""

    study_id: str | None
    trials: int


def find_study(storage: str, name: str) -> Found | None:
    """The study `name` in `storage`, or None when there is none; a StorageError for an unreadable storage."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's notice that summaries are experimental
            summaries = optuna.study.get_all_study_summaries(storage, include_best_trial=False)
    except Exception as e:  # SQLAlchemy's errors for a bad URL, an unreachable or a corrupt database
        raise _storage_error(storage, e) from None
    found = next((s for s in summaries if s.study_name == name), None)
    return None if found is None else Found(found.user_attrs.get(_Key.STUDY_ID), found.n_trials)


def _storage_error(storage: str, e: Exception) -> StorageError:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return StorageError(f"cannot use the study's storage {storage}: {first}; restore it from a backup or pass a "
                        "new run folder")


class Study:
    """The study of a run: opened with its settings checked, read as `TrialRecord`s."""

    def __init__(self, study: optuna.Study) -> None:
        self.optuna = study

    @property
    def id(self) -> str:
        """The id resnas gave this study when it created it (set by `open`)."""
        return str(self.optuna.user_attrs[_Key.STUDY_ID])

    @classmethod
    def open(cls, cfg: SearchConfig, storage: str, fingerprint: dict[str, Any], sampler_seed: int) -> Study:
        """Create or load the study; refuse to resume one made with different settings."""
        directions = ["maximize", "minimize"] if cfg.multi_objective else ["maximize"]
        try:
            study = optuna.create_study(
                study_name=cfg.study, storage=storage, directions=directions, load_if_exists=True,
                sampler=make_sampler(cfg, sampler_seed), pruner=make_pruner(cfg))
        except ValueError as e:  # e.g. an existing study with other directions
            raise ConfigError(f"study {cfg.study!r} in {storage}: {e}; use another study name or run folder") from None
        except Exception as e:  # SQLAlchemy's errors for a bad URL, an unreachable or a corrupt database
            raise _storage_error(storage, e) from None
        if _Key.STUDY_ID not in study.user_attrs:
            study.set_user_attr(_Key.STUDY_ID, uuid.uuid4().hex)
        known = study.user_attrs.get(_Key.SETTINGS)
        if known is None:
            study.set_user_attr(_Key.SETTINGS, fingerprint)
        elif known != fingerprint:
            diff = ", ".join(f"{k} {known.get(k)!r} -> {v!r}" for k, v in fingerprint.items() if known.get(k) != v)
            raise ConfigError(f"study {cfg.study!r} was created with other settings ({diff}); rerun with the "
                              "original settings to resume, or use a new run folder or study name")
        return cls(study)

    def _trials(self, *states: optuna.trial.TrialState) -> list[optuna.trial.FrozenTrial]:
        return self.optuna.get_trials(deepcopy=False, states=states or None)

    def __len__(self) -> int:
        return len(self._trials())

    def trained_count(self) -> int:
        return sum(_state_of(t).trained for t in self._trials())

    def training_elsewhere(self, *, here_only: bool = False) -> int:
        """Trials that other live processes (on this machine only, if `here_only`) are training for this study.

        A process on another machine cannot be checked for life: its trials count as training.
        """
        me, host = worker_id(), socket.gethostname()
        return sum(_claimed(t) and t.user_attrs[_Key.WORKER] != me
                   and (not here_only or t.user_attrs[_Key.WORKER].rpartition(":")[0] == host)
                   for t in self._trials(_FROZEN.RUNNING))

    def recover_interrupted(self) -> list[int]:
        """Mark trials of dead processes interrupted (failed) and queue their architectures again."""
        recovered = []
        for t in self._trials(_FROZEN.RUNNING):
            worker = t.user_attrs.get(_Key.WORKER, "")
            if worker and _process_alive(worker):
                continue
            if _Key.ARCH in t.user_attrs:
                reason = "the process running it died; retried"
                self.optuna.enqueue_trial(t.params, user_attrs={_Key.RETRY_OF: t.number})
            else:  # cut off while its parameters were being drawn: they are partial, no architecture to retry
                reason = "the process proposing it died before it had an architecture; not retried"
            self.optuna.set_user_attr(f"{_Key.INTERRUPTED}{t.number}", reason)
            self.optuna.tell(t.number, state=_FROZEN.FAIL)
            recovered.append(t.number)
        return recovered

    def openings_started(self) -> set[str] | None:
        """Classics and shortcut kinds queued as openings so far; None when the study began otherwise."""
        trials = self._trials()
        started = {t.user_attrs.get(k) for t in trials
                   for k in (_Key.CLASSIC, _Key.FIRST_OF_KIND, _Key.SCALED)} - {None}
        return started if started or not trials else None

    def queue_is_empty(self) -> bool:
        return not self._trials(_FROZEN.WAITING)

    def enqueue_opening(self, params: dict[str, Any], *, classic: str = "", kind: str = "", scaled: str = "") -> None:
        """Queue a classic (by zoo name, or a scaled one's label), a half-sized classic (by label) or the first
        architecture of a shortcut kind."""
        attrs = {_Key.CLASSIC: classic} if classic else {_Key.SCALED: scaled} if scaled else {_Key.FIRST_OF_KIND: kind}
        self.optuna.enqueue_trial(params, user_attrs=attrs)

    def enqueue_move(self, params: dict[str, Any], *, of: int, label: str) -> None:
        """Queue a local move: trial `of`'s architecture with one dimension moved (`label` says which)."""
        self.optuna.enqueue_trial(params, user_attrs={_Key.MOVE: label, _Key.MOVE_OF: of})

    def moves_and_picks(self) -> tuple[int, int]:
        """Local moves queued so far, and the sampler's proposals that were trained or are training."""
        trials = self._trials()
        moves = sum(_Key.MOVE in t.user_attrs for t in trials)
        picks = sum(_origin(t) == Origin.SAMPLER.value and _Key.TRAINED_ARCH in t.user_attrs
                    and _state_of(t) is not TrialState.DUPLICATE for t in trials)
        return moves, picks

    def _complete(self) -> list[optuna.trial.FrozenTrial]:
        """Complete trials with an accuracy and an arch."""
        return [t for t in self._trials(_FROZEN.COMPLETE)
                if _state_of(t) is TrialState.COMPLETE and t.user_attrs.get(_Key.VAL_ACCURACY) is not None
                and t.user_attrs.get(_Key.ARCH)]

    def best_trained(self) -> tuple[int, dict[str, Any]] | None:
        """The complete trial with the highest validation accuracy (fewest FLOPs on a tie): number and arch."""
        done = self._complete()
        if not done:
            return None
        best = max(done, key=lambda t: (t.user_attrs[_Key.VAL_ACCURACY], -t.user_attrs.get(_Key.FLOPS, 0)))
        return best.number, best.user_attrs[_Key.ARCH]

    def cheapest_near_best(self, near: float) -> tuple[int, dict[str, Any]] | None:
        """The complete trial with the fewest FLOPs among those within `near` (accuracy, 0-1) of the best."""
        done = self._complete()
        if not done:
            return None
        top = max(t.user_attrs[_Key.VAL_ACCURACY] for t in done)
        close = [t for t in done if t.user_attrs[_Key.VAL_ACCURACY] >= top - near]
        cheapest = min(close, key=lambda t: (t.user_attrs.get(_Key.FLOPS, 0), -t.user_attrs[_Key.VAL_ACCURACY]))
        return cheapest.number, cheapest.user_attrs[_Key.ARCH]

    def tried(self) -> set[str]:
        """Every architecture a trial has proposed so far (trained or not), as canonical JSON."""
        return {arch_key(t.user_attrs.get(_Key.ARCH)) for t in self._trials()}

    def twin_of(self, arch: Arch, number: int) -> Twin | None:
        """The first other trial with `arch` that was trained, or that a live process is training.

        Processes sharing the study propose under one lock (`exclusive`), so the one that proposes second
        sees the first one's trial started.
        """
        key = arch_key(arch.to_dict())
        for t in self._trials():
            if t.number == number or arch_key(t.user_attrs.get(_Key.ARCH)) != key:
                continue
            state = _state_of(t)
            if state.trained or (state is TrialState.RUNNING and _claimed(t)):
                return Twin(t.number, state, tuple(t.values) if t.values is not None else None)
        return None

    def records(self, budget: int) -> list[TrialRecord]:
        """Every trial as a trials.csv row (waiting, never-started trials are left out)."""
        try:
            trials = self._trials()
            marks = self.optuna.user_attrs
        except optuna.exceptions.StorageInternalError as e:
            raise StorageError(f"the study's storage failed: {e}") from None
        return [_record(t, budget, marks.get(f"{_Key.INTERRUPTED}{t.number}")) for t in trials
                if t.state is not _FROZEN.WAITING]


def _state_of(t: optuna.trial.FrozenTrial) -> TrialState:
    """resnas's state of a stored trial: its own record, else what Optuna's state implies."""
    if t.state is _FROZEN.RUNNING:
        return TrialState.RUNNING
    stored = t.user_attrs.get(_Key.STATE)
    if t.state is _FROZEN.FAIL and stored not in (TrialState.FAILED.value, TrialState.INTERRUPTED.value,
                                                  TrialState.DUPLICATE.value):
        return TrialState.FAILED
    return TrialState(stored) if stored else TrialState.FAILED


def _record(t: optuna.trial.FrozenTrial, budget: int, interrupted: str | None) -> TrialRecord:
    """The trial's row; `interrupted`: why a dead process's trial was marked interrupted (`recover_interrupted`)."""
    ua = t.user_attrs
    duration = (t.datetime_complete - t.datetime_start).total_seconds() \
        if t.datetime_complete and t.datetime_start else None
    flops = ua.get(_Key.FLOPS)
    return TrialRecord(
        number=t.number, state=TrialState.INTERRUPTED if interrupted else _state_of(t),
        name=ua.get(_Key.NAME) or ua.get(_Key.CLASSIC, ""), val_accuracy=ua.get(_Key.VAL_ACCURACY), flops=flops,
        params=ua.get(_Key.PARAMS), macs=ua.get(_Key.MACS),
        budget_fraction=flops / budget if flops is not None else None, duration_s=duration,
        epochs=ua.get(_Key.EPOCHS, 0), train_flops=ua.get(_Key.TRAIN_FLOPS),
        images_per_s=ua.get(_Key.IMAGES_PER_S), node=ua.get(_Key.NODE, ""),
        reason=interrupted or ua.get(_Key.REASON, ""),
        origin=_origin(t), arch=ua.get(_Key.ARCH), trained_arch=ua.get(_Key.TRAINED_ARCH))


def _origin(t: optuna.trial.FrozenTrial) -> str:
    """Who proposed the trial (`Origin`), with what it came from."""
    ua = t.user_attrs
    if _Key.CLASSIC in ua:
        return Origin.CLASSIC.value
    if _Key.FIRST_OF_KIND in ua:
        return f"{Origin.FIRST.value} {ua[_Key.FIRST_OF_KIND]}"
    if _Key.SCALED in ua:
        return f"{Origin.SCALED.value} {ua[_Key.SCALED]}"
    if _Key.MOVE in ua:
        return f"{Origin.MOVE.value} of #{ua[_Key.MOVE_OF]}: {ua[_Key.MOVE]}"
    if _Key.RETRY_OF in ua:
        return f"{Origin.RETRY.value} of #{ua[_Key.RETRY_OF]}"
    return Origin.SAMPLER.value


def _claimed(t: optuna.trial.FrozenTrial) -> bool:
    """A running trial whose process started training it and is alive (or on another machine)."""
    worker = t.user_attrs.get(_Key.WORKER)
    return t.state is _FROZEN.RUNNING and _Key.TRAINED_ARCH in t.user_attrs and bool(worker) \
        and _process_alive(worker)


def arch_key(arch: dict[str, Any] | None) -> str:
    """An arch dict as canonical JSON (stored dicts hold lists where fresh ones hold tuples)."""
    return json.dumps(arch, sort_keys=True) if arch else ""


def _process_alive(worker: str) -> bool:
    """Whether the process `worker` (host:pid) lives; another machine's cannot be told, so it counts as alive."""
    host, _, pid = worker.rpartition(":")
    return host != socket.gethostname() or not pid.isdigit() or pid_alive(int(pid))
