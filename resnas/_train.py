"""Short proxy training of one candidate network on in-memory data, reporting validation accuracy per epoch.

Batches are index permutations over tensors already on the device: no DataLoader, no workers.
Test hook: the environment variable RESNAS_FAULT=nan replaces the first step's loss by NaN, and
RESNAS_FAULT=oom raises CUDA's out-of-memory error at the first step (on any device), so the search's
handling of failed candidates can be exercised without finding one.

A run can be continued where it stopped: `on_checkpoint` hands out the full training state after each
epoch, and `resume=` takes it back (Ray Tune retries a trial whose worker died from its last epoch).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnas._data import DataSplits

__all__ = [
    "CandidateFailed",
    "CandidateOOMError",
    "EpochRecord",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "lr_factor",
    "make_optimizer",
    "train_candidate",
]

# On a GPU, reading the loss back every step would stall the launch queue; check it every this many steps.
_CUDA_LOSS_CHECK_EVERY = 25


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
    label_smoothing: float = 0.0
    seed: int = 0
    # Random crop + flip, applied only where the data says they suit the images (`DataSplits.augment`).
    augment: bool = True

    def __post_init__(self) -> None:
        """Reject values that cannot train, with ValueError (which the CLI reports as user error)."""
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"epochs and batch_size must be at least 1, got {self.epochs} and {self.batch_size}"
            )
        if not self.lr > 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0, 0 <= momentum < 1, weight_decay >= 0, got {self}")
        if not 0 <= self.warmup_epochs <= self.epochs or not 0 <= self.label_smoothing < 1:
            raise ValueError(f"need 0 <= warmup_epochs <= epochs and 0 <= label_smoothing < 1, got {self}")


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
    device: torch.device,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train `model` in place on the train split, reporting (epoch, val accuracy) after each epoch.

    Exceptions raised by `on_epoch` (e.g. optuna.TrialPruned) propagate. Raises NonFiniteLossError or
    CandidateOOMError, both CandidateFailed, when the candidate cannot be trained; the model's weights are
    then meaningless. After `on_epoch`, `on_checkpoint` receives the whole training state (it refers to
    live tensors: save it before returning); `resume=` that state, with a freshly built model of the same
    arch, trains the remaining epochs exactly as the uninterrupted run would have.
    """
    try:
        return _train(model, data, cfg, on_epoch, torch.device(device), on_checkpoint, resume)
    except torch.cuda.OutOfMemoryError as e:
        # CUDA's message runs to several sentences of allocator advice; the first ones name the size.
        detail = " ".join(str(e).split())[:200] or "allocation failed"
    # Outside the except block the traceback, and the activations its frames hold, are released, so with
    # the gradients dropped too, empty_cache can hand the memory back before the next candidate.
    model.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()
    raise CandidateOOMError(detail)


def _train(
    model: nn.Module,
    data: DataSplits,
    cfg: TrainConfig,
    on_epoch: Callable[[int, float], None] | None,
    device: torch.device,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: Mapping[str, Any] | None = None,
) -> TrainResult:
    """The training loop behind `train_candidate`."""
    cuda = device.type == "cuda"
    if cuda:
        # Shapes repeat every step, so cuDNN's per-shape autotuning pays off after the first few.
        torch.backends.cudnn.benchmark = True
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    model.to(device)
    model.to(memory_format=memory_format)
    train_x = data.train_x.to(device, non_blocking=True)
    train_y = data.train_y.to(device, non_blocking=True)
    val_x = data.val_x.to(device, non_blocking=True)
    val_y = data.val_y.to(device, non_blocking=True)
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        """uint8 images to normalised float in the model's memory format."""
        return ((x.float() / 255 - mean) / std).contiguous(memory_format=memory_format)

    n = len(train_y)
    batch = min(cfg.batch_size, n)
    # The last partial batch is dropped: a tiny batch gives noisy BatchNorm statistics and a wasted step.
    steps_per_epoch = n // batch
    optimizer, schedule = make_optimizer(model, cfg, steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    augment = cfg.augment and data.augment
    pad = max(1, data.resolution // 8)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    check_every = _CUDA_LOSS_CHECK_EVERY if cuda else 1
    fault = os.environ.get("RESNAS_FAULT") or None

    history: list[EpochRecord] = []
    train_seconds = eval_seconds = 0.0
    if resume is not None:
        history = [EpochRecord(**r) for r in resume["history"]]
        if not 1 <= len(history) <= cfg.epochs:
            raise ValueError(f"cannot resume after epoch {len(history)} of a {cfg.epochs}-epoch run")
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        generator.set_state(resume["generator"])
        # Dropout and stochastic depth draw from the global generators, not `generator`.
        torch.set_rng_state(resume["cpu_rng"])
        if cuda:
            torch.cuda.set_rng_state(resume["cuda_rng"], device)
        train_seconds, eval_seconds = resume["train_seconds"], resume["eval_seconds"]
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        model.train()
        _sync(device)
        start = time.perf_counter()
        perm = torch.randperm(n, device=device, generator=generator)
        losses: list[torch.Tensor] = []
        loss_sum = torch.zeros((), device=device)
        for step in range(steps_per_epoch):
            idx = perm[step * batch : (step + 1) * batch]
            x = prepare(train_x[idx])
            if augment:
                x = _crop_flip(x, pad, generator).contiguous(memory_format=memory_format)
            with autocast:
                logits = model(x)
            loss = F.cross_entropy(logits.float(), train_y[idx], label_smoothing=cfg.label_smoothing)
            if fault is not None and epoch == 1 and step == 0:
                loss = _inject(fault, loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.detach())
            if len(losses) == check_every or step == steps_per_epoch - 1:
                window = torch.stack(losses)
                _raise_if_nonfinite(window, epoch, step + 2 - len(losses))
                loss_sum += window.sum()
                losses.clear()
        train_loss = loss_sum.item() / steps_per_epoch
        train_seconds += time.perf_counter() - start

        start = time.perf_counter()
        val_accuracy = _evaluate(model, val_x, val_y, prepare, 2 * cfg.batch_size, autocast)
        eval_seconds += time.perf_counter() - start
        history.append(EpochRecord(epoch, train_loss, val_accuracy, optimizer.param_groups[0]["lr"]))
        if on_epoch is not None:
            on_epoch(epoch, val_accuracy)
        if on_checkpoint is not None:
            on_checkpoint({
                "history": [asdict(r) for r in history],
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "generator": generator.get_state(),
                "cpu_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if cuda else None,
                "train_seconds": train_seconds,
                "eval_seconds": eval_seconds,
            })

    return TrainResult(
        val_accuracy=history[-1].val_accuracy,
        best_val_accuracy=max(r.val_accuracy for r in history),
        history=tuple(history),
        images_per_second=cfg.epochs * steps_per_epoch * batch / train_seconds,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        epochs=cfg.epochs,
    )


def _inject(fault: str, loss: torch.Tensor) -> torch.Tensor:
    """Apply the RESNAS_FAULT test hook to the first step's loss."""
    if fault == "nan":
        return loss * float("nan")
    if fault == "oom":
        raise torch.cuda.OutOfMemoryError("injected by RESNAS_FAULT=oom")
    raise ValueError(f"RESNAS_FAULT must be 'nan' or 'oom', got {fault!r}")


def _raise_if_nonfinite(window: torch.Tensor, epoch: int, first_step: int) -> None:
    """Raise NonFiniteLossError at the first bad loss of `window`, which starts at step `first_step`."""
    bad = (~torch.isfinite(window)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise NonFiniteLossError(epoch, first_step + i, float(window[i]))


def _crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Per-image random crop of a zero-padded (i.e. mean-coloured) batch plus random horizontal flip."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, b, 1), device=x.device, generator=generator)
    rows = (offsets[0] + torch.arange(h, device=x.device))[:, :, None]
    cols = (offsets[1] + torch.arange(w, device=x.device))[:, None, :]
    # Advanced indices around a slice put the batch, row and column dims first: b x h x w x c.
    crops = padded[torch.arange(b, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(b, device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)


def _evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    batch: int,
    autocast: torch.autocast,
) -> float:
    """Top-1 accuracy of `model` on (x, y), in eval mode, batched."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    with torch.no_grad(), autocast:
        for i in range(0, len(y), batch):
            logits = model(prepare(x[i : i + batch]))
            correct += (logits.argmax(dim=1) == y[i : i + batch]).sum()
    return correct.item() / len(y)


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings cover exactly the work in between."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
