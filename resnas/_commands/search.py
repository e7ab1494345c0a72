"""`resnas search`: FLOP-budgeted architecture search (Optuna, or Ray Tune with --backend ray)."""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnas._budget import format_flops
from resnas._config import Backend, DeviceName, Objectives, PrunerName, SamplerName, SearchConfig
from resnas._runfolder import STUDY_FILE
from resnas._trial import Origin, TrialRecord, TrialState, pareto_front, ranked

DEFAULT_SPACE = "search_spaces/resnet_family.yaml"


def _summary(arch: dict[str, Any] | None) -> str:
    """A short human description of an arch dict: 'bottleneck identity post d3-4-6-3 x2 C32'."""
    if not arch:
        return ""
    depths = "-".join(str(s["depth"]) for s in arch["stages"])
    parts = [arch["block"], arch["shortcut"], arch["order"], f"d{depths}"]
    if arch["shortcut"] == "dense":
        parts.append(f"k{arch['growth_rate']}")
    else:
        parts.append("w" + "-".join(str(s["width"]) for s in arch["stages"]))
        if arch["width_multiplier"] != 1:
            parts.append(f"x{arch['width_multiplier']:g}")
    if arch["cardinality"] > 1:
        parts.append(f"C{arch['cardinality']}")
    if arch["survival"] != "none":
        parts.append(f"sd-{arch['survival']}{arch['survival_prob']:.2f}")
    if arch["dropout"] > 0:
        parts.append(f"drop{arch['dropout']:g}")
    return " ".join(parts)


class Reporter:
    """Progress for people: a live line on a terminal, one line per finished trial otherwise."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(highlight=False)
        self.live = self.console.is_terminal
        if not self.live:  # logs and pipes: no 80-column wrapping of long lines
            self.console = Console(highlight=False, width=160)
        self.status: Any = None
        self.best: float | None = None
        self.t0 = time.monotonic()
        self.trial_label = ""

    def start(self, cfg: SearchConfig, space: Any, data: Any, device: Any, fraction: float, proxy_width: float,
              done: int, recovered: list[int]) -> None:
        c = self.console
        c.print(f"resnas search: budget {format_flops(cfg.budget)} at the deployment input "
                f"{space.in_channels}x{space.resolution}x{space.resolution}, {space.num_classes} classes "
                f"(fvcore's count)")
        c.print(f"  space {cfg.space}: {_share(fraction)} of sampled architectures fit the budget")
        c.print(f"  data  {data.description}")
        c.print(f"  proxy training: {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr:g}, "
                f"{data.in_channels}x{data.resolution}x{data.resolution} input, width x{proxy_width:g}, on {device}")
        pruner = "none (multi-objective)" if cfg.multi_objective else cfg.pruner.value
        c.print(f"  sampler {cfg.sampler.value}, pruner {pruner}, objectives {cfg.objectives.value}; "
                f"study {cfg.study!r} in {cfg.storage or str(Path(cfg.out) / STUDY_FILE)}")
        if done:
            c.print(f"  resuming: {done} of {cfg.trials} candidates already trained")
        if recovered:
            c.print(f"  trials {recovered} were cut off by a dead process: marked interrupted and queued again")
        if self.live:
            self.status = c.status("starting")
            self.status.start()

    def trial_start(self, k: int, n: int) -> None:
        self.trial_label = f"trial {k}/{n}"
        self._update("screening")

    def epoch(self, number: int, epoch: int, accuracy: float) -> None:
        self._update(f"#{number} epoch {epoch}: val acc {accuracy:.3f}")

    def _update(self, what: str) -> None:
        if self.status is not None:
            best = f", best {self.best:.3f}" if self.best is not None else ""
            self.status.update(f"{self.trial_label} {what}{best} ({time.monotonic() - self.t0:.0f}s)")

    def trial_end(self, rec: TrialRecord, recs: list[TrialRecord]) -> None:
        top = ranked(recs)
        self.best = top[0].val_accuracy if top else None
        rejected = sum(r.state is TrialState.OVER_BUDGET for r in recs)
        acc = f"{rec.val_accuracy:.3f}" if rec.val_accuracy is not None else "-"
        detail = f" ({rec.reason})" if rec.reason else ""
        name = f" {rec.name}" if rec.name else ""
        if Origin.of(rec.origin) in (Origin.MOVE, Origin.FIRST):
            name += f" ({rec.origin})"
        self.console.print(
            f"{self.trial_label}: #{rec.number}{name} {rec.state.value}{detail} val acc {acc}, "
            f"{format_flops(rec.flops or 0)} ({(rec.budget_fraction or 0):.0%} of budget), "
            f"{rec.duration_s or 0:.0f}s; {rejected} over-budget samples so far"
        )

    def note(self, text: str) -> None:
        self.console.print(text)

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def worker(self, label: str) -> Callable[[], Reporter]:
        """`WorkerReporter(label)`, made in the worker process (a console cannot be pickled)."""
        return functools.partial(WorkerReporter, label)

    def finish(self, recs: list[TrialRecord], out: Path) -> None:
        from rich.table import Table

        self.stop()
        states = {s.value: sum(r.state is s for r in recs) for s in
                  (TrialState.COMPLETE, TrialState.PRUNED, TrialState.OVER_BUDGET, TrialState.DUPLICATE,
                   TrialState.FAILED, TrialState.INTERRUPTED)}
        front = {r.number for r in pareto_front(recs)}
        table = Table(title="leaderboard (validation accuracy; * = Pareto front of accuracy vs FLOPs)")
        for col in ("rank", "trial", "val acc", "FLOPs", "budget", "params (M)", "architecture"):
            table.add_column(col, justify="left" if col == "architecture" else "right")
        for i, r in enumerate(ranked(recs)[:10], 1):
            table.add_row(str(i), f"{r.number}{'*' if r.number in front else ''}", f"{r.val_accuracy:.4f}",
                          format_flops(r.flops or 0), f"{(r.budget_fraction or 0):.0%}",
                          f"{(r.params or 0) / 1e6:.2f}", f"{r.name}: " * bool(r.name) + _summary(r.arch))
        self.console.print(table)
        margin = classic_margin(recs)
        if margin:
            self.console.print(margin)
        self.console.print(", ".join(f"{v} {k}" for k, v in states.items()) +
                           f"; wall time {time.monotonic() - self.t0:.0f}s")
        self.console.print(f"results in {out}: trials.csv, accuracy_vs_flops.png, best/ (arch.json, weights.pt)")


class WorkerReporter(Reporter):
    """A worker process's progress: its finished trials and notes, each line labelled; no header or summary."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.live = False  # the first process owns the terminal's live line
        self.label = label

    def start(self, cfg: SearchConfig, space: Any, data: Any, device: Any, fraction: float, proxy_width: float,
              done: int, recovered: list[int]) -> None:
        self.console.print(f"{self.label}: started, proxy training on {device}", markup=False)

    def trial_start(self, k: int, n: int) -> None:
        self.trial_label = f"{self.label}: trial {k}/{n}"

    def note(self, text: str) -> None:
        self.console.print(f"{self.label}: {text.strip()}", markup=False)

    def finish(self, recs: list[TrialRecord], out: Path) -> None:
        pass


def _share(fraction: float) -> str:
    """A sampled fraction for people: "~36.2%", or "under 0.05%" rather than "~0.0%"."""
    if fraction <= 0:
        return "none"
    return f"~{fraction:.1%}" if fraction >= 0.0005 else "under 0.05%"


def classic_margin(recs: list[TrialRecord]) -> str:
    """The searched best against the best classic at the proxy, in one line ("" without both)."""
    top = ranked(recs)
    classic = next((r for r in top if r.name), None)
    searched = next((r for r in top if not r.name), None)
    if classic is None or searched is None:
        return ""
    gap = 100 * ((searched.val_accuracy or 0.0) - (classic.val_accuracy or 0.0))
    verdict = "ahead of" if gap > 0 else "behind" if gap < 0 else "level with"
    return (f"at the proxy, the best searched network (#{searched.number}, {searched.val_accuracy:.4f}) is "
            f"{abs(gap):.2f} points {verdict} the best classic ({classic.name}, #{classic.number}, "
            f"{classic.val_accuracy:.4f}); `resnas verify` retrains both to tell whether that holds")


def config_from_args(args: argparse.Namespace, **fixed: Any) -> SearchConfig:
    """The search's settings from its flags; `fixed` settings (a sweep's budget, sampler ...) replace theirs."""
    from resnas._budget import parse_budget

    budget = fixed.get("budget") or parse_budget(args.budget)
    settings = dict(
        space=default_space() if args.space is None else args.space, budget=budget,
        out=args.out or _default_out(args, budget), trials=args.trials, epochs=args.epochs, dataset=args.dataset,
        data_root=args.data_root, data_cache=args.data_cache, train_samples=args.train_samples, val_samples=args.val_samples,
        train_resolution=args.train_resolution, proxy_width=args.proxy_width, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, study=args.study, storage=args.storage, sampler=SamplerName(args.sampler),
        pruner=PrunerName(args.pruner), objectives=Objectives(args.objectives), device=DeviceName(args.device),
        keep_top=args.keep_top, classics=not args.no_classics, local_moves=args.local_moves, timeout=args.timeout,
        backend=Backend(args.backend),
        address=args.address, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent, storage_path=args.storage_path, workers=args.workers,
        command="resnas " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["search"] else "",
    )
    return SearchConfig(**{**settings, **fixed})


def default_space() -> str:
    """search_spaces/resnet_family.yaml here, else the one beside resnas's source (run from any folder)."""
    here = Path(DEFAULT_SPACE)
    shipped = Path(__file__).resolve().parents[2] / DEFAULT_SPACE
    return str(shipped) if not here.is_file() and shipped.is_file() else DEFAULT_SPACE


def _default_out(args: argparse.Namespace, budget: int) -> str:
    """results/runs/<space>-<budget>-<dataset>-seed<seed>: the same search resumes the same folder, however its
    budget is spelt (4G, 4GFLOPs, 4e9 and 4000M are all "4g")."""
    space = Path(args.space or DEFAULT_SPACE).stem
    return str(Path("results/runs") / f"{space}-{budget_slug(budget)}-{args.dataset}-seed{args.seed}")


def budget_slug(flops: int) -> str:
    """A budget in a folder name: 4_000_000_000 -> "4g", 1_500_000_000 -> "1p5g", 600_000 -> "600k"."""
    for suffix, scale in (("t", 10**12), ("g", 10**9), ("m", 10**6), ("k", 10**3), ("", 1)):
        if flops >= scale:
            return f"{flops / scale:.6g}{suffix}".replace(".", "p")
    return str(flops)


def _run(args: argparse.Namespace) -> int:
    import optuna

    from resnas._search import search

    # The progress lines say what Optuna's per-trial INFO lines would (this process ends with the search).
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = config_from_args(args)
    reporter = Reporter()
    try:
        search(cfg, reporter, faults=args.faults)
        if args.verify:
            from resnas._commands.verify import run_verification

            reporter.stop()
            run_verification(cfg.out, data_root=cfg.data_root, device_name=cfg.device)
    except KeyboardInterrupt:
        reporter.stop()
        print(f"resnas: stopped; the study is saved in {cfg.out}: rerun the same command to continue",
              file=sys.stderr)
        return 130
    finally:
        reporter.stop()
    return 0


def add_search_flags(p: argparse.ArgumentParser) -> None:
    """The search flags (shared with `resnas submit`, which forwards them)."""
    p.add_argument("--budget", required=True,
                   help="FLOP budget at the space's deployment input, fvcore's count: 4GFLOPs, 600M, 4e9 ...")
    p.add_argument("--trials", type=int, default=8, help="candidates to train (over-budget samples not counted)")
    p.add_argument("--out", help="run folder (default results/runs/<space>-<budget>-<dataset>-seed<seed>)")
    p.add_argument("--sampler", default="tpe", choices=[s.value for s in SamplerName],
                   help="Optuna sampler: TPE, random, or NSGA-II (for accuracy+flops)")
    p.add_argument("--pruner", default="hyperband", choices=[s.value for s in PrunerName],
                   help="stop unpromising candidates after an epoch (Optuna's pruners; ASHA or the median rule "
                        "on Ray)")
    p.add_argument("--objectives", default="accuracy", choices=[s.value for s in Objectives],
                   help="maximise accuracy, or find the accuracy/FLOPs Pareto front")
    p.add_argument("--no-classics", action="store_true",
                   help="do not train the zoo networks that the space contains under the budget first (resnet18, "
                        "densenet121, ...: the baselines the search must beat)")
    p.add_argument("--local-moves", type=float, default=0.5, metavar="SHARE",
                   help="after the openings, this share of the trials are one-step moves (a stage one block "
                        "deeper, another shortcut ...): of the best trial so far, and cheaper ones of the cheapest "
                        "within 2 points of it, in turn, between the sampler's picks; 0: none")
    p.add_argument("--verify", action="store_true",
                   help="then run `resnas verify` on the run with its defaults: retrain the candidates and the "
                        "classics from scratch and pick the cheapest as accurate as the best")
    add_training_flags(p)


def add_training_flags(p: argparse.ArgumentParser) -> None:
    """How candidates train, and where (shared with `resnas sweep`)."""
    p.add_argument("--space", help=f"search-space YAML (default: {DEFAULT_SPACE}, from the current folder or else "
                                   "beside resnas's source)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs per candidate (proxy)")
    p.add_argument("--dataset", default="fashion-mnist",
                   choices=["fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic"],
                   help="training data; the validation images are held out of its training split")
    p.add_argument("--data-root", help="dataset folder (default: $RESNAS_DATA, Debian's, torchvision's)")
    p.add_argument("--data-cache", help="where an image folder's split is decoded to once, at the training "
                                        "resolution, and memory-mapped from (default: $XDG_CACHE_HOME/resnas/data)")
    p.add_argument("--train-samples", type=int, default=2000, help="training images per candidate (proxy)")
    p.add_argument("--val-samples", type=int, default=1000, help="validation images held out of the training set")
    p.add_argument("--train-resolution", type=int,
                   help="training input size (default: the dataset's, at least 32)")
    p.add_argument("--proxy-width", type=float,
                   help="train every candidate with widths scaled by this factor (default 0.5 on CPU, 1 on GPU); "
                        "the budget always applies to the full-width network")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size per candidate")
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate (SGD + Nesterov, cosine)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler, the data split and the training")
    p.add_argument("--study", default="resnas", help="Optuna study name")
    p.add_argument("--storage", help="Optuna storage URL (default: SQLite file in --out)")
    p.add_argument("--device", default="auto", choices=[s.value for s in DeviceName],
                   help="where candidates train: auto picks cuda when PyTorch sees a GPU")
    p.add_argument("--keep-top", type=int, default=3, help="keep the weights of the best K trials")
    p.add_argument("--timeout", type=float, help="stop starting new candidates after this many seconds")
    p.add_argument("--workers", type=int,
                   help="optuna backend: processes training candidates at once, each on its own device, all "
                        "asking the one study (default: one per CUDA GPU when training on CUDA, else 1)")
    ray = p.add_argument_group("Ray (--backend ray)")
    ray.add_argument("--backend", default="optuna", choices=[b.value for b in Backend],
                     help="optuna: one trial after another in this process (default); ray: Ray Tune trials in "
                          "parallel, on a local Ray instance or on a cluster (--address)")
    ray.add_argument("--address", help="attach to a running Ray cluster: auto, or the head's HOST:PORT (default: "
                                       "start a local Ray instance for this search)")
    ray.add_argument("--cpus-per-trial", type=float, help="CPUs each trial reserves (default 1)")
    ray.add_argument("--gpus-per-trial", type=float,
                     help="GPUs each trial reserves, a fraction shares one (default: 1 when the cluster has "
                          "GPUs and --device is not cpu, else 0)")
    ray.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as the cluster fits)")
    ray.add_argument("--storage-path", help="where Tune keeps trial checkpoints: on a cluster of several machines, "
                                            "a folder every node mounts or a URI such as s3://bucket/path "
                                            "(default: RUN_DIR/ray)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search the space for the best network under a FLOP budget",
                       description="Search a space for the most accurate network under a FLOP budget.")
    add_search_flags(p)
    p.set_defaults(func=_run)

