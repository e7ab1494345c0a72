"""Proxy training: learning on real data, per-epoch reporting, failure handling, the lr schedule and the
augmentations (the random-resized crop against torchvision's crop + resize and box sampler)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import pickle

import pytest
import torch
from torch import nn

import resnas
from resnas._augment import RATIO, SCALE, crop_flip, resized_crop, resized_crop_boxes
from resnas._data import Augment, DataSplits, load_data
from resnas._errors import ConfigError
from resnas._train import (
    CandidateFailed,
    CandidateOOMError,
    Fault,
    NonFiniteLossError,
    TrainConfig,
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
    from resnas._candidate import TrialJob, train_trial
    from resnas._trial import TrialState

    data = load_data("synthetic", train_samples=128, val_samples=64, seed=0, resolution=32)
    arch = resnas.zoo.get("resnet20").narrowed(0.25)
    job = TrialJob(epochs=1, batch_size=64, lr=0.05, seed=0, device="cpu", fault=Fault.OOM_WHOLE_BATCH)
    fits = train_trial(job, 0, arch, data)
    assert fits.state is TrialState.COMPLETE and "trained in 2 micro-batches per batch" in fits.reason
    never = train_trial(dataclasses.replace(job, fault=Fault.OOM), 0, arch, data)
    assert never.state is TrialState.FAILED and "also in 8 micro-batches" in never.reason


@pytest.mark.parametrize("kind", [Augment.PAD_CROP_FLIP, Augment.RESIZED_CROP_FLIP])
def test_same_seed_same_run_and_augmentation_path(small_synthetic: DataSplits, kind: Augment) -> None:
    # Marked augmentable, the synthetic images also exercise each augmentation's path.
    data = dataclasses.replace(small_synthetic, augment=kind)
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
    out = crop_flip(x, 2, torch.Generator().manual_seed(0))
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


def test_augment_false_turns_off_any_augmentation(small_synthetic: DataSplits) -> None:
    def loss(kind: Augment, augment: bool) -> float:
        data = dataclasses.replace(small_synthetic, augment=kind)
        cfg = TrainConfig(epochs=1, batch_size=64, seed=5, augment=augment)
        return train_candidate(tiny_cnn(3, 10), data, cfg, device=CPU).history[0].train_loss

    plain = loss(Augment.NONE, True)
    assert loss(Augment.RESIZED_CROP_FLIP, False) == loss(Augment.PAD_CROP_FLIP, False) == plain
    assert loss(Augment.RESIZED_CROP_FLIP, True) != plain != loss(Augment.PAD_CROP_FLIP, True)


def _whole(n: int, h: int, w: int) -> torch.Tensor:
    return torch.tensor([[0, 0, h, w]] * n)


@pytest.mark.parametrize("size", [16, 64])
def test_resized_crop_of_the_whole_image_is_the_image(size: int) -> None:
    x = torch.rand(4, 3, size, size + 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(resized_crop(x, _whole(4, size, size + 3), (size, size + 3)), x, rtol=0, atol=1e-5)
    flipped = resized_crop(x, _whole(4, size, size + 3), (size, size + 3), torch.tensor([True, False] * 2))
    assert torch.allclose(flipped[0::2], x[0::2].flip(3), rtol=0, atol=1e-5)
    assert torch.allclose(flipped[1::2], x[1::2], rtol=0, atol=1e-5)


def _torchvision_crops(x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each image's box cropped and resized by torchvision (bilinear, no antialiasing), image by image."""
    from torchvision.transforms.v2 import functional as TF

    return torch.stack([TF.resized_crop(img, *box.tolist(), list(size), antialias=False)
                        for img, box in zip(x, boxes, strict=True)])


@pytest.mark.parametrize("size", [(24, 24), (40, 40), (9, 31)])  # smaller, larger and other-shaped output
def test_resized_crop_equals_torchvisions_crop_then_resize(size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 3, 24, 24, generator=g, dtype=torch.float64)
    boxes = resized_crop_boxes(64, 24, 24, g)
    boxes[0], boxes[1] = torch.tensor([0, 0, 24, 24]), torch.tensor([23, 0, 1, 24])  # whole; one-pixel row
    ref = _torchvision_crops(x, boxes, size)
    # In float64 the sampling positions agree exactly, box edges included.
    assert torch.allclose(resized_crop(x, boxes, size), ref, rtol=0, atol=1e-12)
    flip = torch.rand(64, generator=g) < 0.5
    flipped = torch.where(flip[:, None, None, None], ref.flip(3), ref)
    assert torch.allclose(resized_crop(x, boxes, size, flip), flipped, rtol=0, atol=1e-12)


def test_resized_crop_in_float32_is_within_coordinate_rounding_of_torchvision() -> None:
    # Training runs in float32: a sampling position in normalised coordinates (-1, 1) scaled by S / 2 to
    # pixels is off by a few float32 ulps of S, and a value in [0, 1] by at most that times the (at most 1)
    # step to its neighbour. Measured on noise, the steepest case: at most 2.6 * S * 2**-24 (3.5e-5 at
    # 224 px); 8 * S * 2**-24 allowed. Float64 agrees to 1e-12 (above): nothing else differs.
    g = torch.Generator().manual_seed(2)
    for s in (32, 224):
        x = torch.rand(32, 3, s, s, generator=g)
        boxes = resized_crop_boxes(32, s, s, g)
        diff = (resized_crop(x, boxes, (s, s)) - _torchvision_crops(x, boxes, (s, s))).abs().max().item()
        assert diff <= 8 * s * 2**-24


def _area_and_log_ratio(boxes: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (boxes[:, 2] * boxes[:, 3]).double() / (h * w), (boxes[:, 3].double() / boxes[:, 2]).log()


def test_resized_crop_boxes_follow_the_scale_and_ratio_distribution() -> None:
    n, side = 20000, 1000
    boxes = resized_crop_boxes(n, side, side, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert boxes.dtype == torch.int64
    assert bool((top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all())
    assert bool((top + h <= side).all() and (left + w <= side).all())
    area, log_ratio = _area_and_log_ratio(boxes, side, side)
    # Sides are rounded to pixels: at 1000 px that moves the scale and the ratio by under 0.01.
    assert SCALE[0] - 0.01 <= area.min() and area.max() <= SCALE[1]
    assert math.log(RATIO[0] - 0.01) <= log_ratio.min() and log_ratio.max() <= math.log(RATIO[1] + 0.01)
    # A square image keeps a try (scale s ~ U(a, 1), log-ratio t ~ U(-L, L), L = log 4/3) when s <= e^-|t|,
    # so the mean area kept is E[s; s <= e^-|t|] / P(s <= e^-|t|) = 0.4778 (a failed try is retried; all 10
    # failing has probability 0.14^10). Within 4 standard errors of it:
    a, big_l = SCALE[0], math.log(RATIO[1])
    kept = ((1 - math.exp(-big_l)) / big_l - a) / (1 - a)
    kept_area = ((1 - math.exp(-2 * big_l)) / (2 * big_l) - a * a) / (2 * (1 - a))
    assert kept_area / kept == pytest.approx(0.4778, abs=1e-4)
    assert abs(area.mean().item() - kept_area / kept) < 4 * area.std().item() / math.sqrt(n)
    assert abs(log_ratio.mean().item()) < 4 * log_ratio.std().item() / math.sqrt(n)  # symmetric about 1


def test_resized_crop_boxes_are_distributed_as_torchvisions_get_params() -> None:
    from torchvision.transforms import RandomResizedCrop

    # A small image, where rounding the sides and the whole-image boxes it makes matter.
    n, side = 4000, 24
    image = torch.empty(3, side, side)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torch.tensor([RandomResizedCrop.get_params(image, SCALE, RATIO) for _ in range(n)])
    ours = resized_crop_boxes(n, side, side, torch.Generator().manual_seed(0))
    stats = zip(_area_and_log_ratio(ours, side, side), _area_and_log_ratio(theirs, side, side), strict=True)
    for a, b in stats:
        se = math.sqrt((a.var().item() + b.var().item()) / n)
        assert abs(a.mean().item() - b.mean().item()) < 4 * se
    whole = [float(((t[:, 2] == side) & (t[:, 3] == side)).double().mean()) for t in (ours, theirs)]
    assert abs(whole[0] - whole[1]) < 4 * math.sqrt(2 * whole[1] * (1 - whole[1]) / n)
    # Where no try can fit (a strip 2 px high), torchvision's central crop narrowed to the ratio range.
    for h, w in ((2, 100), (100, 2)):
        expected = RandomResizedCrop.get_params(torch.empty(3, h, w), SCALE, RATIO)
        assert resized_crop_boxes(3, h, w, torch.Generator()).tolist() == [list(expected)] * 3
