"""Training one candidate, in this process or in a Ray worker: built from its seed, trained, retried in
micro-batches when out of GPU memory; only a known candidate failure (`CandidateFailed`) ends it failed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from resnas._arch import Arch
from resnas._trial import TrialState

if TYPE_CHECKING:
    from resnas._data import DataSplits
    from resnas._train import Fault

# Halvings of the micro-batch after CUDA runs out of memory (down to 1/8 of the batch) before a candidate fails.
MAX_BATCH_SPLITS = 3


class Pruned(Exception):
    """Raised by an `on_epoch` callback: the pruner stops this trial."""


@dataclass(frozen=True)
class TrialJob:
    """What training any trial needs besides its arch and the data (picklable: Ray ships it to workers)."""

    epochs: int
    batch_size: int
    lr: float
    seed: int
    device: str
    fault: Fault | None = None


@dataclass
class Outcome:
    """How a trial ended: trained (complete or pruned) with its accuracy and weights, or failed with a reason."""

    state: TrialState
    val_accuracy: float | None = None
    images_per_s: float | None = None
    reason: str = ""
    weights: Mapping[str, Any] | None = None


def train_trial(job: TrialJob, number: int, arch: Arch, data: DataSplits, *,
                on_epoch: Callable[[int, float], None] | None = None,
                on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
                resume: Mapping[str, Any] | None = None) -> Outcome:
    """Build `arch` seeded by the trial's number and train it; a candidate that cannot train (`CandidateFailed`)
    fails, never raises; any other error propagates.

    Out of GPU memory, it is trained again from scratch with the batch split in twice as many micro-batches
    (the same effective batch), up to MAX_BATCH_SPLITS times, before it fails.
    """
    from resnas._train import CandidateFailed, CandidateOOMError

    accumulation = int(resume.get("accumulation", 1)) if resume is not None else 1
    while True:
        try:
            return _train_once(job, number, arch, data, accumulation, on_epoch, on_checkpoint, resume)
        except Pruned:
            return Outcome(TrialState.PRUNED)
        except CandidateOOMError as e:
            if accumulation < 2**MAX_BATCH_SPLITS and accumulation < job.batch_size:
                accumulation *= 2
                continue
            return Outcome(TrialState.FAILED, reason=f"{e.reason}: {e} (also in {accumulation} micro-batches)")
        except CandidateFailed as e:
            # A candidate that cannot train (non-finite loss) must not stop the search; anything else is a
            # bug or the machine's, not the candidate's: it propagates with its traceback.
            return Outcome(TrialState.FAILED, reason=f"{e.reason}: {str(e).splitlines()[0] if str(e) else ''}")


def _train_once(job: TrialJob, number: int, arch: Arch, data: DataSplits, accumulation: int,
                on_epoch: Callable[[int, float], None] | None,
                on_checkpoint: Callable[[dict[str, Any]], None] | None,
                resume: Mapping[str, Any] | None) -> Outcome:
    """One training of `arch` from its seed, each batch in `accumulation` micro-batches."""
    import torch

    from resnas._build import build
    from resnas._train import TrainConfig, train_candidate

    train_cfg = TrainConfig(epochs=job.epochs, batch_size=job.batch_size, lr=job.lr, seed=job.seed + number,
                            accumulation=accumulation)
    torch.manual_seed(job.seed + number)
    model = build(arch, num_classes=data.num_classes, in_channels=data.in_channels)
    result = train_candidate(model, data, train_cfg, device=torch.device(job.device), on_epoch=on_epoch,
                             on_checkpoint=on_checkpoint, resume=resume, fault=job.fault)
    return Outcome(TrialState.COMPLETE, result.val_accuracy, result.images_per_second,
                   reason=split_reason(job.batch_size, accumulation), weights=model.state_dict())


def split_reason(batch: int, accumulation: int) -> str:
    """What a complete trial's record says when its batches had to be split to fit ("" when they were not)."""
    if accumulation == 1:
        return ""
    return (f"out of GPU memory at batch {batch}: trained in {accumulation} micro-batches per batch (the same "
            "effective batch)")
