"""Short proxy training of one candidate network on in-memory data, reporting validation accuracy per epoch.

Batches are index permutations over tensors already on the device: no DataLoader, no workers. Splits
larger than the device's data budget (`TrainConfig.device_budget_bytes`; by default a quarter of a GPU's
free memory) stay in host memory (e.g. memory-mapped from the image cache) and each batch is gathered
there, in the same order, by a background thread into pinned memory and copied to the device ahead of
its step: the same computation as the all-on-device path, with the same results.
Test hook: `train_candidate(..., fault=Fault.NAN)` replaces the first step's loss by NaN, `Fault.OOM`
raises CUDA's out-of-memory error at the first step (on any device), and `Fault.OOM_WHOLE_BATCH` does so
only while the batch is not split into micro-batches, so the search's handling of failed candidates and
its retry at a smaller micro-batch can be exercised without finding one.

`TrainConfig.accumulation` splits each batch into that many micro-batches whose gradients add up to the
whole batch's (the same effective batch, less activation memory; BatchNorm sees the micro-batches).

A run can be continued where it stopped: `on_checkpoint` hands out the full training state after each
epoch, and `resume=` takes it back (Ray Tune retries a trial whose worker died from its last epoch).

Over 500 lines because the epoch loop, its checkpoint/resume state, streamed batches and the failure
hooks share one `_Run`; split apart, each piece would need the others' internals.
"""

from __future__ import annotations

import contextlib
import enum
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnas._augment import augment
from resnas._data import Augment, DataSplits
from resnas._errors import ConfigError

__all__ = [
    "CandidateFailed",
    "CandidateOOMError",
    "EpochRecord",
    "Fault",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "lr_factor",
    "make_optimizer",
    "train_candidate",
]

# On a GPU, reading the loss back every step would stall the launch queue; check it every this many steps.
_CUDA_LOSS_CHECK_EVERY = 25
# Share of a GPU's free memory the splits may take by default; the rest is the candidate's to train in.
_DEVICE_DATA_SHARE = 0.25
# Batches a streaming run gathers ahead of the one it trains on (each one pinned host buffer).
_PREFETCH = 3


class Fault(str, enum.Enum):
    """A failure `train_candidate` injects at the first step, for tests of failed-candidate handling."""

    NAN = "nan"
    OOM = "oom"
    OOM_WHOLE_BATCH = "oom_whole_batch"  # only while TrainConfig.accumulation is 1


class CandidateFailed(Exception):
    """A candidate that could not be trained; the search records `reason` and moves on."""

    reason: str = "failed"


# The subclasses keep their constructor's arguments as `args`, so they pickle (e.g. across Ray workers).
class NonFiniteLossError(CandidateFailed):
    """The training loss became NaN or infinite."""

    reason = "non-finite loss"

    def __init__(self, epoch: int, step: int, value: float) -> None:
        super().__init__(epoch, step, value)
        self.epoch = epoch
        self.step = step
        self.value = value

    def __str__(self) -> str:
        """Where the loss went bad."""
        return f"loss became {self.value} at epoch {self.epoch}, step {self.step}"


class CandidateOOMError(CandidateFailed):
    """The candidate did not fit in GPU memory at this batch size."""

    reason = "out of memory"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        """CUDA's own account of the failed allocation."""
        return f"CUDA out of memory: {self.detail}"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one proxy training run (SGD + Nesterov, warm-up then cosine, per step)."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    seed: int = 0
    # False: no augmentation; True: the one that suits the images (`DataSplits.augment`: none for glyphs).
    augment: bool = True
    # False: the validation split is scored after the last epoch only (earlier epochs record NaN), which
    # saves the time of scoring a large split (a test set) that nothing reads before the end.
    evaluate_each_epoch: bool = True
    # Micro-batches per batch, their gradients summed before each step (after a CUDA out-of-memory error).
    accumulation: int = 1
    # Bytes of images (both splits) that may be copied to the device whole; larger splits are streamed
    # batch by batch. None: a quarter of a GPU's free memory, no limit on the CPU (nothing is copied).
    device_budget_bytes: int | None = None

    def __post_init__(self) -> None:
        """Reject values that cannot train, with ConfigError naming the setting."""
        for name in ("epochs", "batch_size", "accumulation"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be at least 1, got {getattr(self, name)}", field=name)
        if self.device_budget_bytes is not None and self.device_budget_bytes < 0:
            raise ConfigError(f"must be at least 0, got {self.device_budget_bytes}", field="device_budget_bytes")
        if not self.lr > 0:
            raise ConfigError(f"must be positive, got {self.lr}", field="lr")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be at least 0, got {self.weight_decay}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch did: its mean training loss, the validation accuracy after it, and its lr at the end."""

    epoch: int
    train_loss: float
    val_accuracy: float
    lr: float


@dataclass(frozen=True)
class TrainResult:
    """Outcome of a completed training run."""

    val_accuracy: float
    best_val_accuracy: float
    history: tuple[EpochRecord, ...]
    # Throughput of the training steps alone (forward, backward, update), excluding evaluation.
    images_per_second: float
    train_seconds: float
    eval_seconds: float
    epochs: int


def lr_factor(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base lr after `step` optimiser steps: linear warm-up, then cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(
    model: nn.Module, cfg: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD with Nesterov momentum (no weight decay on BN and bias parameters) and its per-step schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    # Weight matrices and kernels have 2+ dims; BN scales/shifts and biases have 1 and are not decayed.
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.momentum > 0,
    )
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    total = cfg.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps=warmup, total_steps=total)
    )
    return optimizer, schedule


def train_candidate(
    model: nn.Module,
    data: DataSplits,
    cfg: TrainConfig,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
    device: torch.device | str,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: Mapping[str, Any] | None = None,
    fault: Fault | None = None,
) -> TrainResult:
    """Train `model` in place on the train split, reporting (epoch, val accuracy) after each epoch.

    Exceptions raised by `on_epoch` (e.g. optuna.TrialPruned) propagate. Raises NonFiniteLossError or
    CandidateOOMError, both CandidateFailed, when the candidate cannot be trained; the model's weights are
    then meaningless. After `on_epoch`, `on_checkpoint` receives the whole training state (it refers to
    live tensors: save it before returning); `resume=` that state, with a freshly built model of the same
    arch, trains the remaining epochs exactly as the uninterrupted run would have. `fault` is a test hook.
    """
    device = torch.device(device)
    fault = None if fault is None else Fault(fault)
    try:
        with _cudnn_benchmark(device.type == "cuda"):
            return _train(_setup(model, data, cfg, device), cfg, on_epoch, on_checkpoint, resume, fault)
    except torch.cuda.OutOfMemoryError as e:
        # CUDA's message runs to several sentences of allocator advice; the first ones name the size.
        detail = " ".join(str(e).split())[:200] or "allocation failed"
    # Outside the except block the traceback, and the activations its frames hold, are released, so with
    # the gradients dropped too, empty_cache can hand the memory back before the next candidate.
    model.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()
    raise CandidateOOMError(detail)


# Trainings in flight that asked for cuDNN autotuning, and the flag's value from before the first of them.
_CUDNN_LOCK = threading.Lock()
_cudnn_users = 0
_cudnn_saved = False


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """cuDNN's per-shape autotuning on while the block runs, if `enabled`; the previous value after."""
    global _cudnn_users, _cudnn_saved
    if not enabled:
        yield
        return
    # Counted, so threads training at once (optuna n_jobs) restore the flag only when the last one ends.
    with _CUDNN_LOCK:
        if _cudnn_users == 0:
            _cudnn_saved = torch.backends.cudnn.benchmark
            # Shapes repeat every step, so cuDNN's per-shape autotuning pays off after the first few.
            torch.backends.cudnn.benchmark = True
        _cudnn_users += 1
    try:
        yield
    finally:
        with _CUDNN_LOCK:
            _cudnn_users -= 1
            if _cudnn_users == 0:
                torch.backends.cudnn.benchmark = _cudnn_saved


@dataclass(eq=False)
class _Run:
    """A training run's model, data (images on the device or streamed), optimiser, settings and progress."""

    model: nn.Module
    device: torch.device
    # On the device, or in host memory when `stream` (every batch is then gathered there and copied over).
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    memory_format: torch.memory_format
    batch: int
    accumulation: int
    steps_per_epoch: int
    optimizer: torch.optim.SGD
    schedule: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator
    # How training batches are augmented (Augment.NONE when TrainConfig.augment is off).
    augment: Augment
    autocast: torch.autocast
    stream: bool = False
    history: list[EpochRecord] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0

    @property
    def cuda(self) -> bool:
        """Whether the run trains on a CUDA GPU."""
        return self.device.type == "cuda"

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images to normalised float in the model's memory format."""
        return ((x.float() / 255 - self.mean) / self.std).contiguous(memory_format=self.memory_format)


def _setup(model: nn.Module, data: DataSplits, cfg: TrainConfig, device: torch.device) -> _Run:
    """Model and data moved to `device`, with a fresh optimiser, schedule and batch generator."""
    cuda = device.type == "cuda"
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    model.to(device)
    model.to(memory_format=memory_format)
    n = len(data.train_y)
    batch = min(cfg.batch_size, n)
    # The last partial batch is dropped: a tiny batch gives noisy BatchNorm statistics and a wasted step.
    steps_per_epoch = n // batch
    optimizer, schedule = make_optimizer(model, cfg, steps_per_epoch)
    stream = _too_large(data, cfg.device_budget_bytes, device)
    return _Run(
        model=model,
        device=device,
        train_x=data.train_x if stream else data.train_x.to(device, non_blocking=True),
        train_y=data.train_y.to(device, non_blocking=True),
        val_x=data.val_x if stream else data.val_x.to(device, non_blocking=True),
        val_y=data.val_y.to(device, non_blocking=True),
        mean=torch.tensor(data.mean, device=device).view(1, -1, 1, 1),
        std=torch.tensor(data.std, device=device).view(1, -1, 1, 1),
        memory_format=memory_format,
        batch=batch,
        accumulation=min(cfg.accumulation, batch),
        steps_per_epoch=steps_per_epoch,
        optimizer=optimizer,
        schedule=schedule,
        generator=torch.Generator(device=device).manual_seed(cfg.seed),
        augment=data.augment if cfg.augment else Augment.NONE,
        autocast=torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda),
        stream=stream,
    )


def _too_large(data: DataSplits, budget: int | None, device: torch.device) -> bool:
    """Whether both splits' images exceed `budget` bytes (None: the default for `device`) on the device."""
    if budget is None:
        if device.type != "cuda":
            return False  # host memory is where the images already are: moving them copies nothing
        budget = int(torch.cuda.mem_get_info(device)[0] * _DEVICE_DATA_SHARE)
    return data.train_x.nbytes + data.val_x.nbytes > budget


def _train(
    run: _Run,
    cfg: TrainConfig,
    on_epoch: Callable[[int, float], None] | None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None,
    resume: Mapping[str, Any] | None,
    fault: Fault | None,
) -> TrainResult:
    """The epoch loop behind `train_candidate`: train, evaluate, report, checkpoint."""
    if resume is not None:
        _restore(run, resume, cfg.epochs)
    for epoch in range(len(run.history) + 1, cfg.epochs + 1):
        _sync(run.device)
        start = time.perf_counter()
        train_loss = _train_epoch(run, epoch, fault if epoch == 1 else None)
        run.train_seconds += time.perf_counter() - start

        start = time.perf_counter()
        scored = cfg.evaluate_each_epoch or epoch == cfg.epochs
        val_accuracy = _evaluate(run, 2 * cfg.batch_size) if scored else math.nan
        run.eval_seconds += time.perf_counter() - start
        run.history.append(EpochRecord(epoch, train_loss, val_accuracy, run.optimizer.param_groups[0]["lr"]))
        if on_epoch is not None:
            on_epoch(epoch, val_accuracy)
        if on_checkpoint is not None:
            on_checkpoint(_checkpoint(run))

    return TrainResult(
        val_accuracy=run.history[-1].val_accuracy,
        best_val_accuracy=max(r.val_accuracy for r in run.history if not math.isnan(r.val_accuracy)),
        history=tuple(run.history),
        images_per_second=_throughput(run),
        train_seconds=run.train_seconds,
        eval_seconds=run.eval_seconds,
        epochs=cfg.epochs,
    )


def _throughput(run: _Run) -> float:
    """Training images per second over the epochs so far: the training steps alone, no evaluation."""
    return len(run.history) * run.steps_per_epoch * run.batch / run.train_seconds


def _checkpoint(run: _Run) -> dict[str, Any]:
    """The whole training state after the last epoch of `run.history` (live tensors, not copies)."""
    return {
        "history": [asdict(r) for r in run.history],
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(),
        "generator": run.generator.get_state(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(run.device) if run.cuda else None,
        "train_seconds": run.train_seconds,
        "eval_seconds": run.eval_seconds,
        "accumulation": run.accumulation,  # a resumed run goes on at the micro-batch that fitted
        "images_per_s": _throughput(run),
    }


def _restore(run: _Run, state: Mapping[str, Any], epochs: int) -> None:
    """Put `run` back where the `_checkpoint` state `state` was taken."""
    history = [EpochRecord(**r) for r in state["history"]]
    if not 1 <= len(history) <= epochs:
        raise ValueError(f"cannot resume after epoch {len(history)} of a {epochs}-epoch run")
    run.history = history
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.schedule.load_state_dict(state["schedule"])
    run.generator.set_state(state["generator"])
    # Dropout and stochastic depth draw from the global generators, not `run.generator`.
    torch.set_rng_state(state["cpu_rng"])
    if run.cuda:
        torch.cuda.set_rng_state(state["cuda_rng"], run.device)
    run.train_seconds, run.eval_seconds = state["train_seconds"], state["eval_seconds"]


def _train_epoch(run: _Run, epoch: int, fault: Fault | None) -> float:
    """One pass over the train split in seeded random batches; the mean training loss. Injects `fault`."""
    run.model.train()
    perm = torch.randperm(len(run.train_y), device=run.device, generator=run.generator)
    check_every = _CUDA_LOSS_CHECK_EVERY if run.cuda else 1
    losses: list[torch.Tensor] = []
    loss_sum = torch.zeros((), device=run.device)
    steps = [perm[step * run.batch : (step + 1) * run.batch] for step in range(run.steps_per_epoch)]
    with contextlib.closing(_images(run, run.train_x, steps)) as batches:
        for step, (idx, images) in enumerate(zip(steps, batches, strict=True)):
            losses.append(_step(run, idx, images, fault if step == 0 else None))
            if len(losses) == check_every or step == run.steps_per_epoch - 1:
                window = torch.stack(losses)
                _raise_if_nonfinite(window, epoch, step + 2 - len(losses))
                loss_sum += window.sum()
                losses.clear()
    return loss_sum.item() / run.steps_per_epoch


def _images(run: _Run, x: torch.Tensor, batches: list[torch.Tensor]) -> Iterator[torch.Tensor]:
    """The rows of `x` at each index tensor of `batches`, on the device: gathered there, or streamed."""
    if not run.stream:
        yield from (x[idx] for idx in batches)
        return
    # Gathering on the host needs host indices: one device-to-host copy per epoch, not per step.
    host = torch.cat(batches).cpu().split([len(idx) for idx in batches]) if batches else ()
    yield from _prefetched(x, host, run.device)


def _prefetched(x: torch.Tensor, batches: tuple[torch.Tensor, ...], device: torch.device) -> Iterator[torch.Tensor]:
    """`x[idx]` for each host index tensor in `batches`, in order, gathered by a background thread into
    (pinned, for a GPU) buffers up to _PREFETCH batches ahead and copied to `device` without blocking."""
    ready: queue.Queue[torch.Tensor | BaseException] = queue.Queue(maxsize=_PREFETCH)
    stop = threading.Event()

    def gather() -> None:
        try:
            for idx in batches:
                # A fresh buffer per batch: the pinned allocator reuses one only after its copy has run.
                buf = torch.empty((len(idx), *x.shape[1:]), dtype=x.dtype, pin_memory=device.type == "cuda")
                if not _offer(ready, torch.index_select(x, 0, idx, out=buf), stop):
                    return
        except BaseException as e:  # handed to the training thread, which raises it
            _offer(ready, e, stop)

    thread = threading.Thread(target=gather, name="resnas-prefetch", daemon=True)
    thread.start()
    try:
        for _ in batches:
            item = ready.get()
            if isinstance(item, BaseException):
                raise item
            yield item.to(device, non_blocking=True)
    finally:
        # The run may stop mid-epoch (a pruned trial, a non-finite loss): end the thread before returning.
        stop.set()
        thread.join()


def _offer(ready: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put `item` on `ready`, waiting for room unless `stop` is set; whether it was put."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _step(run: _Run, idx: torch.Tensor, images: torch.Tensor, fault: Fault | None) -> torch.Tensor:
    """One optimiser and schedule step on the training `images` (labels at `idx`), in `run.accumulation`
    micro-batches whose gradients sum to the whole batch's; the (detached) loss."""
    run.optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=run.device)
    parts = zip(idx.chunk(run.accumulation), images.chunk(run.accumulation), strict=True)
    for i, (part, part_images) in enumerate(parts):
        # Each micro-batch's mean loss weighted by its share: the sum is the whole batch's mean loss.
        loss = _loss(run, part, part_images, fault if i == 0 else None) * (len(part) / len(idx))
        loss.backward()
        total += loss.detach()
    run.optimizer.step()
    run.schedule.step()
    return total


def _loss(run: _Run, idx: torch.Tensor, images: torch.Tensor, fault: Fault | None) -> torch.Tensor:
    """The mean training loss on `images`, labelled at `idx` (augmented where the data suits it)."""
    x = run.prepare(images)
    if run.augment is not Augment.NONE:
        x = augment(x, run.augment, run.generator).contiguous(memory_format=run.memory_format)
    with run.autocast:
        logits = run.model(x)
    loss = F.cross_entropy(logits.float(), run.train_y[idx])
    return loss if fault is None else _inject(fault, loss, run.accumulation)


def _inject(fault: Fault, loss: torch.Tensor, accumulation: int) -> torch.Tensor:
    """Apply the `fault` test hook to the first step's loss."""
    if fault is Fault.OOM or (fault is Fault.OOM_WHOLE_BATCH and accumulation == 1):
        raise torch.cuda.OutOfMemoryError(f"injected by the test hook fault=Fault.{fault.name}")
    if fault is Fault.OOM_WHOLE_BATCH:
        return loss
    return loss * float("nan")


def _raise_if_nonfinite(window: torch.Tensor, epoch: int, first_step: int) -> None:
    """Raise NonFiniteLossError at the first bad loss of `window`, which starts at step `first_step`."""
    bad = (~torch.isfinite(window)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise NonFiniteLossError(epoch, first_step + i, float(window[i]))


def _evaluate(run: _Run, batch: int) -> float:
    """Top-1 accuracy of the model on the validation split, in eval mode, in batches of `batch`."""
    run.model.eval()
    correct = torch.zeros((), dtype=torch.long, device=run.device)
    slices = list(torch.arange(len(run.val_y), device=run.device).split(batch))
    with torch.no_grad(), run.autocast, contextlib.closing(_images(run, run.val_x, slices)) as batches:
        for idx, images in zip(slices, batches, strict=True):
            logits = run.model(run.prepare(images))
            correct += (logits.argmax(dim=1) == run.val_y[idx]).sum()
    return correct.item() / len(run.val_y)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mean: Sequence[float], std: Sequence[float], *,
             device: torch.device, batch_size: int = 256) -> float:
    """Top-1 accuracy of `model` in eval mode on uint8 images `x`, normalised with `mean` and `std` as training
    normalises them, in batches moved to `device` (bf16 autocast on CUDA, as evaluation during training)."""
    model.to(device).eval()
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    correct = 0
    cuda = device.type == "cuda"
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        for i in range(0, len(y), batch_size):
            images = x[i : i + batch_size].to(device, non_blocking=True).float() / 255
            logits = model((images - m) / s)
            correct += int((logits.argmax(dim=1).cpu() == y[i : i + batch_size]).sum())
    return correct / len(y)


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings cover exactly the work in between."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
