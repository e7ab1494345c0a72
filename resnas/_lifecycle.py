"""The trial lifecycle both backends share: set up, propose and screen, train, settle, publish, stop.

    SearchCore.prepare   space, the budget's feasibility, the run folder claimed (before any cluster or data)
    SearchCore.open      data, proxy width, the study (its owner and settings checked, seed offset), openings
    claiming()           processes sharing the study take turns from deciding to start a trial to starting it
    propose -> dismiss   an over-budget proposal, or one already trained (a duplicate), is told at once
            -> start     a fitting new one is recorded, then trained by `train_trial` (here, or in a Ray worker)
    epoch_done           each epoch: recorded, reported to the pruner and the reporter
    settle -> publish    told to the study, streaks counted; weights kept, trials.csv/best/plot rewritten

A backend (resnas._local, resnas._ray) decides only where `train_trial` runs and how many at once.
"""

from __future__ import annotations

import contextlib
import enum
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from resnas._arch import Arch
from resnas._budget import format_flops
from resnas._build import count
from resnas._candidate import Outcome, TrialJob, split_reason
from resnas._config import DeviceName, SearchConfig
from resnas._errors import ConfigError, ResnasError, StorageError
from resnas._lock import exclusive
from resnas._plots import trials_figure
from resnas._proposals import LocalMoves, Openings, screen
from resnas._runfolder import Owner, RunFolder
from resnas._study import (
    Progress,
    Screened,
    Study,
    Twin,
    find_study,
    record_epoch,
    record_screen,
    record_start,
    tell_duplicate,
    tell_failed,
    tell_interrupted,
    tell_over_budget,
    tell_trained,
)
from resnas._trial import NEAR_BEST, TrialRecord, TrialState

if TYPE_CHECKING:
    import optuna
    import torch

    from resnas._data import DataSplits
    from resnas._space import SearchSpace
    from resnas._train import Fault

# After this many budget rejections in a row the sampler is not finding the feasible region.
MAX_CONSECUTIVE_REJECTIONS = 5000
# After this many proposals in a row that were all trained before, the sampler has nothing new to offer.
MAX_CONSECUTIVE_DUPLICATES = 50
# After this many failed candidates in a row (NaN loss, OOM...) the settings, not the candidates, are at fault.
MAX_CONSECUTIVE_FAILURES = 3
PLOT_INTERVAL_S = 30.0
WAIT_FOR_OTHERS_S = 2.0  # polling interval while other processes finish this study's last trials
# Samples drawn at start to estimate the fraction of the space under the budget (~0.2 ms each).
FEASIBILITY_SAMPLES = 2000


@dataclass(frozen=True)
class Faults:
    """Test hooks, passed in (never read from the environment): break trials on purpose."""

    loss: Fault | None = None  # every trial's first step fails this way (resnas._train.Fault)
    # Ray: the first trial to finish an epoch while this file does not exist creates it and kills its worker.
    exit_once: str | None = None


class SearchBackend(Protocol):
    """Where trials train: opens the core on its device, then runs trials until `core.wants_more()` is False."""

    def run(self, core: SearchCore, faults: Faults) -> None: ...


class Report(Protocol):
    """Progress events of a search (resnas._commands.search.Reporter prints them)."""

    def start(self, cfg: SearchConfig, space: SearchSpace, data: DataSplits, device: Any, fraction: float,
              proxy_width: float, done: int, recovered: list[int]) -> None: ...

    def trial_start(self, k: int, n: int) -> None: ...

    def epoch(self, number: int, epoch: int, accuracy: float) -> None: ...

    def trial_end(self, rec: TrialRecord, recs: list[TrialRecord]) -> None: ...

    def note(self, text: str) -> None: ...

    def finish(self, recs: list[TrialRecord], out: Path) -> None: ...

    def worker(self, label: str) -> Callable[[], Report]:
        """A picklable maker of the report a worker process of this search gives, labelled `label`."""
        ...


# -- set-up ---------------------------------------------------------------------------------------


def load_space(path: str) -> tuple[SearchSpace, str]:
    """The space and its file's text (which the study's fingerprint hashes)."""
    from resnas._space import SearchSpace

    space = SearchSpace.from_yaml(path)  # first: it bounds the file's size and checks it
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read space file {path}: {e.strerror or e}; pass a YAML file such as "
                          "search_spaces/resnet_family.yaml", field="space") from None
    return space, text


def check_budget_is_feasible(space: SearchSpace, budget: int) -> float:
    """Fail before any training when nothing fits; else the fraction of sampled archs under the budget."""
    low = space.min_flops()
    if low > budget:
        raise ConfigError(f"no architecture in the space fits the budget: the smallest needs {format_flops(low)} "
                          f"(> {format_flops(budget)}); raise the budget or shrink the space's minimums")
    rng = random.Random(0)
    fits = sum(space.flops(space.sample(rng)) <= budget for _ in range(FEASIBILITY_SAMPLES))
    return fits / FEASIBILITY_SAMPLES


def resolve_device(name: DeviceName) -> torch.device:
    import torch

    if name is DeviceName.CUDA and not torch.cuda.is_available():
        raise ConfigError("cuda: no CUDA GPU is visible to PyTorch; use cpu or auto", field="device")
    if name is DeviceName.AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name.value)


def load_training_data(cfg: SearchConfig) -> DataSplits:
    """The proxy's data, at least 32x32 (resnas nets need it): smaller images are upsampled once here."""
    from resnas._data import load_data

    kwargs = dict(root=cfg.data_root, train_samples=cfg.train_samples, val_samples=cfg.val_samples, seed=cfg.seed,
                  cache_dir=cfg.data_cache)
    data = load_data(cfg.dataset, resolution=cfg.train_resolution, **kwargs)  # type: ignore[arg-type]
    if data.resolution < 32:
        data = load_data(cfg.dataset, resolution=32, **kwargs)  # type: ignore[arg-type]
    return data


# -- the search's side of every trial --------------------------------------------------------------


@dataclass(frozen=True)
class Proposal:
    """A screened proposal and the trial that trained (or trains) the same Arch already, if any."""

    screened: Screened
    twin: Twin | None

    @property
    def trainable(self) -> bool:
        """Fits the budget and is new."""
        return self.screened.fits and self.twin is None


class Idle(enum.Enum):
    """Why `SearchCore.next_trial` starts nothing: the search wants no more, or waits for running trials."""

    DONE = "done"
    WAIT = "wait"


@dataclass(frozen=True)
class Started:
    """A trial recorded as training: the study's trial, its deployment FLOPs, and the network to train."""

    trial: optuna.Trial
    flops: int
    arch: Arch


class SearchCore:
    """One search's state across its trials; both backends drive it through the same calls."""

    # Set by `open`, once the backend knows its device:
    data: DataSplits
    proxy_width: float
    job: TrialJob  # what every trial's training needs besides its arch and the data
    study: Study
    sampler_seed: int  # the seed, offset by the trials so far, that this run's sampler draws with
    openings: Openings

    def __init__(self, cfg: SearchConfig, report: Report, folder: RunFolder, owner: Owner, space: SearchSpace,
                 space_text: str, fraction: float) -> None:
        self.cfg, self.report, self.folder, self.owner = cfg, report, folder, owner
        self.space, self._space_text, self.fraction = space, space_text, fraction
        self.error: ResnasError | None = None  # set when the search must stop: raised once the backend returns
        self.trained = 0
        self.elsewhere = 0  # trials other processes are training for this study
        self._rejected_in_a_row = self._failed_in_a_row = self._duplicates_in_a_row = 0
        self._exhausted = False  # the sampler proposed only trained architectures for a long while
        self._started = time.monotonic()
        self._next_plot = self._started + PLOT_INTERVAL_S
        self._timed_out = False
        self.opened = False
        self._lock = folder.study_lock(cfg.storage)

    @classmethod
    def prepare(cls, cfg: SearchConfig, report: Report) -> SearchCore:
        """The checks that need neither data nor a cluster: space, the budget's feasibility, the run folder."""
        space, text = load_space(cfg.space)
        fraction = check_budget_is_feasible(space, cfg.budget)
        folder = RunFolder(cfg.out)
        owner = folder.claim(Owner(cfg.study, cfg.storage))
        return cls(cfg, report, folder, owner, space, text, fraction)

    def claiming(self) -> contextlib.AbstractContextManager[None]:
        """Turns among the processes of this study: hold it from counting the trials to starting one."""
        return exclusive(self._lock)

    def open(self, device: torch.device | str, faults: Faults, *, recover: bool = True) -> None:
        """Load the data, open the study (interrupted trials queued again unless `recover` is False), report."""
        cfg = self.cfg
        self.data = load_training_data(cfg)
        kind = device if isinstance(device, str) else device.type
        self.proxy_width = cfg.proxy_width or (1.0 if kind == "cuda" else 0.5)
        self.job = TrialJob(cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed, str(device), faults.loss)
        with self.claiming():
            recovered = self._open_study(recover)
            moves = LocalMoves(self.space, cfg.budget, cfg.seed, cfg.local_moves) if cfg.local_moves else None
            self.openings = Openings(self.study, self.space, cfg.budget, cfg.seed, with_classics=cfg.classics,
                                     with_kinds=cfg.first_of_each_kind, moves=moves)
            self.folder.write_run(self.owner, self._run_file())
        self.refresh()
        self.opened = True
        self.report.start(cfg, self.space, self.data, device, self.fraction, self.proxy_width, self.trained,
                          recovered)
        if self.openings.classics:
            self.report.note(f"  classics first (in the space, under the budget{'; scaled down to fit' * any('@' in c for c in self.openings.classics)}): "
                             f"{', '.join(self.openings.classics)}")
        if self.openings.kinds:
            kinds = ", ".join(self.openings.kinds)
            self.report.note(f"  then one fitting architecture per other shortcut kind: {kinds}")
        if self.openings.scaled:
            self.report.note(f"  then the cheapest classic at about half its FLOPs: {', '.join(self.openings.scaled)}")
        if cfg.local_moves:
            self.report.note(f"  then {cfg.local_moves:.0%} of the trials are one-step moves (in turn: of the best trial "
                             f"so far, and cheaper ones of the cheapest within {100 * NEAR_BEST:g} points of it), the rest "
                             "the sampler's")

    def _open_study(self, recover: bool) -> list[int]:
        """The run folder's study, never one that lost or replaced the folder's results; its recovered trials."""
        cfg = self.cfg
        url = self.folder.study_url(cfg.storage)
        self._check_study_is_the_folders(url)
        fingerprint = cfg.fingerprint(self._space_text, self.proxy_width)
        probe = Study.open(cfg, url, fingerprint, cfg.seed)
        # A resumed run must not replay the first run's random draws: offset the seed by the trials so far.
        self.sampler_seed = cfg.seed + len(probe)
        self.study = Study.open(cfg, url, fingerprint, self.sampler_seed) if len(probe) else probe
        self.owner = Owner(self.owner.study, self.owner.storage, self.study.id)
        self._check_keep_top()
        return self.study.recover_interrupted() if recover else []

    def _check_study_is_the_folders(self, url: str) -> None:
        """Refuse a study that vanished, emptied or was replaced while the folder holds its finished trials."""
        finished = self.folder.finished_trials()
        if not finished:
            return
        found = find_study(url, self.cfg.study)
        where = self.owner.where(self.folder.path)
        if found is None or found.trials == 0:
            problem = "is gone" if found is None else "is empty"
        elif self.owner.study_id is not None and found.study_id != self.owner.study_id:
            problem = "is not the study this folder was made by"
        else:
            return
        raise StorageError(f"{where} {problem}, but {self.folder.path} holds {finished} finished trials of it "
                           "(trials.csv, weights): restore the study from a backup, or pass a new --out to "
                           "start over; resnas will not overwrite them")

    def _check_keep_top(self) -> None:
        """A resume must not delete weights an earlier run kept because --keep-top is lower now."""
        before = self.folder.read_run().get("settings", {}).get("keep_top")
        if not isinstance(before, int) or self.cfg.keep_top >= before:
            return
        recs = self.study.records(self.cfg.budget)
        doomed = sorted(set(self.folder.outside(recs, self.cfg.keep_top)) - set(self.folder.outside(recs, before)))
        if doomed:
            raise ConfigError(f"{self.cfg.keep_top} would delete the kept weights of trials "
                              f"{', '.join(map(str, doomed))} in {self.folder.path / 'weights'}; pass a larger "
                              "--keep-top, or move those files away first", field="keep_top")

    def _run_file(self) -> dict[str, Any]:
        """run.json: what export and the reports need to describe the run (no absolute paths of this machine)."""
        settings = asdict(self.cfg)
        settings.update({k: v.value for k, v in settings.items() if isinstance(v, enum.Enum)})
        for key in ("out", "data_root", "data_cache", "storage", "storage_path"):
            settings.pop(key)
        space, data = self.space, self.data
        return {
            "settings": settings,
            "deployment_input": {"resolution": space.resolution, "channels": space.in_channels,
                                 "classes": space.num_classes},
            "training_input": {"resolution": data.resolution, "channels": data.in_channels,
                               "classes": data.num_classes},
            "data": data.description,
            # How raw images became the trials' inputs: an exported trial carries it (preprocess.json).
            "input_contract": data.contract.to_dict(),
            "proxy_width": self.proxy_width,
            "space_sha256": self.cfg.fingerprint(self._space_text, self.proxy_width)["space_sha256"],
            "fraction_of_space_under_budget": round(self.fraction, 4),
        }

    # -- the lifecycle, in order ------------------------------------------------------------------

    def wants_more(self, in_flight: int = 0) -> bool:
        """Whether to start another trial: no error, no timeout, target not reached counting `in_flight` and
        the trials other processes are training (as of the last `refresh`)."""
        if self.error is not None or self._exhausted or \
                self.trained + self.elsewhere + in_flight >= self.cfg.trials:
            return False
        if self.cfg.timeout is not None and time.monotonic() - self._started > self.cfg.timeout:
            if not self._timed_out:
                self.report.note(f"timeout of {self.cfg.timeout:g}s reached after {self.trained} trained candidates")
            self._timed_out = True
            return False
        return True

    def refresh(self) -> None:
        """Recount the trained trials, and those other processes are training, from the study."""
        self.trained = self.study.trained_count()
        self.elsewhere = self.study.training_elsewhere()

    @property
    def done(self) -> bool:
        """The search ended as asked: target reached or timed out (not stopped by an error or Ctrl-C)."""
        return self.error is None and (self.trained + self.elsewhere >= self.cfg.trials or self._timed_out
                                       or self._exhausted)

    def next_trial(self, in_flight: int = 0, limit: int | None = None) -> Started | Idle:
        """Ask the study for architectures until one fits and is new, and start it; dismiss the others.

        Processes sharing the study take turns from counting the trials to starting one. `in_flight`: trials
        this process runs already (at most `limit` at once); a running one may still fail and not count.
        """
        with self.claiming():
            while True:
                self.refresh()
                if not self.wants_more():
                    return Idle.DONE
                if (limit is not None and in_flight >= limit) or not self.wants_more(in_flight):
                    return Idle.WAIT
                self.report.trial_start(self.trained + self.elsewhere + 1, self.cfg.trials)
                self.openings.queue_next(self.study)
                trial = self.study.optuna.ask()
                proposal = self.propose(trial)
                if proposal.trainable:
                    return Started(trial, proposal.screened.cost.flops, self.start(trial, proposal.screened))
                self.dismiss(trial, proposal)

    def propose(self, trial: optuna.Trial) -> Proposal:
        """The trial's architecture (define-by-run), priced and recorded with its constraint; its twin, if any."""
        screened = screen(self.space.suggest(trial), self.space, self.cfg.budget)
        record_screen(trial, screened, self.cfg.budget)
        twin = self.study.twin_of(screened.arch, trial.number) if screened.fits else None
        return Proposal(screened, twin)

    def dismiss(self, trial: optuna.Trial, proposal: Proposal) -> None:
        """Settle a proposal that is not trained: over the budget, or a duplicate; long streaks stop the search."""
        if proposal.twin is not None:
            tell_duplicate(trial, proposal.twin)
            self._duplicates_in_a_row += 1
            if self._duplicates_in_a_row >= MAX_CONSECUTIVE_DUPLICATES:
                self._exhausted = True
                self.report.note(f"stopped after {self.trained} trained candidates: the sampler's last "
                                 f"{self._duplicates_in_a_row} proposals were all trained before (a small space, "
                                 "or a sampler that has converged)")
            return
        tell_over_budget(trial, proposal.screened.cost.flops, self.cfg.multi_objective)
        self._rejected_in_a_row += 1
        if self._rejected_in_a_row >= MAX_CONSECUTIVE_REJECTIONS:
            self.error = ConfigError(f"{self._rejected_in_a_row} samples in a row were over the budget: the "
                                     "sampler cannot find the feasible region; raise the budget or try the random "
                                     "sampler")

    def start(self, trial: optuna.Trial, screened: Screened) -> Arch:
        """Record a fitting proposal as training; returns the network to train (narrowed by the proxy width)."""
        self._rejected_in_a_row = self._duplicates_in_a_row = 0
        trained = screened.arch.narrowed(self.proxy_width)
        data = self.data
        flops = count(trained, resolution=data.resolution, num_classes=data.num_classes,
                      in_channels=data.in_channels).flops
        record_start(trial, trained, flops)
        return trained

    def epoch_done(self, trial: optuna.Trial, progress: Progress) -> None:
        """Record an epoch, report it to Optuna (its samplers rank pruned trials by it) and to the user."""
        record_epoch(trial, progress)
        self.report.epoch(trial.number, progress.epoch, progress.val_accuracy)
        if not self.cfg.multi_objective:
            trial.report(progress.val_accuracy, progress.epoch)

    def settle(self, trial: optuna.Trial, outcome: Outcome, flops: int) -> None:
        """Tell the study how the trial ended; count streaks of failures."""
        if outcome.state is TrialState.FAILED:
            tell_failed(trial, outcome.reason)
            self._failed_in_a_row += 1
            if self._failed_in_a_row >= MAX_CONSECUTIVE_FAILURES:
                self.error = ConfigError(f"{self._failed_in_a_row} candidates in a row failed (last: "
                                         f"{outcome.reason}); check the learning rate, batch size and the data, "
                                         "then rerun to continue")
            return
        self._failed_in_a_row = 0
        tell_trained(trial, outcome.state, outcome.val_accuracy, flops, self.cfg.multi_objective,
                     outcome.images_per_s, outcome.reason)
        self.trained += 1

    def settle_reported(self, started: Started, last: Progress | None, *, failed: str = "",
                        micro_batches: int = 1) -> TrialState:
        """Settle a trial trained elsewhere (a Ray worker) from its last epoch report: failed, pruned (stopped
        before its last epoch) or complete."""
        if last is not None:
            record_epoch(started.trial, last)
        if failed:
            outcome = Outcome(TrialState.FAILED, reason=failed)
        elif last is None or last.epoch < self.cfg.epochs:
            outcome = Outcome(TrialState.PRUNED)
        else:
            outcome = Outcome(TrialState.COMPLETE, last.val_accuracy, last.images_per_s,
                              reason=split_reason(self.cfg.batch_size, micro_batches))
        self.settle(started.trial, outcome, started.flops)
        return outcome.state

    def interrupt(self, trial: optuna.Trial) -> None:
        """Settle a trial cut off by Ctrl-C; the next run retries it."""
        tell_interrupted(trial, "interrupted (Ctrl-C); retried on the next run")

    def publish(self, number: int, weights: Mapping[str, Any] | None) -> TrialRecord:
        """Keep a settled trial's weights, rewrite the run folder and report the trial; its record."""
        if weights is not None:
            self.folder.save_weights(number, weights)
        recs = self.write()
        rec = next(r for r in recs if r.number == number)
        self.report.trial_end(rec, recs)
        return rec

    def write(self, *, final: bool = False) -> list[TrialRecord]:
        """trials.csv and the kept weights from the study; the plot (~0.2 s) at most every PLOT_INTERVAL_S."""
        recs = self.study.records(self.cfg.budget)
        self.folder.write_trials(recs)
        self.folder.keep_weights(recs, self.cfg.keep_top)
        if final or time.monotonic() >= self._next_plot:
            self.folder.save_plot(trials_figure(recs, self.cfg.budget))
            self._next_plot = time.monotonic() + PLOT_INTERVAL_S
        return recs

    def _await_others(self) -> None:
        """Wait for the trials other live processes of this machine are still training, so the summary is the
        whole study's (another machine's cannot be told alive or dead: waiting for them could never end)."""
        waiting = self.study.training_elsewhere(here_only=True)
        if waiting:
            self.report.note(f"waiting for {waiting} trial(s) that other processes are training for this study")
        while waiting:
            time.sleep(WAIT_FOR_OTHERS_S)
            waiting = self.study.training_elsewhere(here_only=True)
        self.refresh()
        if self.elsewhere:
            self.report.note(f"{self.elsewhere} trial(s) of this study are still training on other machines; "
                             "rerun the command there, or later here, for a summary with them")

    def run(self, backend: SearchBackend, faults: Faults) -> list[TrialRecord]:
        """The search on `backend` until it wants no more trials; every trial's record (`finish`)."""
        try:
            backend.run(self, faults)
        except BaseException as e:
            if not self.opened:
                self.folder.abandon()  # failed before its study opened: leave no empty run folder behind
            elif isinstance(e, KeyboardInterrupt):
                self.write(final=True)
            raise
        return self.finish()

    def finish(self) -> list[TrialRecord]:
        """Raise what stopped the search, or write the run folder a last time and report the leaderboard."""
        if self.error is not None:
            raise self.error
        self._await_others()
        recs = self.write(final=True)
        self.report.finish(recs, self.folder.path)
        return recs
