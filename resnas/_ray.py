"""The Ray Tune backend of `resnas search --backend ray`: the same search, its trials spread over a Ray cluster.

Shared with the Optuna backend (resnas._search): the space and its define-by-run `suggest`, the FLOP screen,
`train_candidate`, the study in the run folder and everything written from it (trials.csv, best/, kept
weights, the plot, the leaderboard). What Ray changes:

- Sampling: OptunaSearch with a define-by-run callable object (`_Screen`; Tune pickles it with the
  searcher, so it cannot be a closure). It screens each sample by its exact FLOPs and records the
  constraint, so TPE and NSGA-II learn the budget's edge. `_BudgetedSearch.suggest` tells over-budget
  samples to the study at once and asks again: they never become Tune trials, and `--trials` counts
  trained candidates only.
- The study: OptunaSearch gets the run's Optuna storage (study.db in --out unless --storage), so the study
  of a Ray run is the run folder's study. The searcher writes resnas's own record of each trial into it
  (state, epochs, node, ...); trials stopped by ASHA are told PRUNED, where OptunaSearch would tell them
  COMPLETE with a truncated metric.
- Early stopping: ASHA on validation accuracy per epoch (`--pruner hyperband`), MedianStoppingRule
  (`median`), none for multi-objective searches (which Optuna cannot prune either).
- Data: loaded once by the driver and put into Ray's object store by `tune.with_parameters`; every trial
  fetches it from there (shared memory on the driver's node, one transfer to each other node), so no trial
  re-reads or re-decodes the dataset and worker nodes need no copy of it.
- Fault tolerance: each epoch is reported with a checkpoint of the whole training state; a trial whose
  worker dies is retried (FailureConfig) from its last epoch. A killed driver is resumed by rerunning the
  same command, which restores Tune's experiment in <out>/ray/tune (`Tuner.restore(resume_errored=True)`).
  Tune relaunches the trials that finished after its last snapshot; they are in the study already, so the
  trainable returns at once and nothing is counted twice. The folder is removed when the search finishes.
- Test hook: RESNAS_FAULT_EXIT_ONCE=<file>, read by the driver, makes the first trial to finish an epoch
  while <file> does not exist create it and end its worker process (`os._exit`).

Ray reads RAY_AUTH_MODE once, when it is imported, and turns token authentication on by itself only for a
local cluster or address "auto"; `prefer_token_auth` therefore runs before `import ray` below.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from resnas import _run
from resnas._errors import UserError
from resnas._run import TrialRecord, TrialState


def prefer_token_auth() -> None:
    """Use token authentication when this machine has a Ray token (clusters without auth accept it too).

    Once ~/.ray/auth_token exists, clusters started here require it, but Ray sends it only to a local cluster
    or address "auto": an explicit HOST:PORT, `ray status` or the jobs API fail with an authentication error.
    """
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(token_file)):
        os.environ["RAY_AUTH_MODE"] = "token"


prefer_token_auth()

import optuna
import ray
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from resnas._data import DataSplits
    from resnas._search import FirstTrials, RunWriter, SearchConfig
    from resnas._space import SearchSpace

TUNE_DIR = "ray"  # in --out: Tune's storage path
EXPERIMENT = "tune"  # Tune's experiment under it, kept while the search is unfinished (to resume it)
STATE_FILE = "state.pt"  # the training state in each epoch's checkpoint
MAX_TRIAL_FAILURES = 2  # retries of a trial whose worker died, each from its last checkpoint
FAULT_ENV = "RESNAS_FAULT_EXIT_ONCE"
METRIC = "val_accuracy"
_KEY = "resnas"  # the trial config's entry for the trainable (next to Optuna's parameters)


@dataclass(frozen=True)
class _TrialJob:
    """What every trial needs besides its config and the data (sent once, through the object store)."""

    epochs: int
    batch_size: int
    lr: float
    seed: int
    device: str
    threads: int
    # Trials finished when this driver started: a relaunch of one (after a driver restart) does nothing.
    finished: frozenset[int]
    fault_marker: str | None


class _Screen:
    """The define-by-run space: suggest an arch, record its costs and constraint, tell whether it fits."""

    def __init__(self, space: SearchSpace, budget: int, proxy_width: float, data: DataSplits) -> None:
        self.space = space
        self.budget = budget
        self.proxy_width = proxy_width
        self.train_input = {"resolution": data.resolution, "num_classes": data.num_classes,
                            "in_channels": data.in_channels}

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        """Runs in `OptunaSearch.suggest` on the driver; returns the config entry the trainable reads."""
        from resnas._build import count
        from resnas._search import screen

        arch = self.space.suggest(trial)
        attrs, fits = screen(arch, self.space, self.budget)
        # Feasible when <= 0: the samplers read it to learn where the budget's edge lies.
        trial.set_constraint("flops_over_budget", attrs["flops"] / self.budget - 1.0)
        trained = arch.narrowed(self.proxy_width)
        if fits:
            attrs.update(trained_arch=trained.to_dict(), train_flops=count(trained, **self.train_input).flops)
        else:
            attrs["state"] = TrialState.OVER_BUDGET
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        return {_KEY: {"number": trial.number, "fits": fits, "flops": attrs["flops"],
                       "trained_arch": trained.to_json() if fits else ""}}


@dataclass
class _Session:
    """The running search as the searcher and the callback see it (through `_active`)."""

    cfg: SearchConfig
    out: Path
    study: optuna.Study
    writer: RunWriter
    first: FirstTrials
    report: Any
    max_concurrent: int
    finished: frozenset[int]
    trained: int
    started: float = field(default_factory=time.monotonic)
    rejected_in_a_row: int = 0
    failed_in_a_row: int = 0
    done: bool = False  # the searcher has handed out its last trial (target reached or --timeout)
    error: UserError | None = None
    trials: dict[str, Trial] = field(default_factory=dict)  # Tune's live trials by id
    settled: dict[int, str] = field(default_factory=dict)  # the state the searcher gave each ended trial

    def trial_end(self, trial: Trial) -> None:
        """Keep a completed trial's weights, rewrite the run folder and report the trial."""
        number = _number(trial)
        self.trials.pop(trial.trial_id, None)
        if number in self.finished:
            return
        state = self.settled[number]
        if state == TrialState.COMPLETE:
            self._keep_weights(trial, number)
        recs = self.writer.write()
        trained = state in TrialState.TRAINED
        self.report.trial_start(self.trained if trained else self.trained + 1, self.cfg.trials)
        self.report.trial_end(next(r for r in recs if r.number == number), recs)

    def _keep_weights(self, trial: Trial, number: int) -> None:
        """Copy the model's state dict out of the trial's last checkpoint into the run folder."""
        import torch

        path = _run.weights_path(self.out, number)
        checkpoint = trial.checkpoint  # a complete trial reported every epoch with one
        try:
            if checkpoint is None:
                raise FileNotFoundError("Tune has no checkpoint of it")
            with checkpoint.as_directory() as folder:
                state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
        except OSError as e:  # e.g. a checkpoint written to the local disk of another machine
            self.report.note(f"trial {number}: its weights are not kept ({e}); with nodes on several machines "
                             "--out must be on storage they all share")
            return
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(dict(state["model"]), tmp)  # a plain state dict, as the Optuna backend saves
        os.replace(tmp, path)


_SESSION: _Session | None = None


def _active() -> _Session:
    """The search running in this process.

    Tune pickles the searcher and the callbacks into its experiment state and, on restore, runs the first
    run's objects: they reach the current search through this module global instead of holding it.
    """
    if _SESSION is None:
        raise RuntimeError("resnas's Ray searcher and callback work only inside resnas._ray.search")
    return _SESSION


def _number(trial: Trial) -> int:
    return int(trial.config[_KEY]["number"])


class _BudgetedSearch(OptunaSearch):
    """OptunaSearch that never hands out an over-budget sample and keeps resnas's record of each trial."""

    def __init__(self, screen: _Screen, cfg: SearchConfig, storage: optuna.storages.BaseStorage,
                 sampler: optuna.samplers.BaseSampler) -> None:
        multi = cfg.multi_objective
        # With a define-by-run space, metric and mode must be given here (Tune does not pass them on).
        super().__init__(space=screen, metric=[METRIC, "flops"] if multi else METRIC,
                         mode=["max", "min"] if multi else "max", sampler=sampler, study_name=cfg.study,
                         storage=storage)
        self._epochs = cfg.epochs

    # Searcher's annotation leaves out the Searcher.FINISHED string that its own subclasses return too.
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        """A config for a new Tune trial, None to wait for running ones, or FINISHED."""
        from resnas._search import MAX_CONSECUTIVE_REJECTIONS, worker_id

        s = _active()
        if s.error is not None or s.trained >= s.cfg.trials:
            s.done = s.error is None
            return Searcher.FINISHED
        if s.cfg.timeout is not None and time.monotonic() - s.started > s.cfg.timeout:
            s.report.note(f"--timeout {s.cfg.timeout:g}s reached after {s.trained} trained candidates")
            s.done = True
            return Searcher.FINISHED
        in_flight = len(self._ot_trials.keys() - self._completed_trials)
        # A running trial may still fail (and not count): start no more than could still be needed.
        if in_flight >= s.max_concurrent or s.trained + in_flight >= s.cfg.trials:
            return None
        while True:
            s.first.queue_next(self._ot_study)
            config = cast(dict[str, Any], super().suggest(trial_id))  # None only without a space
            ot_trial = self._ot_trials[trial_id]
            if config[_KEY]["fits"]:
                s.rejected_in_a_row = 0
                ot_trial.set_user_attr("worker", worker_id())  # the driver answers for it (see `restore`)
                return config
            # Over the budget: settled now, never a Tune trial; the next ask gets a new Optuna trial.
            del self._ot_trials[trial_id]
            if isinstance(self.metric, list):  # NSGA-II learns from complete trials only; the constraint ranks it last
                ot_trial.study.tell(ot_trial, [0.0, float(config[_KEY]["flops"])])
            else:
                ot_trial.study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
            s.rejected_in_a_row += 1
            if s.rejected_in_a_row >= MAX_CONSECUTIVE_REJECTIONS:
                s.error = UserError(f"{s.rejected_in_a_row} samples in a row were over the budget: the sampler "
                                    "cannot find the feasible region; raise --budget or try --sampler random")
                return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Record an epoch in the study and report it to Optuna (its samplers rank pruned trials by it)."""
        ot_trial = self._ot_trials[trial_id]
        if ot_trial.number in _active().finished or "epoch" not in result:
            return
        _record_epoch(ot_trial, result)
        if not isinstance(self.metric, list):
            ot_trial.report(result[METRIC], result["epoch"])

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Settle the trial in the study: complete, pruned (stopped early by the scheduler) or failed."""
        from resnas._search import MAX_CONSECUTIVE_FAILURES

        if trial_id in self._completed_trials:
            return
        self._completed_trials.add(trial_id)
        s = _active()
        ot_trial = self._ot_trials[trial_id]
        if ot_trial.number in s.finished:
            return
        result = result or {}
        if "epoch" in result:
            _record_epoch(ot_trial, result)
        if error or "failed" in result:
            reason = (f"Ray error after {MAX_TRIAL_FAILURES} retries: {_error_line(s.trials.get(trial_id))}"
                      if error else result["failed"])
            ot_trial.set_user_attr("state", TrialState.FAILED)
            ot_trial.set_user_attr("reason", reason[:300])
            ot_trial.study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
            s.settled[ot_trial.number] = TrialState.FAILED
            s.failed_in_a_row += 1
            if s.failed_in_a_row >= MAX_CONSECUTIVE_FAILURES:
                s.error = UserError(f"{s.failed_in_a_row} candidates in a row failed (last: {reason}); check "
                                    "--lr, --batch-size and the data (and for Ray errors the trials' error.txt "
                                    f"in {s.out / TUNE_DIR / EXPERIMENT}), then rerun to continue")
            return
        s.failed_in_a_row = 0
        if result.get("epoch", 0) < self._epochs:
            ot_trial.set_user_attr("state", TrialState.PRUNED)
            ot_trial.study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
            s.settled[ot_trial.number] = TrialState.PRUNED
        else:
            ot_trial.set_user_attr("state", TrialState.COMPLETE)
            accuracy = result[METRIC]
            ot_trial.study.tell(ot_trial, [accuracy, result["flops"]] if isinstance(self.metric, list) else accuracy)
            s.settled[ot_trial.number] = TrialState.COMPLETE
        s.trained += 1

    def restore(self, checkpoint_path: str) -> None:
        """Load the snapshot, then retry the trials asked for after it (Tune will not resume those)."""
        from resnas._search import recover_interrupted, worker_id

        super().restore(checkpoint_path)
        s = _active()
        running = {t.number for t in s.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        for trial_id in self._ot_trials.keys() - self._completed_trials:
            ot_trial = self._ot_trials[trial_id]
            if ot_trial.number in running:  # Tune resumes it: this driver answers for it now
                ot_trial.set_user_attr("worker", worker_id())
        recovered = recover_interrupted(s.study)
        if recovered:
            s.report.note(f"  trials {recovered} were cut off by a dead process: marked interrupted and queued again")


def _record_epoch(ot_trial: optuna.Trial, result: dict[str, Any]) -> None:
    """A trial's progress as the study keeps it (what trials.csv shows of a running trial)."""
    ot_trial.set_user_attr("epochs", result["epoch"])
    ot_trial.set_user_attr("val_accuracy", result[METRIC])
    ot_trial.set_user_attr("node", result["node"])
    ot_trial.set_user_attr("images_per_s", result["images_per_s"])
    ot_trial.set_user_attr("train_seconds", result["train_seconds"])
    if result["start_epoch"]:
        ot_trial.set_user_attr("resumed_from_epoch", result["start_epoch"])
        ot_trial.set_user_attr("reason", f"its worker died; resumed from its epoch {result['start_epoch']} checkpoint")


def _error_line(trial: Trial | None) -> str:
    """The exception line of a trial's last Ray error (its worker died, an import failed, ...)."""
    text = str(trial.get_error() or "") if trial is not None else ""  # the error file's text
    lines = [ln.strip() for ln in text.splitlines() if re.match(r"^[\w.]*(Error|Exception)\b", ln.strip())]
    return lines[-1] if lines else "unknown error"


class _Progress(tune.Callback):
    """Hands Tune's trial events to the running search; holds no state, so a restored run reports here."""

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        _active().trials[trial.trial_id] = trial

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any],
                        **info: Any) -> None:
        if "epoch" in result:
            _active().report.epoch(_number(trial), result["epoch"], result[METRIC])

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        _active().report.note(f"trial #{_number(trial)}: {_error_line(trial)}; retrying from its last checkpoint "
                              f"(retry {trial.num_failures} of {MAX_TRIAL_FAILURES})")

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        _active().trial_end(trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        _active().trial_end(trial)


def _trial_name(trial: Trial) -> str:
    return f"trial_{_number(trial):04d}"


def _trial_dirname(trial: Trial) -> str:
    return f"trial_{_number(trial):04d}_{trial.trial_id}"


def _claim(marker: str) -> bool:
    """Create `marker`; False if it exists already."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _trainable(config: dict[str, Any], data: DataSplits, job: _TrialJob) -> None:
    """One candidate as a Tune trial: train it, reporting each epoch with a checkpoint to resume from."""
    import torch

    from resnas._arch import Arch
    from resnas._build import build
    from resnas._train import CandidateFailed, TrainConfig, train_candidate

    info = config[_KEY]
    number = info["number"]
    if number in job.finished:
        return
    torch.set_num_threads(job.threads)
    resume = None
    if (checkpoint := tune.get_checkpoint()) is not None:
        with checkpoint.as_directory() as folder:
            resume = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"
    base = {"flops": info["flops"], "node": node, "start_epoch": len(resume["history"]) if resume else 0}
    n = len(data.train_y)
    batch = min(job.batch_size, n)
    images_per_epoch = n // batch * batch  # train_candidate drops the last partial batch

    def on_checkpoint(state: dict[str, Any]) -> None:
        epoch = len(state["history"])
        metrics = {**base, "epoch": epoch, METRIC: state["history"][-1]["val_accuracy"],
                   "images_per_s": epoch * images_per_epoch / state["train_seconds"],
                   "train_seconds": state["train_seconds"] + state["eval_seconds"]}
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, Path(folder) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        if job.fault_marker is not None and _claim(job.fault_marker):
            os._exit(1)

    train_cfg = TrainConfig(epochs=job.epochs, batch_size=job.batch_size, lr=job.lr, seed=job.seed + number)
    try:
        torch.manual_seed(job.seed + number)
        model = build(Arch.from_json(info["trained_arch"]), num_classes=data.num_classes,
                      in_channels=data.in_channels)
        train_candidate(model, data, train_cfg, device=torch.device(job.device), on_checkpoint=on_checkpoint,
                        resume=resume)
    except (CandidateFailed, RuntimeError, ValueError) as e:
        # A candidate that cannot train (NaN loss, OOM, a numerical error) must not stop the search. Without
        # an "epoch" the schedulers ignore this result; Tune insists on the metric being present.
        reason = getattr(e, "reason", type(e).__name__)
        tune.report({**base, METRIC: 0.0, "failed": f"{reason}: {str(e).splitlines()[0] if str(e) else ''}"})


def _scheduler(cfg: SearchConfig) -> TrialScheduler:
    """ASHA for --pruner hyperband, the median rule for median; none where Optuna would not prune either."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    from resnas._search import PrunerName

    if cfg.pruner is PrunerName.NONE or cfg.multi_objective or cfg.epochs < 2:
        return FIFOScheduler()
    if cfg.pruner is PrunerName.MEDIAN:
        return MedianStoppingRule(time_attr="epoch", metric=METRIC, mode="max", grace_period=1,
                                  min_samples_required=3)
    return ASHAScheduler(time_attr="epoch", metric=METRIC, mode="max", max_t=cfg.epochs, grace_period=1,
                         reduction_factor=3)


def _trial_device(cfg: SearchConfig) -> str:
    """Where trials train: on a GPU exactly when they ask Ray for one."""
    from resnas._search import DeviceName

    if (cfg.gpus_per_trial or 0) > 0:
        if cfg.device is DeviceName.CPU:
            raise UserError("--device cpu with --gpus-per-trial: drop one of them")
        return "cuda"
    if cfg.device is DeviceName.CUDA:
        raise UserError("--device cuda with --backend ray needs --gpus-per-trial (1, or a fraction to share GPUs)")
    return "cpu"


def _connect(address: str | None) -> None:
    """Attach to the cluster at `address`, or start a local Ray instance sized to this machine."""
    # Worker output would interleave with the progress lines; failures reach the driver as Tune errors.
    if address is None:
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        return
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot attach to the Ray cluster at --address {address}: {first}; start one with "
                        "`ray start --head` or leave out --address for a local one") from None


def _capacity(cpus: float, gpus: float) -> tuple[int, str]:
    """How many trials the cluster can run at once, and a line describing it; UserError if not one."""
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    total_cpus = sum(n.get("CPU", 0) for n in nodes)
    total_gpus = sum(n.get("GPU", 0) for n in nodes)
    if gpus > 0 and max(n.get("GPU", 0) for n in nodes) < gpus:
        raise UserError(f"--gpus-per-trial {gpus:g}: the Ray cluster has {total_gpus:g} GPUs on {len(nodes)} "
                        f"node(s), none with {gpus:g}; use --gpus-per-trial 0 or a cluster with GPUs")
    if max(n.get("CPU", 0) for n in nodes) < cpus:
        raise UserError(f"--cpus-per-trial {cpus:g}: no node of the Ray cluster has that many CPUs (the largest "
                        f"has {max(n.get('CPU', 0) for n in nodes):g}); lower --cpus-per-trial")
    per_node = [math.floor(n.get("CPU", 0) / cpus + 1e-9) if gpus == 0 else
                min(math.floor(n.get("CPU", 0) / cpus + 1e-9), math.floor(n.get("GPU", 0) / gpus + 1e-9))
                for n in nodes]
    line = (f"{len(nodes)} node(s), {total_cpus:g} CPUs, {total_gpus:g} GPUs; each trial takes {cpus:g} CPU "
            f"and {gpus:g} GPU")
    return sum(per_node), line


def search(cfg: SearchConfig, report: Any) -> list[TrialRecord]:
    """Run (or resume) the search as Ray Tune trials until cfg.trials candidates are trained; every trial's record.

    `report` receives progress events (see resnas._commands.search.Reporter).
    """
    global _SESSION
    from resnas._search import (
        FirstTrials,
        RunWriter,
        check_budget_is_feasible,
        load_space,
        load_training_data,
        make_sampler,
        note_first_trials,
        open_study,
        recover_interrupted,
        storage_url,
        trained_count,
        worker_id,
        write_run_file,
    )

    out = Path(cfg.out)
    _run.prepare_out_dir(out)
    space, space_text = load_space(cfg.space)
    fraction = check_budget_is_feasible(space, cfg.budget)
    device = _trial_device(cfg)
    cpus, gpus = cfg.cpus_per_trial or 1.0, cfg.gpus_per_trial or 0.0
    _connect(cfg.address)
    try:
        capacity, cluster = _capacity(cpus, gpus)
        max_concurrent = cfg.max_concurrent or capacity
        data = load_training_data(cfg)
        proxy_width = cfg.proxy_width or (1.0 if device == "cuda" else 0.5)
        fingerprint = cfg.fingerprint(space_text, proxy_width)
        study = open_study(cfg, out, fingerprint, cfg.seed)
        experiment = (out / TUNE_DIR / EXPERIMENT).resolve()
        resume = tune.Tuner.can_restore(str(experiment))
        # A restored experiment resumes its own trials (`_BudgetedSearch.restore` recovers the others).
        recovered = [] if resume else recover_interrupted(study)
        first = FirstTrials(study, space, cfg.budget, cfg.seed)
        write_run_file(cfg, out, space, data, fraction, proxy_width)
        finished = frozenset(t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished())
        _SESSION = _Session(cfg, out, study, RunWriter(study, cfg, out), first, report, max_concurrent, finished,
                            trained_count(study))
        report.start(cfg, space, data, device, fraction, proxy_width, _SESSION.trained, recovered)
        note_first_trials(report, first)
        scheduler = _scheduler(cfg)
        where = "local Ray instance" if cfg.address is None else f"Ray cluster at {cfg.address}"
        report.note(f"  {where}: {cluster}, up to {max_concurrent} at once")
        report.note(f"  early stopping: {type(scheduler).__name__}; Tune's state in {experiment}"
                    + (" (resumed)" if resume else ""))
        # Tune's new output engine prints its banner whatever the verbosity (the legacy one is silent at 0),
        # and warns about the snapshot CheckpointConfig(num_to_keep=1) forces after each trial's checkpoint.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        # Trial errors are reported as one line each (`_Progress`), not as Tune's tracebacks.
        os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
        # Tune starts one trial at a time for a custom searcher, waiting for each worker to boot; this one
        # limits the trials in flight itself.
        os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max_concurrent))
        # On Ctrl-C Tune would explain how to resume with its own API: resnas says to rerun the command.
        logging.getLogger("ray.tune").setLevel(logging.ERROR)
        job = _TrialJob(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, device=device,
                        threads=max(1, math.floor(cpus)), finished=finished,
                        fault_marker=os.environ.get(FAULT_ENV) or None)
        trainable = tune.with_resources(tune.with_parameters(_trainable, data=data, job=job),
                                        {"cpu": cpus, "gpu": gpus})
        if resume:
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_errored=True)
        else:
            # A new experiment on a resumed study must not replay the first run's draws: offset the seed.
            storage = optuna.storages.get_storage(storage_url(cfg, out))
            searcher = _BudgetedSearch(_Screen(space, cfg.budget, proxy_width, data), cfg, storage,
                                       make_sampler(cfg, cfg.seed + len(study.trials)))
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1,
                                            reuse_actors=True, trial_name_creator=_trial_name,
                                            trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(experiment.parent), verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=MAX_TRIAL_FAILURES),
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                          callbacks=[_Progress()]),
            )
        tuner.fit()
        # Trials of this driver still running in the study were cut off by Ctrl-C: Tune saved its state, and
        # the same command resumes them. Otherwise there is nothing to resume: the study carries the search on.
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not any(t.user_attrs.get("worker") == worker_id() for t in running):
            shutil.rmtree(experiment.parent)
        if _SESSION.error is not None:
            raise _SESSION.error
        if not (_SESSION.done or _SESSION.trained >= cfg.trials):
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        if _SESSION is not None:
            _SESSION.writer.write(final=True)
        raise
    finally:
        _SESSION = None
        ray.shutdown()
    recs = RunWriter(study, cfg, out).write(final=True)
    report.finish(recs, out)
    return recs


def job_client(address: str | None) -> JobSubmissionClient:
    """A client of a Ray cluster's job server (the head's dashboard, http://HEAD:8265)."""
    try:
        import aiohttp  # noqa: F401  (without ray[default]'s packages the jobs SDK fails deep inside)
    except ImportError:
        raise UserError("Ray jobs need ray[default], which resnas's `cluster` extra installs: "
                        "pip install 'resnas[cluster]'") from None
    from ray.job_submission import JobSubmissionClient

    # The SDK logs each packaged file and websocket event at INFO; resnas prints what matters itself.
    for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot reach the Ray job server at {address or 'the local cluster'}: {first}; pass "
                        "--address http://HEAD:8265 (the head node's dashboard, started with ray[default])") from None

