"""Datasets decoded once into uint8 tensors, served as seeded train/validation splits.

Every split is an N x C x H x W uint8 tensor: a proxy search trains many small candidates, so per-batch
decoding would cost more than the training. The small datasets (Fashion-MNIST, CIFAR, synthetic) are
decoded once per process and held in memory. An `imagefolder` is scanned (names, sizes, mtimes: no
decoding), split by its labels, and only the split's images are decoded, by worker processes, at the
training resolution, into an on-disk cache (`resnas._cache`) that later loads map instead of decoding:
a second search, a resume and every trial on the node share it through the page cache. CIFAR asked for
at another resolution than its own 32 px is resized once into the same cache, and mapped from there.

The validation split is always held out of the dataset's *training* set. The test set is read only by
`load_verification` (`resnas verify`), never by a search.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import gzip
import hashlib
import math
import os
import socket
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from resnas import _cache
from resnas._contract import InputContract, Resize
from resnas._errors import ConfigError, DataError

__all__ = ["Augment", "DataSplits", "Dataset", "load_data", "load_verification", "read_idx"]


class Dataset(str, enum.Enum):
    """A dataset `load_data` knows how to find and decode."""

    FASHION_MNIST = "fashion-mnist"
    CIFAR10 = "cifar10"
    CIFAR100 = "cifar100"
    IMAGEFOLDER = "imagefolder"
    SYNTHETIC = "synthetic"


class Augment(str, enum.Enum):
    """The training-time augmentation that suits a dataset's images (`resnas._augment` applies it)."""

    NONE = "none"  # digits, glyphs, synthetic patterns: where and which way round carry meaning
    PAD_CROP_FLIP = "pad_crop_flip"  # CIFAR's recipe: pad by resolution // 8, random crop back, flip
    RESIZED_CROP_FLIP = "resized_crop_flip"  # ImageNet's: random box of 8-100% of the area, resized, flip


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


@dataclass(frozen=True, eq=False)
class _Full:
    """One decoded training set, shared by every `load_data` call in the process."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    augment: Augment
    source: str
    # Digest of the files the images were read from (paths, sizes, mtimes), or None if not from files:
    # given, a resize to another resolution goes through the on-disk cache.
    fingerprint: str | None = None
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class _Folder:
    """An image folder scanned but not decoded: its files in ImageFolder's order, labels and fingerprint."""

    root: str
    paths: tuple[str, ...]
    y: torch.Tensor
    num_classes: int
    # Digest of every file's relative path, size and modification time: any change makes a new cache key.
    fingerprint: str
    source: str
    augment: Augment = Augment.RESIZED_CROP_FLIP
    class_names: tuple[str, ...] = ()


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


# Folders searched without being named: the usual torchvision spot `./data` and, for Fashion-MNIST,
# Debian's package `dataset-fashion-mnist` first.
_TORCHVISION_ROOTS: tuple[Path, ...] = (Path("data"),)
_FASHION_ROOTS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"), *_TORCHVISION_ROOTS)
# Layouts a Fashion-MNIST folder may have: flat (Debian, the original site) or torchvision's.
_FASHION_SUBDIRS = ("", "FashionMNIST/raw", "fashion-mnist")
_FASHION_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_FASHION_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# Zalando's names of Fashion-MNIST's labels 0-9 (github.com/zalandoresearch/fashion-mnist).
_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot")
_SYNTHETIC_TEST_SIZE = 2000
_DOWNLOAD_TIMEOUT_S = 30.0
_SYNTHETIC_SIZE = 6000
_SYNTHETIC_CLASSES = 10
_SYNTHETIC_RESOLUTION = 32
_IMAGEFOLDER_RESOLUTION = 64
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
    try:
        dataset = Dataset(name)
    except ValueError:
        choices = ", ".join(d.value for d in Dataset)
        raise ConfigError(f"unknown dataset {name!r}; choose one of {choices}", field="dataset") from None
    if resolution is not None and resolution < 4:
        raise ConfigError(f"resolution must be at least 4 pixels, got {resolution}")
    _check_root(root, "data_root")
    store = _Store.of(cache_dir, workers, decode)
    with _LOCK:
        full = _full_dataset(dataset, root, resolution)
    n = len(full.y)
    n_val = max(1, n // 10) if val_samples is None else val_samples
    n_train = n - n_val if train_samples is None else train_samples
    if n_val < 1 or n_train < 1 or n_val + n_train > n:
        raise ConfigError(
            f"{dataset.value} has {n} training images; cannot take {n_train} train + {n_val} validation "
            f"(each at least 1, together at most {n}): change train_samples or val_samples"
        )
    if isinstance(full, _Full):  # a folder's pixels live on disk, mapped: the cache checks the free space
        _check_bytes(n_train + n_val, full.x.shape[1], resolution or full.x.shape[-1],
                     "train_samples, val_samples")
    order = _balanced_order(full.y, full.num_classes, seed)
    val_idx, train_idx = order[:n_val], order[n_val : n_val + n_train]
    # One array, validation images first: the splits are views of it (of one cache file for a folder).
    x, (mean, std) = _take(full, order[: n_val + n_train], resolution, n_val, store)
    val_x, train_x = x[:n_val], x[n_val:]
    c, h, w = train_x.shape[1:]
    return DataSplits(
        name=dataset,
        train_x=train_x,
        train_y=full.y[train_idx],
        val_x=val_x,
        val_y=full.y[val_idx],
        train_index=train_idx,
        val_index=val_idx,
        num_classes=full.num_classes,
        in_channels=int(c),
        mean=mean,
        std=std,
        augment=full.augment,
        class_names=full.class_names,
        resize=_resize_kind(full),
        description=(
            f"{full.source}: {c}x{h}x{w}, {full.num_classes} classes, {n_train} train + {n_val} validation "
            f"images held out of its {n}-image training set (seed {seed})"
        ),
    )


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Decode one (optionally gzipped) idx file, the MNIST family's format, as a uint8 tensor."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:  # unreadable, or a gzip file cut short or corrupted
        raise DataError(f"cannot read {path}: {_first_line(e)}; re-download it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an idx file of unsigned bytes; re-download it")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    if len(raw) - offset != math.prod(shape):
        raise DataError(
            f"{path} is truncated: header says {shape}, file holds {len(raw) - offset} bytes; re-download it"
        )
    # bytearray: frombuffer warns on read-only bytes, and the tensor must own writable memory anyway.
    return torch.frombuffer(bytearray(raw[offset:]), dtype=torch.uint8).reshape(shape)


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
    dataset = Dataset(name)
    _check_root(root, "data_root")
    _check_root(test_root, "test_root")
    store = _Store.of(cache_dir, workers, decode)
    with _LOCK:
        full = _full_dataset(dataset, root, resolution)
        test = _test_dataset(dataset, root, test_root, resolution)
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
    if isinstance(full, _Full):
        _check_bytes(n_train + n_select + len(test.y), full.x.shape[1], resolution or full.x.shape[-1],
                     "train_samples")
    order = _balanced_order(full.y, full.num_classes, seed)
    # The first n_train as before the selection split existed, so earlier verifications train the same images.
    train_idx, select_idx = order[:n_train], order[n_train : n_train + n_select]
    x, (mean, std) = _take(full, torch.cat([select_idx, train_idx]), resolution, n_select, store)
    select_x, train_x = x[:n_select], x[n_select:]
    test_x, _ = _take(test, torch.arange(len(test.y)), resolution, 0, store)
    c, h, w = train_x.shape[1:]
    return DataSplits(
        name=dataset, train_x=train_x, train_y=full.y[train_idx], val_x=select_x, val_y=full.y[select_idx],
        train_index=train_idx, val_index=select_idx, num_classes=full.num_classes,
        in_channels=int(c), mean=mean, std=std, augment=full.augment, class_names=full.class_names,
        resize=_resize_kind(full), test_x=test_x, test_y=test.y,
        description=(f"{full.source}: {c}x{h}x{w}, {full.num_classes} classes, {n_train} train images of its "
                     f"{n}-image training set (seed {seed}); networks chosen on {n_select} more held out of "
                     f"it; the chosen ones scored on the {len(test.y)}-image test set ({test.source})"),
    )


def _resize_kind(data: _Full | _Folder) -> Resize:
    """How `data`'s images of any size become square: image folders are cropped, decoded sets stretched."""
    return Resize.SHORTER_SIDE_CENTER_CROP if isinstance(data, _Folder) else Resize.STRETCH


def _test_dataset(dataset: Dataset, root: str | None, test_root: str | None,
                  resolution: int | None) -> _Full | _Folder:
    """The dataset's test set: its own files (Fashion-MNIST, CIFAR), `test_root` (imagefolder), or generated."""
    if dataset is Dataset.FASHION_MNIST:
        images, _ = _find_fashion(root)
        files = _fashion_files(images.parent, _FASHION_TEST)
        if files is None:
            raise DataError(f"Fashion-MNIST's test files (t10k-*-ubyte.gz) are not next to {images}; put them "
                            "there (Debian's dataset-fashion-mnist has them)")
        return _read_fashion(*files)
    if dataset in (Dataset.CIFAR10, Dataset.CIFAR100):
        return _read_cifar(dataset, _resolved(root), train=False)
    if dataset is Dataset.IMAGEFOLDER:
        if test_root is None:
            raise ConfigError("an image folder has no test split of its own: give a folder of held-out images "
                              "with the same class sub-folders", field="test_root")
        return _scan_folder(str(Path(test_root).resolve()))
    return _synthetic(resolution or _SYNTHETIC_RESOLUTION, test=True)


def _full_dataset(dataset: Dataset, root: str | None, resolution: int | None) -> _Full | _Folder:
    """The whole training set: decoded (found, downloaded if need be, on first use) or, a folder, scanned."""
    if dataset is Dataset.FASHION_MNIST:
        return _read_fashion(*_find_fashion(root))
    if dataset in (Dataset.CIFAR10, Dataset.CIFAR100):
        return _read_cifar(dataset, _resolved(root))
    if dataset is Dataset.IMAGEFOLDER:
        if root is None:
            raise ConfigError(
                "the imagefolder dataset needs a folder with one sub-folder of images per class",
                field="data_root",
            )
        return _scan_folder(str(Path(root).resolve()))
    return _synthetic(resolution or _SYNTHETIC_RESOLUTION)


def _shape(data: _Full | _Folder) -> tuple[int, ...] | None:
    """The decoded images' C x H x W, or None for a folder (decoded to 3 x res x res when needed)."""
    return tuple(data.x.shape[1:]) if isinstance(data, _Full) else None


def _take(data: _Full | _Folder, idx: torch.Tensor, resolution: int | None, stats_from: int,
          store: _Store) -> tuple[torch.Tensor, tuple[tuple[float, ...], tuple[float, ...]]]:
    """The images at `idx` at `resolution`, and the channel statistics of those from `stats_from` on."""
    if isinstance(data, _Folder):
        return _cached_folder(data, idx, resolution or _IMAGEFOLDER_RESOLUTION, stats_from, store)
    native = tuple(data.x.shape[-2:]) == (resolution, resolution)
    if data.fingerprint is not None and resolution is not None and not native:
        return _cached_resize(data, idx, resolution, stats_from, store)
    x = _resize(data.x[idx], resolution)
    return x, _channel_stats(x[stats_from:])


def _cached_folder(folder: _Folder, idx: torch.Tensor, resolution: int, stats_from: int,
                   store: _Store) -> tuple[torch.Tensor, tuple[tuple[float, ...], tuple[float, ...]]]:
    """The folder's images at `idx`, from its cache entry (built first if missing), and their statistics."""
    positions = idx.to(torch.int64).numpy()
    key = {"source": "imagefolder", "root": folder.root, "files": folder.fingerprint}
    return _cached(key, positions, [folder.paths[i] for i in positions], resolution, stats_from, store,
                   store.decode, folder.root)


def _cached_resize(full: _Full, idx: torch.Tensor, resolution: int, stats_from: int,
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


def _resolved(root: str | None) -> str | None:
    """`root` as an absolute path, so the cache sees one key per folder."""
    return None if root is None else str(Path(root).expanduser().resolve())


def _cache_dir() -> Path:
    """Where resnas downloads datasets: $XDG_CACHE_HOME/resnas, else ~/.cache/resnas."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resnas"


def _candidate_roots(root: str | None, fixed: tuple[Path, ...]) -> list[Path]:
    """Folders to search, in order: `root`, $RESNAS_DATA, the `fixed` ones, the download cache."""
    env = os.environ.get("RESNAS_DATA")
    given = [Path(p).expanduser() for p in (root, env) if p]
    return [p.absolute() for p in (*given, *fixed, _cache_dir())]


def _download_root(root: str | None) -> Path:
    """Where a missing dataset is downloaded: `root`, else $RESNAS_DATA, else the cache."""
    chosen = root or os.environ.get("RESNAS_DATA")
    return Path(chosen).expanduser() if chosen else _cache_dir()


def _fashion_files(folder: Path, names: tuple[str, str] = _FASHION_TRAIN) -> tuple[Path, Path] | None:
    """The (training) image and label files of a Fashion-MNIST folder, or None if it has none."""
    for sub in _FASHION_SUBDIRS:
        base = folder / sub
        for suffix in (".gz", ""):
            images, labels = (base / (f + suffix) for f in names)
            if images.is_file() and labels.is_file():
                return images, labels
    return None


def _find_fashion(root: str | None) -> tuple[Path, Path]:
    """Fashion-MNIST's training image and label files, downloading them as a last resort."""
    candidates = _candidate_roots(root, _FASHION_ROOTS)
    for folder in candidates:
        files = _fashion_files(folder)
        if files is not None:
            return files[0].resolve(), files[1].resolve()
    target = _download_root(root)
    try:
        _download_fashion(target)
    except Exception as e:  # torchvision raises RuntimeError, URLError or OSError depending on the failure
        looked = ", ".join(str(p) for p in candidates)
        raise DataError(
            f"Fashion-MNIST not found (looked in {looked}; download to {target} failed: "
            f"{_first_line(e)}); fix: `apt-get install dataset-fashion-mnist`, or set data_root to a folder "
            f"holding train-images-idx3-ubyte.gz, or use the synthetic dataset for a smoke test"
        ) from None
    files = _fashion_files(target)
    if files is None:
        raise DataError(
            f"downloaded Fashion-MNIST to {target} but its files are not there; delete it and retry"
        )
    return files[0].resolve(), files[1].resolve()


def _download_fashion(target: Path) -> None:
    """Fetch Fashion-MNIST with torchvision into target/FashionMNIST/raw."""
    from torchvision.datasets import FashionMNIST

    with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
        FashionMNIST(str(target), train=True, download=True)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Give sockets a timeout while downloading: torchvision's urlopen has none and can hang forever."""
    saved = socket.getdefaulttimeout()
    if saved is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(saved)


@functools.lru_cache(maxsize=4)
def _read_fashion(images: Path, labels: Path) -> _Full:
    """Fashion-MNIST's 60 000 training images and labels, decoded."""
    x = read_idx(images).unsqueeze(1)
    y = read_idx(labels).long()
    if x.shape[1:] != (1, 28, 28) or len(x) != len(y):
        raise DataError(
            f"{images} and {labels} are not Fashion-MNIST's 28x28 images and their labels; re-download them"
        )
    return _Full(x=x, y=y, num_classes=10, augment=Augment.NONE, source=f"Fashion-MNIST from {images.parent}",
                 class_names=_FASHION_CLASSES)


@functools.lru_cache(maxsize=4)
def _read_cifar(dataset: Dataset, root: str | None, train: bool = True) -> _Full:
    """CIFAR-10/100's 50 000 training (or 10 000 test) images via torchvision, downloaded if not found."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if dataset is Dataset.CIFAR10 else CIFAR100
    candidates = _candidate_roots(root, _TORCHVISION_ROOTS)
    for folder in candidates:
        try:
            ds = cls(str(folder), train=train, download=False)
            break
        except RuntimeError:  # torchvision's "Dataset not found or corrupted"
            continue
    else:
        target = _download_root(root)
        try:
            with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
                ds = cls(str(target), train=train, download=True)
        except Exception as e:  # RuntimeError, URLError, OSError or a tarfile error, by failure
            looked = ", ".join(str(p) for p in candidates)
            raise DataError(
                f"{cls.__name__} not found (looked in {looked}; download to {target} failed: "
                f"{_first_line(e)}); fix: put {cls.base_folder}/ in a folder and set data_root to it, "
                "or use the fashion-mnist dataset"
            ) from None
        folder = target
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor(ds.targets, dtype=torch.long)
    split = "" if train else " (test)"
    paths = [Path(folder, cls.base_folder, name) for name, _ in (ds.train_list if train else ds.test_list)]
    return _Full(x=x, y=y, num_classes=len(ds.classes), augment=Augment.PAD_CROP_FLIP,
                 source=f"{cls.__name__}{split} from {folder}", class_names=tuple(ds.classes),
                 fingerprint=_fingerprint([(p, str(p.absolute())) for p in paths], "the dataset's folder"))


def _fingerprint(files: Sequence[tuple[Path, str]], where: str) -> str:
    """Digest of each (file, name)'s name, size and modification time: any change makes a new cache key;
    a file that cannot be read is a DataError that says to check `where`."""
    digest = hashlib.sha256()
    for path, name in files:
        try:
            st = path.stat()
        except OSError as e:  # removed or made unreadable since it was listed
            raise DataError(f"cannot read {path} ({e.strerror}); check {where}") from None
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _scan_folder(root: str) -> _Folder:
    """Every image under root/<class>/ listed in ImageFolder's order, with its label; nothing decoded."""
    from torchvision.datasets import ImageFolder

    try:
        ds = ImageFolder(root)  # lists and labels the files; an image is decoded only when indexed
    except (FileNotFoundError, NotADirectoryError) as e:
        raise DataError(
            f"cannot read image folder {root}: {_first_line(e)}; it needs one sub-folder per class"
        ) from None
    if len(ds.classes) < 2:
        raise DataError(
            f"image folder {root} has {len(ds.classes)} class sub-folder(s); a classifier needs 2+"
        )
    files = [(Path(path), f"{os.path.relpath(path, root)}\0{label}") for path, label in ds.samples]
    return _Folder(
        root=root, paths=tuple(path for path, _ in ds.samples), y=torch.tensor(ds.targets, dtype=torch.long),
        num_classes=len(ds.classes), fingerprint=_fingerprint(files, f"the image folder {root}"),
        source=f"image folder {root}", class_names=tuple(ds.classes),
    )


@functools.lru_cache(maxsize=4)
def _synthetic(resolution: int, test: bool = False) -> _Full:
    """Learnable noise: a smooth random colour pattern per class, shifted and buried in noise per image.

    The test set has the same class patterns and its own shifts and noise.
    """
    g = torch.Generator().manual_seed(1234)
    n, k = (_SYNTHETIC_TEST_SIZE if test else _SYNTHETIC_SIZE), _SYNTHETIC_CLASSES
    coarse = torch.randn(k, 3, 4, 4, generator=g)
    if test:
        g = torch.Generator().manual_seed(4321)
    prototypes = F.interpolate(coarse, size=(resolution, resolution), mode="bilinear", align_corners=False)
    # Each image is its class's pattern rolled by a few pixels, so a convolution beats a linear read-out.
    shifted = torch.stack(
        [prototypes.roll((dy, dx), dims=(2, 3)) for dy in range(-2, 3) for dx in range(-2, 3)], dim=1
    )
    y = torch.arange(n) % k
    x = shifted[y, torch.randint(0, shifted.shape[1], (n,), generator=g)]
    x = x + 1.5 * torch.randn(x.shape, generator=g)
    x = (128 + 40 * x).round().clamp(0, 255).to(torch.uint8)
    return _Full(
        x=x, y=y, num_classes=k, augment=Augment.NONE, source="synthetic patterns (exist only for fast tests)"
    )


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


def _first_line(e: BaseException) -> str:
    """An exception's first message line, so an error message quoting it stays one line."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
