"""The Optuna backend: trials one after another in this process, each trained here by `train_trial`, and as
many more worker processes of the same search as asked (one per GPU by default), all asking the one study.

Workers are what Optuna's own parallelism is (several processes on one storage): they take turns from counting
the trials to starting one (`SearchCore.claiming`), so none trains an architecture another is training, nor one
too many. This process opens the study first, so settings and the run folder are checked once; each worker then
loads the data itself (a mapped cache for image folders) and trains on its own device.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from resnas._candidate import Outcome, Pruned, train_trial
from resnas._errors import ResnasError
from resnas._lifecycle import (
    Faults,
    Report,
    SearchCore,
    Started,
    resolve_device,
)
from resnas._study import Progress

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    import optuna
    import torch

    from resnas._arch import Arch
    from resnas._config import SearchConfig

# How long a worker may take to settle its trial as interrupted once this process stops early.
STOP_GRACE_S = 60.0
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies
# Set when this process is told to stop (Ctrl-C; SIGTERM in a worker); see `_check_stop`.
_STOP = threading.Event()


def worker_devices(workers: int | None, device: torch.device, gpus: int) -> list[torch.device]:
    """The device of each worker, the first process's first: on CUDA the `gpus` GPUs in turn (one worker
    per GPU unless `workers` says otherwise), else `device` for each of `workers` (default 1)."""
    import torch

    if device.type != "cuda":
        return [device] * (workers or 1)
    return [torch.device("cuda", i % gpus) for i in range(workers or gpus)]


class LocalBackend:
    """Asks the study for one architecture at a time; trains the ones that fit on this machine's device(s)."""

    def __init__(self, device: torch.device | None = None) -> None:
        self._device = device  # a worker process's own device; None: this is the search's first process

    def run(self, core: SearchCore, faults: Faults) -> None:
        devices = [self._device] if self._device is not None else _devices(core.cfg)
        core.open(devices[0], faults)
        if len(devices) > 1:
            core.report.note(f"  {len(devices)} workers: {', '.join(map(str, devices))}")
        with _threads_per_worker(len(devices)), _ctrl_c_is_remembered():
            threads = _share(len(devices))
            workers = [_spawn(core, str(device), faults, i, threads) for i, device in enumerate(devices[1:], 2)]
            try:
                self._loop(core)
            except BaseException:
                _stop(workers)
                raise
            _join(workers, core.report)

    def _loop(self, core: SearchCore) -> None:
        while True:
            _check_stop()
            started = core.next_trial()
            if not isinstance(started, Started):
                break
            outcome = self._train(core, started.trial, started.arch)
            core.settle(started.trial, outcome, started.flops)
            core.publish(started.trial.number, outcome.weights)

    @staticmethod
    def _train(core: SearchCore, trial: optuna.Trial, trained: Arch) -> Outcome:
        """Train the trial here, pruned by the study's pruner; Ctrl-C settles it as interrupted."""

        def on_epoch(epoch: int, accuracy: float) -> None:
            _check_stop()
            core.epoch_done(trial, Progress(epoch, accuracy))
            if not core.cfg.multi_objective and trial.should_prune():
                raise Pruned

        try:
            return train_trial(core.job, trial.number, trained, core.data, on_epoch=on_epoch)
        except KeyboardInterrupt:
            core.interrupt(trial)
            raise


def _devices(cfg: SearchConfig) -> list[torch.device]:
    import torch

    device = resolve_device(cfg.device)
    return worker_devices(cfg.workers, device, torch.cuda.device_count() if device.type == "cuda" else 0)


@contextlib.contextmanager
def _threads_per_worker(workers: int) -> Iterator[None]:
    """This process's intra-op threads: its share of the CPUs while the block runs (restored after)."""
    import torch

    before = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(_share(workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _share(workers: int) -> int:
    """Each worker's share of the CPUs this process may run on."""
    return max(1, len(os.sched_getaffinity(0)) // workers)


def _spawn(core: SearchCore, device: str, faults: Faults, index: int, threads: int) -> BaseProcess:
    """Start worker `index` of the search: the same config, its own device, report and share of the CPUs."""
    # Spawned, not forked: a fork would copy this process's CUDA context and the study's open connections.
    process = multiprocessing.get_context("spawn").Process(
        target=_work, args=(core.cfg, device, core.report.worker(f"worker {index} ({device})"), faults, threads),
        name=f"resnas-worker-{index}")
    process.start()
    return process


def _work(cfg: SearchConfig, device: str, make_report: Callable[[], Report], faults: Faults,
          threads: int) -> None:
    """A worker process: the search on `device`, against the study and run folder the first process opened."""
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(threads)  # this process's own setting: it is the worker
    report = make_report()
    try:
        _stop_with_parent()
        SearchCore.prepare(cfg, report).run(LocalBackend(torch.device(device)), faults)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except ResnasError as e:
        report.note(f"stopped: {e}")
        raise SystemExit(1) from None


def _interrupt(signum: int, frame: object) -> None:
    _STOP.set()
    raise KeyboardInterrupt


def _check_stop() -> None:
    """Raise KeyboardInterrupt if this process was told to stop: the handler's own raise is lost when the
    signal lands in a weakref callback or a finaliser, which Python runs with exceptions ignored."""
    if _STOP.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def _ctrl_c_is_remembered() -> Iterator[None]:
    """While the block runs, Ctrl-C also sets the stop flag, so a KeyboardInterrupt lost in a finaliser still
    stops the search at the next check; left alone where Ctrl-C is not Python's default (a worker, an
    ignored SIGINT, another thread). The handler and the flag are restored after."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _STOP.clear()


def _stop_with_parent() -> None:
    """In a worker: SIGTERM acts as Ctrl-C (the trial is settled as interrupted) and is what the first process
    sends to stop it, also when that process dies (Linux); a Ctrl-C at the terminal is the first process's
    to handle (otherwise a worker would get it twice, the second while settling its trial)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)
    if sys.platform.startswith("linux"):
        parent = multiprocessing.parent_process()
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if parent is None or os.getppid() != parent.pid:  # it died before the request took effect
            raise KeyboardInterrupt


def _stop(workers: list[BaseProcess]) -> None:
    """Stop the workers as Ctrl-C would (each settles its trial as interrupted), then wait for them."""
    for w in workers:
        if w.is_alive() and w.pid is not None:
            os.kill(w.pid, signal.SIGTERM)
    for w in workers:
        w.join(STOP_GRACE_S)
        if w.is_alive():
            w.kill()
            w.join()


def _join(workers: list[BaseProcess], report: Report) -> None:
    """Wait for the workers to end their trials; say which one stopped on an error."""
    for w in workers:
        w.join()
        if w.exitcode:
            report.note(f"{w.name} ended with exit code {w.exitcode}; its finished trials are in the study")
