"""The datasets resnas knows, one registry entry each, and their readers: where each is found, how read.

`DATASETS` maps a `Dataset` to a `Spec`: how to read its training set and its test set, the names of its
classes where the dataset fixes them, the augmentation that suits its images, how images of any size become
square, and the side length used when none is asked. A reader returns a training or test set either
decoded into memory (`Decoded`: Fashion-MNIST from idx files, CIFAR from its pickles via torchvision,
synthetic patterns generated) or scanned but not decoded (`Folder`: an image folder, decoded later, split by
split, into the on-disk cache). A new dataset is a `Dataset` member, its readers and one entry.
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from resnas._contract import Resize
from resnas._errors import ConfigError, DataError

__all__ = ["DATASETS", "Augment", "Dataset", "Decoded", "Folder", "Images", "Spec", "read_idx"]


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
class Decoded:
    """One decoded training or test set, shared by every load in the process."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    source: str
    # Digest of the files the images were read from (paths, sizes, mtimes), or None if not from files:
    # given, a resize to another resolution goes through the on-disk cache.
    fingerprint: str | None = None
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Folder:
    """An image folder scanned but not decoded: its files in ImageFolder's order, labels and fingerprint."""

    root: str
    paths: tuple[str, ...]
    y: torch.Tensor
    num_classes: int
    # Digest of every file's relative path, size and modification time: any change makes a new cache key.
    fingerprint: str
    source: str
    class_names: tuple[str, ...] = ()


Images = Decoded | Folder
# (root, resolution) -> the training set; (root, test_root, resolution) -> the test set.
TrainReader = Callable[[str | None, int | None], Images]
TestReader = Callable[[str | None, str | None, int | None], Images]


@dataclass(frozen=True)
class Spec:
    """One dataset: its readers, fixed class names, augmentation, resize kind and default side length."""

    train: TrainReader
    test: TestReader
    augment: Augment
    resize: Resize = Resize.STRETCH
    # Output i's name where the dataset fixes them; () where its files name them (CIFAR's meta file, a
    # folder's sub-folders) or nothing does (synthetic: numbered).
    classes: tuple[str, ...] = ()
    # Side length when none is asked; None: the images' own.
    resolution: int | None = None

    def side(self, asked: int | None) -> int | None:
        """The side length to load at: `asked`, else the default (None: the images' own)."""
        return asked or self.resolution


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
_DOWNLOAD_TIMEOUT_S = 30.0
_SYNTHETIC_SIZE = 6000
_SYNTHETIC_TEST_SIZE = 2000
_SYNTHETIC_CLASSES = 10


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


# -- Fashion-MNIST: idx files, found in the usual places or downloaded -------------------------------------


def _fashion_train(root: str | None, resolution: int | None) -> Images:
    """Fashion-MNIST's training set (found, downloaded if need be)."""
    return _read_fashion(*_find_fashion(root))


def _fashion_test(root: str | None, test_root: str | None, resolution: int | None) -> Images:
    """Fashion-MNIST's test set: the t10k files next to the training files."""
    images, _ = _find_fashion(root)
    files = _fashion_files(images.parent, _FASHION_TEST)
    if files is None:
        raise DataError(f"Fashion-MNIST's test files (t10k-*-ubyte.gz) are not next to {images}; put them "
                        "there (Debian's dataset-fashion-mnist has them)")
    return _read_fashion(*files)


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
def _read_fashion(images: Path, labels: Path) -> Decoded:
    """Fashion-MNIST's 60 000 training (or 10 000 test) images and labels, decoded."""
    x = read_idx(images).unsqueeze(1)
    y = read_idx(labels).long()
    if x.shape[1:] != (1, 28, 28) or len(x) != len(y):
        raise DataError(
            f"{images} and {labels} are not Fashion-MNIST's 28x28 images and their labels; re-download them"
        )
    return Decoded(x=x, y=y, num_classes=10, source=f"Fashion-MNIST from {images.parent}")


# -- CIFAR-10/100: torchvision's reader of the python pickles -----------------------------------------------


def _cifar_train(dataset: Dataset, root: str | None, resolution: int | None) -> Images:
    """CIFAR's training set (found, downloaded if need be)."""
    return _read_cifar(dataset, _resolved(root))


def _cifar_test(dataset: Dataset, root: str | None, test_root: str | None, resolution: int | None) -> Images:
    """CIFAR's test set, from the same folder as its training set."""
    return _read_cifar(dataset, _resolved(root), train=False)


def _resolved(root: str | None) -> str | None:
    """`root` as an absolute path, so the cache sees one key per folder."""
    return None if root is None else str(Path(root).expanduser().resolve())


@functools.lru_cache(maxsize=4)
def _read_cifar(dataset: Dataset, root: str | None, train: bool = True) -> Decoded:
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
    return Decoded(x=x, y=y, num_classes=len(ds.classes), source=f"{cls.__name__}{split} from {folder}",
                   class_names=tuple(ds.classes),
                   fingerprint=_fingerprint([(p, str(p.absolute())) for p in paths], "the dataset's folder"))


# -- image folders: root/<class>/<image>, scanned here, decoded into the cache by `resnas._cache` ----------


def _folder_train(root: str | None, resolution: int | None) -> Images:
    """The image folder `root` (required), scanned."""
    if root is None:
        raise ConfigError("the imagefolder dataset needs a folder with one sub-folder of images per class",
                          field="data_root")
    return _scan_folder(str(Path(root).resolve()))


def _folder_test(root: str | None, test_root: str | None, resolution: int | None) -> Images:
    """The image folder `test_root` (required: an image folder has no test split of its own), scanned."""
    if test_root is None:
        raise ConfigError("an image folder has no test split of its own: give a folder of held-out images "
                          "with the same class sub-folders", field="test_root")
    return _scan_folder(str(Path(test_root).resolve()))


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


def _scan_folder(root: str) -> Folder:
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
    return Folder(
        root=root, paths=tuple(path for path, _ in ds.samples), y=torch.tensor(ds.targets, dtype=torch.long),
        num_classes=len(ds.classes), fingerprint=_fingerprint(files, f"the image folder {root}"),
        source=f"image folder {root}", class_names=tuple(ds.classes),
    )


# -- synthetic: generated at the asked resolution, for fast tests -------------------------------------------


def _synthetic_train(root: str | None, resolution: int | None) -> Images:
    """The synthetic training set at `resolution`."""
    assert resolution is not None  # `Spec.side` gave the entry's default
    return _synthetic(resolution)


def _synthetic_test(root: str | None, test_root: str | None, resolution: int | None) -> Images:
    """The synthetic test set at `resolution`."""
    assert resolution is not None  # `Spec.side` gave the entry's default
    return _synthetic(resolution, test=True)


@functools.lru_cache(maxsize=4)
def _synthetic(resolution: int, test: bool = False) -> Decoded:
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
    return Decoded(x=x, y=y, num_classes=k, source="synthetic patterns (exist only for fast tests)")


def _first_line(e: BaseException) -> str:
    """An exception's first message line, so an error message quoting it stays one line."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


DATASETS: dict[Dataset, Spec] = {
    Dataset.FASHION_MNIST: Spec(_fashion_train, _fashion_test, Augment.NONE, classes=_FASHION_CLASSES),
    Dataset.CIFAR10: Spec(functools.partial(_cifar_train, Dataset.CIFAR10),
                          functools.partial(_cifar_test, Dataset.CIFAR10), Augment.PAD_CROP_FLIP),
    Dataset.CIFAR100: Spec(functools.partial(_cifar_train, Dataset.CIFAR100),
                           functools.partial(_cifar_test, Dataset.CIFAR100), Augment.PAD_CROP_FLIP),
    Dataset.IMAGEFOLDER: Spec(_folder_train, _folder_test, Augment.RESIZED_CROP_FLIP,
                              resize=Resize.SHORTER_SIDE_CENTER_CROP, resolution=64),
    Dataset.SYNTHETIC: Spec(_synthetic_train, _synthetic_test, Augment.NONE, resolution=32),
}
