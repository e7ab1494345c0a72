"""FLOP-budgeted search with Optuna: screen each sampled architecture by its exact cost, train the ones that fit.

Over-budget samples are never trained: they are told to Optuna with an infeasible constraint
(`trial.set_constraint`), so TPE and NSGA-II learn to stay under the budget, and they do not count
towards `--trials`. Every trial's outcome is kept in its user attributes (`state`, `reason`, costs,
arch), which the run folder turns into trials.csv, the plot and best/.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import random
import socket
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from resnas import _run
from resnas._arch import Arch
from resnas._build import build, count
from resnas._errors import UserError
from resnas._run import TrialRecord, TrialState

if TYPE_CHECKING:
    import optuna
    import torch

    from resnas._data import DataSplits
    from resnas._space import SearchSpace


class Objectives(str, enum.Enum):
    ACCURACY = "accuracy"
    ACCURACY_FLOPS = "accuracy+flops"


class SamplerName(str, enum.Enum):
    TPE = "tpe"
    RANDOM = "random"
    NSGA2 = "nsga2"


class PrunerName(str, enum.Enum):
    HYPERBAND = "hyperband"
    MEDIAN = "median"
    NONE = "none"


class DeviceName(str, enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Backend(str, enum.Enum):
    OPTUNA = "optuna"  # trials one after another in this process
    RAY = "ray"  # Ray Tune trials on a local Ray instance or a cluster (resnas._ray)


# The flags that only the Ray backend reads.
RAY_ONLY = ("address", "cpus_per_trial", "gpus_per_trial", "max_concurrent")


# After this many budget rejections in a row the sampler is not finding the feasible region.
MAX_CONSECUTIVE_REJECTIONS = 5000
# After this many failed candidates in a row (NaN loss, OOM...) the settings, not the candidates, are at fault.
MAX_CONSECUTIVE_FAILURES = 3
PLOT_INTERVAL_S = 30.0
STRATIFY_DRAWS = 400  # per kind: half uniform, then ever closer to the cheapest
# Samples drawn at start to estimate the fraction of the space under the budget (~0.2 ms each).
FEASIBILITY_SAMPLES = 2000


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search run needs; the CLI's flags map one to one onto these fields."""

    space: str
    budget: int
    out: str
    trials: int = 8
    epochs: int = 2
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    train_samples: int | None = 2000
    val_samples: int | None = 1000
    train_resolution: int | None = None
    # Proxy width factor for training (None: 0.5 on CPU, 1.0 on a GPU); budgets always use the real width.
    proxy_width: float | None = None
    batch_size: int = 64
    lr: float = 0.05
    seed: int = 0
    study: str = "resnas"
    storage: str | None = None
    sampler: SamplerName = SamplerName.TPE
    pruner: PrunerName = PrunerName.HYPERBAND
    objectives: Objectives = Objectives.ACCURACY
    device: DeviceName = DeviceName.AUTO
    keep_top: int = 3
    timeout: float | None = None
    backend: Backend = Backend.OPTUNA
    # Ray only: the cluster to attach to (None: start a local instance), resources per trial, trials at once.
    address: str | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    command: str = ""

    def __post_init__(self) -> None:
        for name, kind in (("sampler", SamplerName), ("pruner", PrunerName), ("objectives", Objectives),
                           ("device", DeviceName), ("backend", Backend)):
            object.__setattr__(self, name, kind(getattr(self, name)))
        for name in ("trials", "epochs", "batch_size", "keep_top"):
            value = getattr(self, name)
            if value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        for name in ("train_samples", "val_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if self.proxy_width is not None and not 0 < self.proxy_width <= 1:
            raise UserError(f"--proxy-width must be in (0, 1], got {self.proxy_width}")
        if self.timeout is not None and self.timeout <= 0:
            raise UserError(f"--timeout must be positive seconds, got {self.timeout}")
        if self.train_resolution is not None and self.train_resolution < 32:
            raise UserError(f"--train-resolution must be at least 32 (resnas networks need it), got "
                            f"{self.train_resolution}")
        self._check_ray_flags()

    def _check_ray_flags(self) -> None:
        """The Ray backend's flags: only with --backend ray, and with values a cluster can honour."""
        given = [name for name in RAY_ONLY if getattr(self, name) is not None]
        if given and self.backend is not Backend.RAY:
            raise UserError(f"--{given[0].replace('_', '-')} needs --backend ray")
        if self.cpus_per_trial is not None and not self.cpus_per_trial > 0:
            raise UserError(f"--cpus-per-trial must be positive, got {self.cpus_per_trial}")
        if self.gpus_per_trial is not None and not 0 <= self.gpus_per_trial <= 1:
            raise UserError(f"--gpus-per-trial must be in [0, 1] (a trial trains on one device; a fraction "
                            f"shares a GPU), got {self.gpus_per_trial}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise UserError(f"--max-concurrent must be at least 1, got {self.max_concurrent}")
        if self.address is not None and self.address.startswith(("http://", "https://")):
            raise UserError(f"--address {self.address} is a dashboard URL: give the cluster's HOST:PORT (6379 by "
                            "default) or auto; the dashboard is for `resnas submit` and `resnas jobs`")

    @property
    def multi_objective(self) -> bool:
        return self.objectives is Objectives.ACCURACY_FLOPS

    def fingerprint(self, space_text: str, proxy_width: float) -> dict[str, Any]:
        """The settings that define a study: a resumed run must use the same ones."""
        return {
            "proxy_width": proxy_width,
            "space_sha256": hashlib.sha256(space_text.encode()).hexdigest()[:16],
            "budget": self.budget,
            "objectives": self.objectives.value,
            "dataset": self.dataset,
            "epochs": self.epochs,
            "train_samples": self.train_samples,
            "val_samples": self.val_samples,
            "train_resolution": self.train_resolution,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "seed": self.seed,
        }


def resolve_device(name: DeviceName) -> torch.device:
    import torch

    if name is DeviceName.CUDA and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu or auto")
    if name is DeviceName.AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name.value)


def load_space(path: str) -> tuple[SearchSpace, str]:
    from resnas._space import SearchSpace

    try:
        text = Path(path).read_text()
    except OSError as e:
        raise UserError(f"cannot read space file {path}: {e.strerror or e}; pass a YAML file such as "
                        "search_spaces/resnet_family.yaml") from None
    return SearchSpace.from_yaml(path), text


def check_budget_is_feasible(space: SearchSpace, budget: int) -> float:
    """Fail before any training when nothing fits; else the fraction of sampled archs under the budget."""
    low = space.min_flops()
    if low > budget:
        raise UserError(
            f"no architecture in the space fits the budget: the smallest needs {low / 1e9:.3g} GFLOPs "
            f"(> {budget / 1e9:.3g} GFLOPs); raise --budget or shrink the space's minimums"
        )
    rng = random.Random(0)
    fits = 0
    for _ in range(FEASIBILITY_SAMPLES):
        arch = space.sample(rng)
        fits += count(arch, resolution=space.resolution, num_classes=space.num_classes,
                      in_channels=space.in_channels).flops <= budget
    return fits / FEASIBILITY_SAMPLES


def load_training_data(cfg: SearchConfig) -> DataSplits:
    """The proxy's data, at least 32x32 (resnas nets need it): smaller images are upsampled once here."""
    from resnas._data import load_data

    kwargs = dict(root=cfg.data_root, train_samples=cfg.train_samples, val_samples=cfg.val_samples, seed=cfg.seed)
    data = load_data(cfg.dataset, resolution=cfg.train_resolution, **kwargs)  # type: ignore[arg-type]
    if data.resolution < 32:
        data = load_data(cfg.dataset, resolution=32, **kwargs)  # type: ignore[arg-type]
    return data


def make_sampler(cfg: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    if cfg.sampler is SamplerName.RANDOM:
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.sampler is SamplerName.NSGA2:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, cfg.trials)))
    # Optuna's default of 10 random startup trials: budget rejections count among them, and fewer let TPE
    # lock onto the first family that happened to fit. `group` (for define-by-run spaces) is still marked
    # experimental, and Optuna would say so on every run.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=10)


def make_pruner(cfg: SearchConfig) -> optuna.pruners.BasePruner:
    import optuna

    # Optuna cannot prune multi-objective studies: every trained candidate runs all its epochs.
    if cfg.pruner is PrunerName.NONE or cfg.multi_objective or cfg.epochs < 2:
        return optuna.pruners.NopPruner()
    if cfg.pruner is PrunerName.MEDIAN:
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg.epochs, reduction_factor=3)


def storage_url(cfg: SearchConfig, out: Path) -> str:
    """The study's Optuna storage: --storage, else study.db in the run folder."""
    return cfg.storage or f"sqlite:///{(out / 'study.db').resolve()}"


def open_study(cfg: SearchConfig, out: Path, fingerprint: dict[str, Any], sampler_seed: int) -> optuna.Study:
    """Create or load the study; refuse to resume one made with different settings."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage_url(cfg, out)
    directions = ["maximize", "minimize"] if cfg.multi_objective else ["maximize"]
    try:
        study = optuna.create_study(
            study_name=cfg.study, storage=storage, directions=directions, load_if_exists=True,
            sampler=make_sampler(cfg, sampler_seed), pruner=make_pruner(cfg),
        )
    except ValueError as e:  # e.g. an existing study with other directions
        raise UserError(f"study {cfg.study!r} in {storage}: {e}; use another --study or --out") from None
    except Exception as e:  # SQLAlchemy's errors for a bad URL or an unreachable database
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot open --storage {storage}: {first}") from None
    known = study.user_attrs.get("resnas_settings")
    if known is None:
        study.set_user_attr("resnas_settings", fingerprint)
    elif known != fingerprint:
        diff = ", ".join(f"{k} {known.get(k)!r} -> {v!r}" for k, v in fingerprint.items() if known.get(k) != v)
        raise UserError(f"study {cfg.study!r} was created with other settings ({diff}); rerun with the "
                        "original flags to resume, or use a new --out or --study")
    return study


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_alive(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's trial: we cannot tell, so leave it alone
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Mark trials of dead processes interrupted (failed) and queue their architectures again."""
    import optuna

    recovered = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        if worker and _process_alive(worker):
            continue
        storage = study._storage
        storage.set_trial_user_attr(t._trial_id, "state", TrialState.INTERRUPTED)
        storage.set_trial_user_attr(t._trial_id, "reason", "the process running it died; retried")
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        recovered.append(t.number)
    return recovered


def records(study: optuna.Study, budget: int) -> list[TrialRecord]:
    """Every trial of the study as a trials.csv row (waiting, never-started trials are left out)."""
    import optuna

    out = []
    for t in study.get_trials(deepcopy=False):
        if t.state is optuna.trial.TrialState.WAITING:
            continue
        ua = t.user_attrs
        state = ua.get("state")
        if t.state is optuna.trial.TrialState.FAIL and state not in (TrialState.FAILED, TrialState.INTERRUPTED):
            state = TrialState.FAILED
        elif t.state is optuna.trial.TrialState.RUNNING:
            state = TrialState.RUNNING
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        flops = ua.get("flops")
        out.append(TrialRecord(
            number=t.number, state=state or TrialState.FAILED, val_accuracy=ua.get("val_accuracy"), flops=flops,
            params=ua.get("params"), macs=ua.get("macs"),
            budget_fraction=flops / budget if flops is not None else None, duration_s=duration,
            epochs=ua.get("epochs", 0), train_flops=ua.get("train_flops"), images_per_s=ua.get("images_per_s"),
            node=ua.get("node", ""), reason=ua.get("reason", ""), arch=ua.get("arch"),
            trained_arch=ua.get("trained_arch"),
        ))
    return out


@dataclass
class Candidate:
    """What the trial runner needs besides the trial: shared by every trial of a process."""

    cfg: SearchConfig
    space: SearchSpace
    data: DataSplits
    device: torch.device
    out: Path
    proxy_width: float
    on_epoch_hook: Callable[[int, int, float], None] | None = field(default=None)
    first: FirstTrials | None = None


def screen(arch: Arch, space: SearchSpace, budget: int) -> tuple[dict[str, Any], bool]:
    """Deployment-input cost attributes of `arch` and whether it fits the budget (microseconds)."""
    cost = count(arch, resolution=space.resolution, num_classes=space.num_classes, in_channels=space.in_channels)
    attrs = {"arch": arch.to_dict(), "flops": cost.flops, "macs": cost.macs, "params": cost.params}
    return attrs, cost.flops <= budget


class FirstTrials:
    """One random budget-fitting architecture per shortcut kind of the space, trained before the sampler's picks.

    The kinds fit a budget very unequally (under 4 GFLOPs in resnet_family.yaml: about 94% of dense, 36% of
    identity and 21% of gated samples), so a short search would otherwise train mostly one kind and never
    learn how the others do. They are queued one at a time, only when the study's queue is empty, so that a
    retried (interrupted) trial goes first. Draws lean to the cheap side of each dimension while none fits;
    a kind none of whose STRATIFY_DRAWS draws fits is left to the sampler.
    """

    def __init__(self, study: optuna.Study, space: SearchSpace, budget: int, seed: int) -> None:
        trials = study.get_trials(deepcopy=False)
        started = {t.user_attrs.get("stratified_start") for t in trials}
        # Only a study that began this way continues it (one from before, or with other trials, is left as is).
        shortcut = next(d for d in space.dimensions() if d.name == "shortcut")
        kinds = shortcut.domain.options() if (not trials or started - {None}) and shortcut.domain.count > 1 else ()
        rng = random.Random(seed)
        self._plan: list[tuple[str, dict[str, Any]]] = []
        for kind in kinds:
            for draw in range(STRATIFY_DRAWS):
                lean = min(1.0, 2.0 * (1.0 - draw / STRATIFY_DRAWS))
                arch, params = space.sample_params(rng, fixed={"shortcut": kind.value}, lean=lean)
                if screen(arch, space, budget)[1]:
                    if kind.value not in started:
                        self._plan.append((kind.value, params))
                    break
        self.kinds = [kind for kind, _ in self._plan]

    def queue_next(self, study: optuna.Study) -> None:
        """Before each ask: queue the next kind's architecture if nothing else waits in the queue."""
        import optuna

        if self._plan and not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            kind, params = self._plan.pop(0)
            study.enqueue_trial(params, user_attrs={"stratified_start": kind})


def note_first_trials(report: Any, first: FirstTrials) -> None:
    if first.kinds:
        report.note(f"  first trials: one fitting architecture per shortcut kind ({', '.join(first.kinds)})")


def run_trial(study: optuna.Study, ctx: Candidate) -> tuple[int, str]:
    """Ask for one architecture, screen it, train it if it fits; returns its number and resnas state."""
    import optuna
    import torch

    from resnas._train import CandidateFailed, TrainConfig, train_candidate

    cfg = ctx.cfg
    if ctx.first is not None:
        ctx.first.queue_next(study)
    trial = study.ask()
    arch = ctx.space.suggest(trial)
    attrs, fits = screen(arch, ctx.space, cfg.budget)
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    # Feasible when <= 0: the samplers read it to learn where the budget's edge lies.
    trial.set_constraint("flops_over_budget", attrs["flops"] / cfg.budget - 1.0)
    if not fits:
        trial.set_user_attr("state", TrialState.OVER_BUDGET)
        if cfg.multi_objective:  # NSGA-II learns from complete trials only; the constraint ranks it last
            study.tell(trial, [0.0, float(attrs["flops"])])
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return trial.number, TrialState.OVER_BUDGET

    data = ctx.data
    trained_arch = arch.narrowed(ctx.proxy_width)
    trial.set_user_attr("worker", worker_id())
    trial.set_user_attr("node", socket.gethostname())
    trial.set_user_attr("trained_arch", trained_arch.to_dict())
    trial.set_user_attr("train_flops", count(trained_arch, resolution=data.resolution,
                                             num_classes=data.num_classes, in_channels=data.in_channels).flops)

    def on_epoch(epoch: int, accuracy: float) -> None:
        trial.set_user_attr("epochs", epoch)
        trial.set_user_attr("val_accuracy", accuracy)
        if ctx.on_epoch_hook is not None:
            ctx.on_epoch_hook(trial.number, epoch, accuracy)
        if not cfg.multi_objective:
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

    train_cfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed + trial.number)
    try:
        torch.manual_seed(cfg.seed + trial.number)
        model = build(trained_arch, num_classes=data.num_classes, in_channels=data.in_channels)
        result = train_candidate(model, data, train_cfg, on_epoch=on_epoch, device=ctx.device)
    except optuna.TrialPruned:
        trial.set_user_attr("state", TrialState.PRUNED)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return trial.number, TrialState.PRUNED
    except KeyboardInterrupt:
        trial.set_user_attr("state", TrialState.INTERRUPTED)
        trial.set_user_attr("reason", "interrupted (Ctrl-C); retried on the next run")
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    except (CandidateFailed, RuntimeError, ValueError) as e:
        # A candidate that cannot train (NaN loss, OOM, a numerical error) must not stop the search.
        reason = getattr(e, "reason", type(e).__name__)
        trial.set_user_attr("state", TrialState.FAILED)
        trial.set_user_attr("reason", f"{reason}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return trial.number, TrialState.FAILED
    trial.set_user_attr("images_per_s", result.images_per_second)
    (ctx.out / _run.WEIGHTS_DIR).mkdir(exist_ok=True)
    path = _run.weights_path(ctx.out, trial.number)
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)
    trial.set_user_attr("state", TrialState.COMPLETE)
    accuracy = result.val_accuracy
    study.tell(trial, [accuracy, float(attrs["flops"])] if cfg.multi_objective else accuracy)
    return trial.number, TrialState.COMPLETE


def trained_count(study: optuna.Study) -> int:
    return sum(t.user_attrs.get("state") in TrialState.TRAINED for t in study.get_trials(deepcopy=False))


class RunWriter:
    """Rewrites the run folder from the study: trials.csv and the kept weights after every trial, the plot
    (about 0.2 s to render, a second with matplotlib's import) at most every PLOT_INTERVAL_S and at the end."""

    def __init__(self, study: optuna.Study, cfg: SearchConfig, out: Path) -> None:
        self.study, self.cfg, self.out = study, cfg, out
        self._next_plot = time.monotonic() + PLOT_INTERVAL_S

    def write(self, *, final: bool = False) -> list[TrialRecord]:
        """Every trial's record, after writing them out; `final` also renders the plot."""
        recs = records(self.study, self.cfg.budget)
        _run.write_trials_csv(self.out, recs)
        _run.keep_weights(self.out, recs, self.cfg.keep_top)
        if final or time.monotonic() >= self._next_plot:
            _run.plot(self.out, recs, self.cfg.budget)
            self._next_plot = time.monotonic() + PLOT_INTERVAL_S
        return recs


def write_run_file(cfg: SearchConfig, out: Path, space: SearchSpace, data: DataSplits, fraction: float,
                   proxy_width: float) -> None:
    """run.json: what export and the reports need to describe the run (no absolute paths of this machine)."""
    settings = asdict(cfg)
    settings.update({k: v.value for k, v in settings.items() if isinstance(v, enum.Enum)})
    for key in ("out", "data_root", "storage"):
        settings.pop(key)
    run = {
        "settings": settings,
        "deployment_input": {"resolution": space.resolution, "channels": space.in_channels,
                             "classes": space.num_classes},
        "training_input": {"resolution": data.resolution, "channels": data.in_channels,
                           "classes": data.num_classes},
        "data": data.description,
        "proxy_width": proxy_width,
        "fraction_of_space_under_budget": round(fraction, 4),
    }
    path = out / _run.RUN_FILE
    if path.is_file():  # keep the first command; note the latest
        old = json.loads(path.read_text())
        run["first_command"] = old.get("first_command", old["settings"].get("command", ""))
    _run.atomic_write(path, json.dumps(run, indent=2).encode())


def search(cfg: SearchConfig, report: Any) -> list[TrialRecord]:
    """Run (or resume) the search until cfg.trials candidates are trained; returns every trial's record.

    `report` receives progress events (see resnas._commands.search.Reporter).
    """
    import optuna

    if cfg.backend is Backend.RAY:
        from resnas._ray import search as search_on_ray

        return search_on_ray(cfg, report)
    out = Path(cfg.out)
    _run.prepare_out_dir(out)
    space, space_text = load_space(cfg.space)
    fraction = check_budget_is_feasible(space, cfg.budget)
    device = resolve_device(cfg.device)
    data = load_training_data(cfg)
    proxy_width = cfg.proxy_width or (1.0 if device.type == "cuda" else 0.5)
    fingerprint = cfg.fingerprint(space_text, proxy_width)
    probe = open_study(cfg, out, fingerprint, cfg.seed)
    # A resumed run must not replay the first run's random draws: offset the seed by the trials so far.
    study = open_study(cfg, out, fingerprint, cfg.seed + len(probe.trials)) if probe.trials else probe
    recovered = recover_interrupted(study)
    first = FirstTrials(study, space, cfg.budget, cfg.seed)
    write_run_file(cfg, out, space, data, fraction, proxy_width)
    report.start(cfg, space, data, device, fraction, proxy_width, trained_count(study), recovered)
    note_first_trials(report, first)
    ctx = Candidate(cfg, space, data, device, out, proxy_width, on_epoch_hook=report.epoch, first=first)
    writer = RunWriter(study, cfg, out)
    start = time.monotonic()
    rejected_in_a_row = failed_in_a_row = 0
    try:
        while (done := trained_count(study)) < cfg.trials:
            if cfg.timeout is not None and time.monotonic() - start > cfg.timeout:
                report.note(f"--timeout {cfg.timeout:g}s reached after {done} trained candidates")
                break
            report.trial_start(done + 1, cfg.trials)
            number, state = run_trial(study, ctx)
            if state == TrialState.OVER_BUDGET:
                rejected_in_a_row += 1
                if rejected_in_a_row >= MAX_CONSECUTIVE_REJECTIONS:
                    raise UserError(f"{rejected_in_a_row} samples in a row were over the budget: the sampler "
                                    "cannot find the feasible region; raise --budget or try --sampler random")
                continue
            rejected_in_a_row = 0
            recs = writer.write()
            rec = next(r for r in recs if r.number == number)
            report.trial_end(rec, recs)
            failed_in_a_row = failed_in_a_row + 1 if state == TrialState.FAILED else 0
            if failed_in_a_row >= MAX_CONSECUTIVE_FAILURES:
                raise UserError(f"{failed_in_a_row} candidates in a row failed (last: {rec.reason}); "
                                "check --lr, --batch-size and the data, then rerun to continue")
    except KeyboardInterrupt:
        writer.write(final=True)
        raise
    except optuna.exceptions.StorageInternalError as e:
        raise UserError(f"the study's storage failed: {e}") from None
    recs = writer.write(final=True)
    report.finish(recs, out)
    return recs

