"""The Ray Tune backend of `search`: the lifecycle of resnas._lifecycle, its trials trained by Ray workers.

What Ray changes, and nothing else (proposals, screening, settling, the study and the run folder are the core's):
- Sampling: `_StudySearcher`, a Tune searcher over the run's own study (as OptunaSearch is over one): each
  config is a trial the core started (`SearchCore.next_trial`, which settles over-budget and duplicate
  proposals at once: they never become Tune trials, and `trials` counts trained candidates only). Each trial's
  epoch reports (`Progress`) go back through the core, which settles it (trials stopped by ASHA are PRUNED).
  Tune pickles the searcher and the callbacks: they reach the running search through `_active()`.
- Early stopping: ASHA on validation accuracy per epoch (pruner hyperband), MedianStoppingRule (median), none
  where Optuna would not prune either.
- Data: loaded once by the driver and put into Ray's object store by `tune.with_parameters`, its arrays out of
  band (`DataSplits.__reduce__`): each node fetches one copy into its shared memory and every trial there maps
  that copy read-only, so worker nodes need no copy of the dataset and trials none of their own.
- Fault tolerance: each epoch is reported with a checkpoint of the whole training state; a trial whose worker
  dies is retried (FailureConfig) from its last epoch. A killed (or Ctrl-C'd) driver is resumed by rerunning the
  same command: the study is the only record of the search, so the rerun starts a new Tune experiment on it;
  the trials the dead driver was running are marked interrupted and queued again (`SearchCore.open`), finished
  ones are untouched. (Restoring Tune's own snapshot as well made two records of one search, which disagreed
  whenever the driver died between a trial's start and Tune's next snapshot.) Tune's experiment folder,
  <out>/ray/tune, belongs to one driver: a dead driver's is replaced, and it is removed when the search ends.

Over 500 lines because all of resnas's contact with Ray is here (searcher, callbacks, trainable, scheduler,
connecting and the jobs client), so that nothing else imports it and a Ray release changes one module.

Ray reads RAY_AUTH_MODE once, when it is imported, and turns token authentication on by itself only for a
local cluster or address "auto"; `prefer_token_auth` therefore runs before `import ray` below.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnas._errors import ConfigError, StorageError


def prefer_token_auth() -> None:
    """Use token authentication when this machine has a Ray token (clusters without auth accept it too).

    Once ~/.ray/auth_token exists, clusters started here require it, but Ray sends it only to a local cluster
    or address "auto": an explicit HOST:PORT, `ray status` or the jobs API fail with an authentication error.
    Ray reads the setting once, at import, so it is set for the process rather than scoped.
    """
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(token_file)):
        os.environ["RAY_AUTH_MODE"] = "token"


prefer_token_auth()

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

from resnas._candidate import TrialJob, train_trial  # noqa: E402
from resnas._config import DeviceName, PrunerName, SearchConfig  # noqa: E402
from resnas._lifecycle import Faults, Idle, SearchCore, Started  # noqa: E402
from resnas._study import Progress, prunes  # noqa: E402
from resnas._trial import TrialState  # noqa: E402

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from resnas._data import DataSplits

EXPERIMENT = "tune"  # Tune's experiment under it, kept while the search is unfinished (to resume it)
STATE_FILE = "state.pt"  # the training state in each epoch's checkpoint
MAX_TRIAL_FAILURES = 2  # retries of a trial whose worker died, each from its last checkpoint
METRIC = "val_accuracy"
_KEY = "resnas"  # the trial config's entry for the trainable (next to Optuna's parameters)
# Tune's settings for this search, read from the environment while it runs (set, then restored):
_TUNE_ENV = {
    # Tune's new output engine prints its banner whatever the verbosity (the legacy one is silent at 0).
    "RAY_AIR_NEW_OUTPUT": "0",
    # CheckpointConfig(num_to_keep=1) forces a snapshot after each checkpoint, which Tune warns about.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # Trial errors are reported as one line each (`_Progress`), not as Tune's tracebacks.
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
}


@dataclass(frozen=True)
class _WorkerJob:
    """What every trial's worker needs besides its config and the data (sent once, through the object store)."""

    job: TrialJob
    threads: int
    exit_once: str | None  # Faults.exit_once


@dataclass
class _Session:
    """The running search as the searcher and the callback see it (through `_active`)."""

    core: SearchCore
    max_concurrent: int
    trials: dict[str, Trial] = field(default_factory=dict)  # Tune's live trials by id
    started: dict[str, Started] = field(default_factory=dict)  # the study's trial of each unsettled Tune trial
    settled: dict[int, TrialState] = field(default_factory=dict)  # how the searcher settled each ended trial


_SESSION: _Session | None = None


@contextlib.contextmanager
def _activate(session: _Session) -> Iterator[None]:
    """Make `session` the one `_active()` returns while the block runs.

    Tune pickles the searcher and the callbacks into its experiment state: they reach the running search
    through this instead of holding it (and its data).
    """
    global _SESSION
    previous, _SESSION = _SESSION, session
    try:
        yield
    finally:
        _SESSION = previous


def _active() -> _Session:
    if _SESSION is None:
        raise RuntimeError("resnas's Ray searcher and callback work only inside RayBackend.run")
    return _SESSION


def _number(trial: Trial) -> int:
    return int(trial.config[_KEY]["number"])


class _StudySearcher(Searcher):
    """Tune's searcher over the run's study: a config per trial the core starts; results settled by the core.

    The study holds the search's whole state, so there is nothing to save or restore."""

    def __init__(self) -> None:
        super().__init__(metric=METRIC, mode="max")

    # Searcher's annotation leaves out the Searcher.FINISHED string that its own subclasses return too.
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        """A config for a new Tune trial, None to wait for running ones, or FINISHED."""
        s = _active()
        started = s.core.next_trial(len(s.started), s.max_concurrent)
        if started is Idle.DONE:
            return Searcher.FINISHED
        if started is Idle.WAIT:
            return None
        s.started[trial_id] = started
        return {_KEY: {"number": started.trial.number, "trained_arch": started.arch.to_json()}}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        s = _active()
        if "epoch" in result:
            s.core.epoch_done(s.started[trial_id].trial, _progress(result))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        """Settle the trial through the core from its last report: complete, pruned or failed."""
        s = _active()
        started = s.started.pop(trial_id, None)
        if started is None:
            return
        result = result or {}
        failed = (f"Ray error after {MAX_TRIAL_FAILURES} retries: {_error_line(s.trials.get(trial_id))}" if error
                  else result.get("failed", ""))
        last = _progress(result) if "epoch" in result else None
        s.settled[started.trial.number] = s.core.settle_reported(
            started, last, failed=failed, micro_batches=int(result.get("micro_batches", 1)))

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study is the search's record."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a rerun reopens the study."""


def _progress(result: dict[str, Any]) -> Progress:
    """An epoch's report (a Tune result holding `Progress`'s fields) as the core takes it."""
    return Progress(**{f.name: result[f.name] for f in fields(Progress)})


def _error_line(trial: Trial | None) -> str:
    """The exception line of a trial's last Ray error (its worker died, an import failed, ...)."""
    text = str(trial.get_error() or "") if trial is not None else ""  # the error file's text
    lines = [ln.strip() for ln in text.splitlines() if re.match(r"^[\w.]*(Error|Exception)\b", ln.strip())]
    return lines[-1] if lines else "unknown error"


class _Progress(tune.Callback):
    """Hands Tune's trial events to the running search; holds no state, so a restored run reports here."""

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        _active().trials[trial.trial_id] = trial

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        _active().core.report.note(f"trial #{_number(trial)}: {_error_line(trial)}; retrying from its last "
                                   f"checkpoint (retry {trial.num_failures} of {MAX_TRIAL_FAILURES})")

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        _trial_end(trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        _trial_end(trial)


def _trial_end(trial: Trial) -> None:
    """Publish a settled trial: its weights from its last checkpoint, the run folder, the report."""
    s = _active()
    number = _number(trial)
    s.trials.pop(trial.trial_id, None)
    state = s.settled[number]
    weights = _checkpoint_weights(trial, number, s.core) if state is TrialState.COMPLETE else None
    s.core.report.trial_start(s.core.trained if state.trained else s.core.trained + 1, s.core.cfg.trials)
    s.core.publish(number, weights)


def _checkpoint_weights(trial: Trial, number: int, core: SearchCore) -> dict[str, Any] | None:
    """The model's state dict from the trial's last checkpoint; None (with a note) where it cannot be read."""
    import torch

    checkpoint = trial.checkpoint  # a complete trial reported every epoch with one
    try:
        if checkpoint is None:
            raise FileNotFoundError("Tune has no checkpoint of it")
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    except OSError as e:  # e.g. a checkpoint written to the local disk of another machine
        core.report.note(f"trial {number}: its weights are not kept ({e}); with nodes on several machines "
                         "the run folder must be on storage they all share")
        return None
    return dict(state["model"])


def _claim(marker: str) -> bool:
    """Create `marker`; False if it exists already."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _trainable(config: dict[str, Any], data: DataSplits, job: _WorkerJob) -> None:
    """One candidate as a Tune trial: `train_trial`, reporting each epoch with a checkpoint to resume from."""
    import torch

    from resnas._arch import Arch

    info = config[_KEY]
    number = info["number"]
    torch.set_num_threads(job.threads)  # this worker process trains this trial only
    resume = None
    if (checkpoint := tune.get_checkpoint()) is not None:
        with checkpoint.as_directory() as folder:
            resume = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"
    start = len(resume["history"]) if resume else 0

    def on_checkpoint(state: dict[str, Any]) -> None:
        progress = Progress(len(state["history"]), state["history"][-1]["val_accuracy"], node=node,
                            images_per_s=state["images_per_s"],
                            train_seconds=state["train_seconds"] + state["eval_seconds"], resumed_from_epoch=start)
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, Path(folder) / STATE_FILE)
            tune.report({**asdict(progress), "micro_batches": state["accumulation"]},
                        checkpoint=tune.Checkpoint.from_directory(folder))
        if job.exit_once is not None and _claim(job.exit_once):
            os._exit(1)

    outcome = train_trial(job.job, number, Arch.from_json(info["trained_arch"]), data, on_checkpoint=on_checkpoint,
                          resume=resume)
    if outcome.state is TrialState.FAILED:
        # Without an "epoch" the schedulers ignore this result; Tune insists on the metric being present.
        tune.report({METRIC: 0.0, "failed": outcome.reason})


def _scheduler(cfg: SearchConfig) -> TrialScheduler:
    """ASHA for pruner hyperband, the median rule for median; none where Optuna would not prune either."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    if not prunes(cfg):
        return FIFOScheduler()
    if cfg.pruner is PrunerName.MEDIAN:
        return MedianStoppingRule(time_attr="epoch", metric=METRIC, mode="max", grace_period=1,
                                  min_samples_required=3)
    return ASHAScheduler(time_attr="epoch", metric=METRIC, mode="max", max_t=cfg.epochs, grace_period=1,
                         reduction_factor=3)


def trial_resources(cfg: SearchConfig, nodes: list[dict[str, float]]) -> tuple[float, float, str]:
    """CPUs and GPUs each trial reserves, and the device it trains on, for a cluster of `nodes` (Ray's
    per-node resource dicts): one GPU per trial by default where a node has one, unless told otherwise."""
    cpus = cfg.cpus_per_trial or 1.0
    has_gpu = any(n.get("GPU", 0) >= 1 for n in nodes)
    gpus = cfg.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if has_gpu and cfg.device is not DeviceName.CPU else 0.0
    if gpus > 0:
        if cfg.device is DeviceName.CPU:
            raise ConfigError("cpu with GPUs per trial: drop one of them", field="device")
        return cpus, gpus, "cuda"
    if cfg.device is DeviceName.CUDA:
        why = "0 GPUs per trial" if cfg.gpus_per_trial is not None else "a cluster without GPUs"
        raise ConfigError(f"cuda with {why}: give GPUs per trial (1, or a fraction to share one) on a cluster "
                          "with GPUs", field="device")
    return cpus, 0.0, "cpu"


@contextlib.contextmanager
def _connected(address: str | None) -> Iterator[None]:
    """Attached to the cluster at `address`, or to a local Ray instance sized to this machine, while it runs."""
    # Worker output would interleave with the progress lines; failures reach the driver as Tune errors.
    if address is not None:
        _check_reachable(address)
    try:
        if address is None:
            ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                     runtime_env=runtime_env())
    except (ConnectionError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(f"cannot attach to the Ray cluster at {address}: {first}; start one with `ray start "
                           "--head` or leave the address out for a local one") from None
    try:
        yield
    finally:
        ray.shutdown()


CONNECT_TIMEOUT_S = 10.0


def runtime_env() -> dict[str, Any]:
    """This driver's resnas package shipped to every worker (Ray's py_modules, first on their sys.path): nodes
    need only Python and resnas's dependencies, and never run another version of resnas than the driver."""
    import resnas

    return {"py_modules": [str(Path(resnas.__file__).resolve().parent)]}


def _check_reachable(address: str) -> None:
    """Fail fast when nothing listens at a HOST:PORT address (ray.init would retry for minutes, logging)."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", address.strip())
    if match is None:
        return  # "auto" and other forms Ray resolves itself
    host, port = match[1], int(match[2])
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e) or type(e).__name__)
        raise StorageError(f"cannot reach a Ray cluster at {address} ({why}); start its head with `ray start "
                           "--head`, which prints the address to give, or leave the address out for a local "
                           "one", field="address") from None


@contextlib.contextmanager
def _tune_settings(max_concurrent: int) -> Iterator[None]:
    """Tune's environment settings and a quiet `ray.tune` logger while the block runs; restored after."""
    # Tune starts one trial at a time for a custom searcher, waiting for each worker to boot; this one limits
    # the trials in flight itself.
    settings = {**_TUNE_ENV, "TUNE_MAX_PENDING_TRIALS_PG": str(max_concurrent)}
    saved = {k: os.environ.get(k) for k in settings}
    logger = logging.getLogger("ray.tune")
    level = logger.level
    os.environ.update({k: v for k, v in settings.items() if saved[k] is None})
    # On Ctrl-C Tune would explain how to resume with its own API: resnas says to rerun the command.
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


def _alive_nodes() -> list[dict[str, Any]]:
    """Ray's records of the cluster's live nodes (NodeID, NodeManagerAddress, Resources ...)."""
    return [n for n in ray.nodes() if n["Alive"]]


def _capacity(nodes: list[dict[str, float]], cpus: float, gpus: float) -> tuple[int, str]:
    """How many trials the cluster can run at once, and a line describing it; ConfigError if not one."""
    total_cpus = sum(n.get("CPU", 0) for n in nodes)
    total_gpus = sum(n.get("GPU", 0) for n in nodes)
    if gpus > 0 and max(n.get("GPU", 0) for n in nodes) < gpus:
        raise ConfigError(f"{gpus:g}: the Ray cluster has {total_gpus:g} GPUs on {len(nodes)} node(s), none with "
                          f"{gpus:g}; use 0 GPUs per trial or a cluster with GPUs", field="gpus_per_trial")
    if max(n.get("CPU", 0) for n in nodes) < cpus:
        raise ConfigError(f"{cpus:g}: no node of the Ray cluster has that many CPUs (the largest has "
                          f"{max(n.get('CPU', 0) for n in nodes):g}); ask for fewer", field="cpus_per_trial")
    per_node = [math.floor(n.get("CPU", 0) / cpus + 1e-9) if gpus == 0 else
                min(math.floor(n.get("CPU", 0) / cpus + 1e-9), math.floor(n.get("GPU", 0) / gpus + 1e-9))
                for n in nodes]
    line = (f"{len(nodes)} node(s), {total_cpus:g} CPUs, {total_gpus:g} GPUs; each trial takes {cpus:g} CPU "
            f"and {gpus:g} GPU")
    return sum(per_node), line


def _trial_name(trial: Trial) -> str:
    return f"trial_{_number(trial):04d}"


def _trial_dirname(trial: Trial) -> str:
    return f"trial_{_number(trial):04d}_{trial.trial_id}"


@ray.remote(num_cpus=0)
def _sees(path: str) -> bool:
    """Whether the node this runs on sees `path`."""
    return os.path.exists(path)


PROBE_TIMEOUT_S = 120.0  # a node's first task starts a worker process: seconds, more on a loaded machine


def check_storage_shared(root: str, nodes: list[dict[str, Any]], *, given: bool = True) -> None:
    """On a cluster of several nodes, every node must see a local storage path (`given`, or the run folder):
    Tune writes each trial's checkpoints there from the node that runs it, and a node that cannot fails its
    trials."""
    if "://" in root or len(nodes) < 2:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = Path(root) / f".resnas-probe-{os.getpid()}-{os.urandom(4).hex()}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by the driver; every node must see it\n")
    try:
        asks = {n["NodeManagerAddress"] + "/" + n["NodeID"][:8]: _sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
            for n in nodes}
        blind = []
        for node, ask in asks.items():
            try:
                seen = ray.get(ask, timeout=PROBE_TIMEOUT_S)
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError):
                seen = False
            if not seen:
                blind.append(node)
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        what = root if given else f"unset, and its default, the run folder {root},"
        raise StorageError(f"{what} is not visible from {len(blind)} of the cluster's {len(nodes)} nodes "
                           f"({', '.join(blind)}), which would fail every trial they run: give a folder every "
                           "node mounts (NFS ...) or a URI such as s3://bucket/path", field="storage_path")


def _experiment(core: SearchCore) -> tuple[str, str]:
    """Tune's storage path and this search's experiment in it: RUN_DIR/ray/tune, or one named after the
    study under --storage-path (which other searches may share)."""
    path = core.cfg.storage_path
    if path is None:
        return str(core.folder.tune_dir.resolve()), EXPERIMENT
    return (path if "://" in path else str(Path(path).resolve())), f"resnas-{core.study.id[:12]}"


def _remove_experiment(root: str, name: str) -> None:
    """Delete this search's Tune experiment, nothing else under the storage path."""
    if "://" not in root:
        shutil.rmtree(Path(root) / name, ignore_errors=True)
        with contextlib.suppress(OSError):
            (Path(root) / name).parent.rmdir()  # RUN_DIR/ray, once empty (never a non-empty storage path)
        return
    import pyarrow.fs

    with contextlib.suppress(OSError):  # a missing experiment, or a store that refuses: nothing to undo
        fs, base = pyarrow.fs.FileSystem.from_uri(root)
        fs.delete_dir(f"{base.rstrip('/')}/{name}")


def _tuner(core: SearchCore, trainable: Any, root: str, name: str) -> tune.Tuner:
    """A new Tune experiment `name` under `root` whose budgeted searcher asks the run's study."""
    cfg = core.cfg
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=_StudySearcher(), scheduler=_scheduler(cfg), num_samples=-1,
                                    reuse_actors=True, trial_name_creator=_trial_name, trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(name=name, storage_path=root, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=MAX_TRIAL_FAILURES),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1), callbacks=[_Progress()]),
    )


class RayBackend:
    """Trials as Ray Tune trials on a local Ray instance or a cluster, as many at once as it fits."""

    def run(self, core: SearchCore, faults: Faults) -> None:
        cfg = core.cfg
        with _connected(cfg.address):
            nodes = _alive_nodes()
            resources = [n["Resources"] for n in nodes]
            cpus, gpus, device = trial_resources(cfg, resources)
            capacity, cluster = _capacity(resources, cpus, gpus)
            max_concurrent = cfg.max_concurrent or capacity
            check_storage_shared(cfg.storage_path or str(core.folder.path.resolve()), nodes,
                                 given=cfg.storage_path is not None)
            core.open(device, faults)  # the trials of a dead driver are queued again here
            root, name = _experiment(core)
            where = "local Ray instance" if cfg.address is None else f"Ray cluster at {cfg.address}"
            core.report.note(f"  {where}: {cluster}, up to {max_concurrent} at once")
            core.report.note(f"  early stopping: {type(_scheduler(cfg)).__name__}; Tune's state in {root}/{name}")
            job = _WorkerJob(core.job, max(1, math.floor(cpus)), faults.exit_once)
            trainable = tune.with_resources(tune.with_parameters(_trainable, data=core.data, job=job),
                                            {"cpu": cpus, "gpu": gpus})
            _remove_experiment(root, name)  # a dead driver's: the study has its trials
            try:
                with _activate(_Session(core, max_concurrent)), _tune_settings(max_concurrent):
                    _tuner(core, trainable, root, name).fit()
            finally:
                # Trials cut off by Ctrl-C stay running in the study: the next run marks them interrupted.
                _remove_experiment(root, name)
        if core.error is None and not core.done:
            raise KeyboardInterrupt


@contextlib.contextmanager
def job_client(address: str | None) -> Iterator[JobSubmissionClient]:
    """A client of a Ray cluster's job server (the head's dashboard, http://HEAD:8265), with the SDK quiet."""
    try:
        import aiohttp  # noqa: F401  (without ray[default]'s packages the jobs SDK fails deep inside)
    except ImportError:
        raise ConfigError("Ray jobs need ray[default], which resnas's `cluster` extra installs: "
                          "pip install 'resnas[cluster]'") from None
    from ray.job_submission import JobSubmissionClient

    # The SDK logs each packaged file and websocket event at INFO; resnas prints what matters itself.
    loggers = [logging.getLogger(name) for name in ("ray", "ray.dashboard.modules.dashboard_sdk",
                                                     "ray.dashboard.modules.job.sdk")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        try:
            client = JobSubmissionClient(address)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StorageError(f"cannot reach the Ray job server at {address or 'the local cluster'}: {first}; "
                               "give the head node's dashboard address, http://HEAD:8265 (started with "
                               "ray[default])") from None
        yield client
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
