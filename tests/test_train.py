"""Proxy training: learning on real data, per-epoch reporting, failure handling and the lr schedule."""

from __future__ import annotations

import dataclasses
import itertools
import math
import pickle

import pytest
import torch
from torch import nn

import resnas
from resnas._data import DataSplits, load_data
from resnas._errors import ConfigError
from resnas._train import (
    CandidateFailed,
    CandidateOOMError,
    Fault,
    NonFiniteLossError,
    TrainConfig,
    _crop_flip,
    lr_factor,
    make_optimizer,
    train_candidate,
)
from tests._marks import needs_fashion

CPU = torch.device("cpu")


def tiny_cnn(in_channels: int, num_classes: int) -> nn.Sequential:
    """A two-conv network standing in for a resnas candidate."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, num_classes),
    )


@pytest.fixture(scope="module")
def small_synthetic() -> DataSplits:
    """A few hundred 16 px synthetic images: enough to run the loop, too few to take time."""
    return load_data("synthetic", train_samples=256, val_samples=128, seed=0, resolution=16)


@needs_fashion
def test_tiny_cnn_learns_fashion_mnist() -> None:
    data = load_data("fashion-mnist", train_samples=1000, val_samples=500, seed=0)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0.2, seed=0)
    result = train_candidate(tiny_cnn(1, 10), data, cfg, device=CPU)
    assert result.val_accuracy > 0.6  # chance is 0.1; this setting reaches about 0.75
    assert result.epochs == 2 and [r.epoch for r in result.history] == [1, 2]
    assert result.best_val_accuracy == max(r.val_accuracy for r in result.history)
    assert result.history[1].train_loss < result.history[0].train_loss < math.log(10) + 0.5
    assert result.images_per_second > 0 and result.train_seconds > 0 and result.eval_seconds > 0
    assert result.history[-1].lr == pytest.approx(0.0, abs=1e-12)


def test_on_epoch_called_once_per_epoch_with_history_values(small_synthetic: DataSplits) -> None:
    calls: list[tuple[int, float]] = []
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05)
    result = train_candidate(
        tiny_cnn(3, 10), small_synthetic, cfg, on_epoch=lambda e, a: calls.append((e, a)), device=CPU
    )
    assert calls == [(r.epoch, r.val_accuracy) for r in result.history]
    assert [e for e, _ in calls] == [1, 2, 3]


def test_exception_from_on_epoch_propagates(small_synthetic: DataSplits) -> None:
    class Pruned(Exception):
        pass

    calls: list[int] = []

    def prune(epoch: int, accuracy: float) -> None:
        calls.append(epoch)
        raise Pruned

    with pytest.raises(Pruned):
        train_candidate(tiny_cnn(3, 10), small_synthetic, TrainConfig(epochs=3), on_epoch=prune, device=CPU)
    assert calls == [1]


def test_nan_fault_hook_raises_nonfinite_loss(small_synthetic: DataSplits) -> None:
    calls: list[int] = []
    with pytest.raises(NonFiniteLossError) as info:
        train_candidate(
            tiny_cnn(3, 10),
            small_synthetic,
            TrainConfig(epochs=2),
            on_epoch=lambda e, a: calls.append(e),
            device=CPU,
            fault=Fault.NAN,
        )
    assert isinstance(info.value, CandidateFailed) and info.value.reason == "non-finite loss"
    assert (info.value.epoch, info.value.step) == (1, 1) and "nan" in str(info.value)
    assert calls == []
    copy = pickle.loads(pickle.dumps(info.value))  # failures cross process boundaries in a distributed search
    assert (type(copy), str(copy), copy.reason) == (NonFiniteLossError, str(info.value), "non-finite loss")


def test_diverging_training_is_caught_without_the_hook(small_synthetic: DataSplits) -> None:
    with pytest.raises(NonFiniteLossError):
        train_candidate(
            tiny_cnn(3, 10), small_synthetic, TrainConfig(epochs=2, lr=1e30, warmup_epochs=0), device=CPU
        )


def test_oom_fault_hook_raises_candidate_oom(small_synthetic: DataSplits) -> None:
    with pytest.raises(CandidateOOMError) as info:
        train_candidate(tiny_cnn(3, 10), small_synthetic, TrainConfig(epochs=1), device=CPU, fault=Fault.OOM)
    assert info.value.reason == "out of memory" and "fault=Fault.OOM" in str(info.value)
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)


def test_micro_batches_add_up_to_the_whole_batchs_update(small_synthetic: DataSplits) -> None:
    # Without BatchNorm (which sees each micro-batch) the summed, share-weighted gradients are the whole
    # batch's: the same weights after an epoch, up to float summation order.
    def linear() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))

    whole, split = linear(), linear()
    cfg = TrainConfig(epochs=1, batch_size=64, augment=False)
    a = train_candidate(whole, small_synthetic, cfg, device=CPU)
    b = train_candidate(split, small_synthetic, dataclasses.replace(cfg, accumulation=4), device=CPU)
    for p, q in zip(whole.parameters(), split.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)
    assert a.history[0].train_loss == pytest.approx(b.history[0].train_loss, rel=1e-5)
    changed = linear()
    assert not torch.allclose(next(changed.parameters()), next(whole.parameters()))  # it did train


def test_a_candidate_out_of_gpu_memory_is_retried_in_micro_batches() -> None:
    from resnas._lifecycle import TrialJob, train_trial
    from resnas._trial import TrialState

    data = load_data("synthetic", train_samples=128, val_samples=64, seed=0, resolution=32)
    arch = resnas.zoo.get("resnet20").narrowed(0.25)
    job = TrialJob(epochs=1, batch_size=64, lr=0.05, seed=0, device="cpu", fault=Fault.OOM_WHOLE_BATCH)
    fits = train_trial(job, 0, arch, data)
    assert fits.state is TrialState.COMPLETE and "trained in 2 micro-batches per batch" in fits.reason
    never = train_trial(dataclasses.replace(job, fault=Fault.OOM), 0, arch, data)
    assert never.state is TrialState.FAILED and "also in 8 micro-batches" in never.reason


def test_same_seed_same_run_and_augmentation_path(small_synthetic: DataSplits) -> None:
    # Marked augmentable, the synthetic images also exercise the random crop + flip path.
    data = dataclasses.replace(small_synthetic, augment=True)
    cfg = TrainConfig(epochs=1, batch_size=64, seed=5)
    a = train_candidate(tiny_cnn(3, 10), data, cfg, device=CPU)
    b = train_candidate(tiny_cnn(3, 10), data, cfg, device=CPU)
    c = train_candidate(tiny_cnn(3, 10), data, dataclasses.replace(cfg, seed=6), device=CPU)
    assert a.history[0].train_loss == b.history[0].train_loss
    assert a.history[0].train_loss != c.history[0].train_loss


def test_warmup_then_cosine_to_zero() -> None:
    model = tiny_cnn(1, 10)
    cfg = TrainConfig(epochs=4, lr=0.1, warmup_epochs=1)
    optimizer, schedule = make_optimizer(model, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    final = optimizer.param_groups[0]["lr"]
    assert lrs[:10] == pytest.approx([0.01 * (i + 1) for i in range(10)])
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[25] == pytest.approx(0.05)  # half-way through the 30 cosine steps
    assert all(x > y for x, y in itertools.pairwise(lrs[10:]))
    assert lrs[-1] < 0.001 and final == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0, warmup_steps=0, total_steps=10) == 1.0


def test_no_weight_decay_on_batchnorm_and_bias() -> None:
    model = tiny_cnn(1, 10)
    optimizer, _ = make_optimizer(model, TrainConfig(weight_decay=5e-4), steps_per_epoch=1)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2, 4}
    # Two BN layers (weight + bias each) and the linear bias.
    assert len(no_decay["params"]) == 5
    assert decay["nesterov"] and decay["momentum"] == 0.9


def test_config_rejects_values_that_cannot_train() -> None:
    with pytest.raises(ConfigError, match="at least 1, got 0") as info:
        TrainConfig(epochs=0)
    assert info.value.field == "epochs" and isinstance(info.value, ValueError)
    with pytest.raises(ConfigError, match="positive, got 0") as info:
        TrainConfig(lr=0)
    assert info.value.field == "lr"
    with pytest.raises(ConfigError, match="momentum must be in"):
        TrainConfig(momentum=1.0)
    with pytest.raises(ConfigError, match="weight_decay must be at least 0"):
        TrainConfig(weight_decay=-1.0)
    with pytest.raises(ConfigError, match="warmup_epochs must be in"):
        TrainConfig(epochs=2, warmup_epochs=3)


def test_fault_hook_is_a_parameter_not_the_environment(
    small_synthetic: DataSplits, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESNAS_FAULT", "nan")  # the old hook: no longer read
    result = train_candidate(tiny_cnn(3, 10), small_synthetic, TrainConfig(epochs=1), device=CPU)
    assert math.isfinite(result.history[0].train_loss)
    with pytest.raises(ValueError):
        train_candidate(tiny_cnn(3, 10), small_synthetic, TrainConfig(epochs=1), device=CPU, fault="boom")


def test_cudnn_benchmark_is_set_only_while_training_on_cuda() -> None:
    from resnas import _train

    before = torch.backends.cudnn.benchmark
    with _train._cudnn_benchmark(True):
        assert torch.backends.cudnn.benchmark
        with _train._cudnn_benchmark(True):  # another thread's training, overlapping
            pass
        assert torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark == before
    with _train._cudnn_benchmark(False):
        assert torch.backends.cudnn.benchmark == before


def test_crop_flip_shifts_and_mirrors_each_image() -> None:
    x = torch.arange(8 * 2 * 6 * 6, dtype=torch.float32).reshape(8, 2, 6, 6) + 1
    out = _crop_flip(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for img, src in zip(out, padded, strict=True):
        windows = [src[:, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(img, w) for w in windows)
        mirrored = any(torch.equal(img, w.flip(2)) for w in windows)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 0 < flips < 8
