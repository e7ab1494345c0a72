"""Datasets decoded once into uint8 tensors, served as seeded train/validation splits.

Every split is an N x C x H x W uint8 tensor: a proxy search trains many small candidates, so per-batch
decoding would cost more than the training. The small datasets (Fashion-MNIST, CIFAR, synthetic) are
decoded once per process and held in memory. An `imagefolder` is scanned (names, sizes, mtimes: no
decoding), split by its labels, and only the split's images are decoded, by worker processes, at the
training resolution, into an on-disk cache (`resnas._cache`) that later loads map instead of decoding:
a second search, a resume and every trial on the node share it through the page cache. CIFAR asked for
at another resolution than its own 32 px is resized once into the same cache, and mapped from there.

The validation split is always held out of the dataset's *training* set. The test set is read only by
`load_verification` (`resnas verify`), never by a search. Which datasets exist and how each is found and
read is `resnas._datasets`' registry; this module splits what they read.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from resnas import _cache
from resnas._contract import InputContract, Resize
from resnas._datasets import DATASETS, Augment, Dataset, Decoded, Folder, Images, Spec, read_idx
from resnas._errors import ConfigError, DataError

__all__ = ["Augment", "DataSplits", "Dataset", "load_data", "load_verification", "read_idx"]


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Train and validation images (uint8, N x C x H x W) and labels (int64), with their statistics."""

    name: Dataset
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    # Positions of the splits' images in the dataset's full training set, for provenance.
    train_index: torch.Tensor
    val_index: torch.Tensor
    num_classes: int
    in_channels: int
    # Per-channel statistics of train_x on the [0, 1] scale, for normalising inputs.
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # The augmentation that suits these images (natural photos: crops and flips; digits, glyphs: none).
    augment: Augment
    description: str
    # Output i's name; how raw images of any size were resized to these.
    class_names: tuple[str, ...] = ()
    resize: Resize = Resize.STRETCH
    # `load_verification` only: the test split, scored only for the networks a verification picks.
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None

    def __post_init__(self) -> None:
        """`augment` given by value ("none", ...) becomes the enum; a bool (the old field) is rejected."""
        object.__setattr__(self, "augment", Augment(self.augment))
        object.__setattr__(self, "resize", Resize(self.resize))
        if not self.class_names:
            object.__setattr__(self, "class_names", tuple(str(i) for i in range(self.num_classes)))

    @property
    def resolution(self) -> int:
        """Side length in pixels of the (square) images."""
        return int(self.train_x.shape[-1])

    @property
    def contract(self) -> InputContract:
        """What a network trained on these splits expects of a raw image."""
        return InputContract(resolution=self.resolution, channels=self.in_channels, mean=self.mean, std=self.std,
                             class_names=self.class_names, resize=self.resize)

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        """Pickled with its tensors as numpy arrays, which pickle 5 carries out of band: Ray's object store
        then hands every trial on a node a read-only view of one shared copy (torch tensors would be copied
        into each trial's own memory)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return _unpickle_splits, ({k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in values.items()},)


def _unpickle_splits(values: dict[str, Any]) -> DataSplits:
    """`DataSplits.__reduce__` undone: tensors sharing the arrays' memory (read-only ones included)."""
    with warnings.catch_warnings():
        # Arrays in Ray's shared memory are read-only; training only reads its data, never writes it.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return DataSplits(**{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in values.items()})


@dataclass(frozen=True)
class _Store:
    """Where and how image folders are decoded: the cache folder, worker processes and the decoder."""

    cache_dir: Path
    workers: int | None  # None: one per CPU (at most 16), fewer for a small split
    decode: _cache.Decoder

    @classmethod
    def of(cls, cache_dir: str | os.PathLike[str] | None, workers: int | None,
           decode: _cache.Decoder | None) -> _Store:
        """The settings given, with the defaults filled in and checked."""
        if workers is not None and workers < 1:
            raise ConfigError(f"must be at least 1, got {workers}", field="workers")
        return cls(
            cache_dir=_cache.default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser().absolute(),
            workers=workers,
            decode=_cache.decode_image if decode is None else decode,
        )


# Images converted to float at a time when resizing or averaging, bounding the temporary copy.
_CHUNK = 4096
# Serialises first loads so threads running trials (optuna n_jobs) decode a dataset once, not once each.
_LOCK = threading.Lock()
# Decoded uint8 images held at most: 100x the default proxy at 224 px (3000 images, 450 MB) and 100x all
# of CIFAR at 32 px; more is a typo'd resolution or sample count that would exhaust memory while resizing.
MAX_IMAGE_BYTES = 2**36
# Training images `load_verification` holds out, by default, to choose among verified networks: as many as
# Fashion-MNIST's and CIFAR's test sets. With 5000, the paired differences over 3 seeds spread several times
# wider than the test split's for the same networks, and "as accurate" let through a network the test split
# put 0.6 points below (results/benchmarks/search_quality-select5000-cpu.txt).
SELECT_SAMPLES = 10_000


def load_data(
    name: Dataset | str,
    *,
    root: str | None = None,
    train_samples: int | None = None,
    val_samples: int | None = None,
    seed: int = 0,
    resolution: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    decode: _cache.Decoder | None = None,
) -> DataSplits:
    """Class-balanced, seed-fixed train/val splits of `name`'s training set, optionally resized.

    An image folder's split is decoded by `workers` processes (default: one per CPU, at most 16) into the
    cache in `cache_dir` (default: $XDG_CACHE_HOME/resnas/data), or mapped from there if it was before.
    `decode` (path, resolution) -> 3 x res x res uint8 replaces the decoder: a test hook.
    """
    source = _Source.open(name, root, None, resolution, _Store.of(cache_dir, workers, decode))
    dataset = source.dataset
    n = len(source.train.y)
    n_val = max(1, n // 10) if val_samples is None else val_samples
    n_train = n - n_val if train_samples is None else train_samples
    if n_val < 1 or n_train < 1 or n_val + n_train > n:
        raise ConfigError(
            f"{dataset.value} has {n} training images; cannot take {n_train} train + {n_val} validation "
            f"(each at least 1, together at most {n}): change train_samples or val_samples"
        )
    order = _balanced_order(source.train.y, source.train.num_classes, seed)
    # The validation split is the order's head: the same images for any train_samples.
    val_idx, train_idx = order[:n_val], order[n_val : n_val + n_train]
    return source.splits(train_idx, val_idx, "train_samples, val_samples",
                         f"+ {n_val} validation images held out of its {n}-image training set (seed {seed})")


def load_verification(
    name: Dataset | str,
    *,
    root: str | None = None,
    test_root: str | None = None,
    train_samples: int | None = None,
    select_samples: int | None = None,
    seed: int = 0,
    resolution: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    decode: _cache.Decoder | None = None,
) -> DataSplits:
    """Class-balanced train images from the training set; as the validation split, `select_samples` more of
    the training set (default: up to SELECT_SAMPLES), held out to choose among networks; the whole test set
    as the test split, scored only for what was chosen.

    `cache_dir`, `workers` and `decode` as for `load_data`.
    """
    source = _Source.open(name, root, test_root, resolution, _Store.of(cache_dir, workers, decode), test=True)
    dataset = source.dataset
    full, test = source.train, source.test
    assert test is not None  # opened with test=True
    n = len(full.y)
    n_train = n if train_samples is None else train_samples
    if not 1 <= n_train < n:
        raise ConfigError(f"must be in [1, {n - 1}] ({dataset.value}'s training images, less one held out to "
                          f"choose among networks), got {n_train}", field="train_samples")
    n_select = min(SELECT_SAMPLES, n - n_train) if select_samples is None else select_samples
    if not 1 <= n_select <= n - n_train:
        raise ConfigError(f"must be in [1, {n - n_train}] (the training images left after {n_train} to train "
                          f"on), got {n_select}", field="select_samples")
    if test.num_classes != full.num_classes or _shape(test) != _shape(full):
        raise DataError(f"the test images ({test.source}: {test.num_classes} classes, {_shape(test)}) do "
                        f"not match the training images ({full.num_classes} classes, {_shape(full)}); "
                        "give a test folder with the same classes")
    order = _balanced_order(full.y, full.num_classes, seed)
    # The training split is the order's head, as before the selection split existed: earlier verifications
    # train the same images.
    train_idx, select_idx = order[:n_train], order[n_train : n_train + n_select]
    return source.splits(train_idx, select_idx, "train_samples",
                         f"images of its {n}-image training set (seed {seed}); networks chosen on {n_select} "
                         f"more held out of it; the chosen ones scored on the {len(test.y)}-image test set "
                         f"({test.source})")


@dataclass(frozen=True)
class _Source:
    """A dataset's training set (and a verification's test set) as read, and where splits are decoded."""

    dataset: Dataset
    spec: Spec
    train: Images
    test: Images | None
    resolution: int | None  # the side length asked, else the dataset's default (None: the images' own)
    store: _Store

    @classmethod
    def open(cls, name: Dataset | str, root: str | None, test_root: str | None, resolution: int | None,
             store: _Store, *, test: bool = False) -> _Source:
        """The name, resolution and folders checked, then the training set (and the test set if `test`) read
        or found."""
        try:
            dataset = Dataset(name)
        except ValueError:
            choices = ", ".join(d.value for d in Dataset)
            raise ConfigError(f"unknown dataset {name!r}; choose one of {choices}", field="dataset") from None
        if resolution is not None and resolution < 4:
            raise ConfigError(f"resolution must be at least 4 pixels, got {resolution}")
        _check_root(root, "data_root")
        _check_root(test_root, "test_root")
        spec = DATASETS[dataset]
        side = spec.side(resolution)
        with _LOCK:
            train = spec.train(root, side)
            tested = spec.test(root, test_root, side) if test else None
        return cls(dataset, spec, train, tested, side, store)

    def splits(self, train_idx: torch.Tensor, held_idx: torch.Tensor, fix: str, tail: str) -> DataSplits:
        """The training images at `train_idx`, the held-out ones at `held_idx` as the validation split, the
        whole test set if read, the training images' statistics; `fix` names the settings to lower if they
        would not fit in memory, `tail` ends the description."""
        full, test, n_held = self.train, self.test, len(held_idx)
        res = self.resolution
        n_test = 0 if test is None else len(test.y)
        if isinstance(full, Decoded):  # a folder's pixels live on disk, mapped: the cache checks the free space
            _check_bytes(len(train_idx) + n_held + n_test, full.x.shape[1], res or full.x.shape[-1], fix)
        # One array, held-out images first: the splits are views of it (of one cache file for a folder).
        x, (mean, std) = _take(full, torch.cat([held_idx, train_idx]), res, n_held, self.store)
        test_x = None if test is None else _take(test, torch.arange(n_test), res, 0, self.store)[0]
        c, h, w = x.shape[1:]
        return DataSplits(
            name=self.dataset, train_x=x[n_held:], train_y=full.y[train_idx], val_x=x[:n_held],
            val_y=full.y[held_idx], train_index=train_idx, val_index=held_idx, num_classes=full.num_classes,
            in_channels=int(c), mean=mean, std=std, augment=self.spec.augment,
            class_names=self.spec.classes or full.class_names, resize=self.spec.resize, test_x=test_x,
            test_y=None if test is None else test.y,
            description=f"{full.source}: {c}x{h}x{w}, {full.num_classes} classes, {len(train_idx)} train "
                        f"{tail}",
        )


def _shape(data: Images) -> tuple[int, ...] | None:
    """The decoded images' C x H x W, or None for a folder (decoded to 3 x res x res when needed)."""
    return tuple(data.x.shape[1:]) if isinstance(data, Decoded) else None


def _take(data: Images, idx: torch.Tensor, resolution: int | None, stats_from: int,
          store: _Store) -> tuple[torch.Tensor, tuple[tuple[float, ...], tuple[float, ...]]]:
    """The images at `idx` at `resolution`, and the channel statistics of those from `stats_from` on."""
    if not isinstance(data, Decoded):
        assert resolution is not None  # `Spec.side` gave image folders their default
        return _cached_folder(data, idx, resolution, stats_from, store)
    native = tuple(data.x.shape[-2:]) == (resolution, resolution)
    if data.fingerprint is not None and resolution is not None and not native:
        return _cached_resize(data, idx, resolution, stats_from, store)
    x = _resize(data.x[idx], resolution)
    return x, _channel_stats(x[stats_from:])


def _cached_folder(folder: Folder, idx: torch.Tensor, resolution: int, stats_from: int,
                   store: _Store) -> tuple[torch.Tensor, tuple[tuple[float, ...], tuple[float, ...]]]:
    """The folder's images at `idx`, from its cache entry (built first if missing), and their statistics."""
    positions = idx.to(torch.int64).numpy()
    key = {"source": "imagefolder", "root": folder.root, "files": folder.fingerprint}
    return _cached(key, positions, [folder.paths[i] for i in positions], resolution, stats_from, store,
                   store.decode, folder.root)


def _cached_resize(full: Decoded, idx: torch.Tensor, resolution: int, stats_from: int,
                   store: _Store) -> tuple[torch.Tensor, tuple[tuple[float, ...], tuple[float, ...]]]:
    """The decoded images at `idx` resized as `_resize` does, from their cache entry (built first if missing),
    and their statistics: a split resized once, then mapped by every later load."""
    positions = idx.to(torch.int64).numpy()
    key = {"source": full.source, "files": full.fingerprint, "resize": "bilinear, antialiased"}
    return _cached(key, positions, full.x.numpy()[positions], resolution, stats_from, store, _resize_one,
                   full.source)


def _cached(key: dict[str, Any], positions: np.ndarray, sources: Sequence[Any], resolution: int,
            stats_from: int, store: _Store, decode: _cache.Decoder,
            name: str) -> tuple[torch.Tensor, tuple[tuple[float, ...], tuple[float, ...]]]:
    """`sources` decoded to `resolution` through the cache entry of `key` plus the resolution, the split's
    `positions` and `stats_from`, and the channel statistics of the rows from `stats_from` on."""
    key = {**key, "resolution": resolution, "indices": hashlib.sha256(positions.tobytes()).hexdigest(),
           "stats_from": stats_from}

    def summarize(pixels: np.ndarray) -> dict[str, list[float]]:
        mean, std = _channel_stats(torch.from_numpy(pixels[stats_from:]))
        return {"mean": list(mean), "std": list(std)}

    pixels, summary = _cache.cached_images(
        key, sources, resolution, cache_dir=store.cache_dir, workers=store.workers, decode=decode,
        summarize=summarize, folder=name,
    )
    return torch.from_numpy(pixels), (tuple(summary["mean"]), tuple(summary["std"]))


def _check_root(root: str | None, field: str) -> None:
    """A folder the user named exists: else the search would silently fall back to another copy."""
    if root is not None and not Path(root).expanduser().is_dir():
        raise DataError(f"{root} is not a folder; give the folder that holds the dataset, or leave it unset "
                        "to use the usual places", field=field)


def _check_bytes(images: int, channels: int, resolution: int, fix: str) -> None:
    """`images` decoded at `resolution` fit MAX_IMAGE_BYTES, checked before they are allocated."""
    size = images * channels * resolution * resolution
    if size > MAX_IMAGE_BYTES:
        raise ConfigError(f"{images:,} images of {channels}x{resolution}x{resolution} would take "
                          f"{size / 2**30:,.0f} GiB, at most {MAX_IMAGE_BYTES / 2**30:.0f} GiB; lower the resolution "
                          f"or {fix}")


def _balanced_order(y: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """A seeded permutation of indices that cycles through the classes, so every prefix is class-balanced."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    labels = y[perm]
    # Rank of each element among its class, in permuted order; sorting by rank interleaves the classes.
    by_class = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(perm)
    rank[by_class] = torch.arange(len(y)) - starts[labels[by_class]]
    return perm[torch.argsort(rank, stable=True)]


def _resize_one(image: np.ndarray, resolution: int) -> np.ndarray:
    """One C x H x W uint8 image resized as `_resize` does: the cache's decoder for decoded datasets."""
    return _resize(torch.from_numpy(image).unsqueeze(0), resolution)[0].numpy()


def _resize(x: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """`x` resized to resolution x resolution (antialiased bilinear), in chunks to bound the float copy."""
    if resolution is None or tuple(x.shape[-2:]) == (resolution, resolution):
        return x
    out = torch.empty(*x.shape[:2], resolution, resolution, dtype=torch.uint8)
    for i in range(0, len(x), _CHUNK):
        chunk = x[i : i + _CHUNK].float()
        resized = F.interpolate(chunk, size=(resolution, resolution), mode="bilinear", antialias=True)
        out[i : i + _CHUNK] = resized.round().clamp(0, 255).to(torch.uint8)
    return out


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images on the [0, 1] scale."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    # Chunked, so the float copy stays small even for all of CIFAR (a full one would be 600 MB).
    for i in range(0, len(x), _CHUNK):
        chunk = x[i : i + _CHUNK].float() / 255
        total += chunk.sum(dim=(0, 2, 3), dtype=torch.float64)
        squares += chunk.square().sum(dim=(0, 2, 3), dtype=torch.float64)
    count = x.numel() // x.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-6).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
