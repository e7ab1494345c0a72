"""Dataset loading: the raw idx reader, seeded held-out splits, caching, and the missing-data error."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
import torch

from resnas import _datasets
from resnas._data import Augment, Dataset, load_data, read_idx
from resnas._errors import ConfigError, DataError
from tests._cifar import accept_fake_cifar, write_cifar10
from tests._marks import FASHION_MNIST, needs_fashion


@pytest.fixture
def no_fashion_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder, with every other place Fashion-MNIST could come from switched off."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("RESNAS_DATA", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(_datasets, "_FASHION_ROOTS", ())

    def offline(target: Path) -> None:
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(_datasets, "_download_fashion", offline)
    return empty


@needs_fashion
def test_raw_reader_gives_fashion_mnist_shapes_and_labels() -> None:
    train_x = read_idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")
    train_y = read_idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz")
    test_x = read_idx(FASHION_MNIST / "t10k-images-idx3-ubyte.gz")
    test_y = read_idx(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == torch.uint8
    assert test_x.shape == (10000, 28, 28)
    assert train_y.shape == (60000,) and test_y.shape == (10000,)
    assert torch.bincount(train_y.long()).tolist() == [6000] * 10
    assert int(test_y.min()) == 0 and int(test_y.max()) == 9


def test_raw_reader_rejects_a_non_idx_file(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"not an idx file")
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(bogus)


@needs_fashion
def test_fashion_split_sizes_labels_and_statistics() -> None:
    d = load_data("fashion-mnist", root=None, train_samples=1000, val_samples=300, seed=0, resolution=None)
    assert d.name is Dataset.FASHION_MNIST
    assert d.train_x.shape == (1000, 1, 28, 28) and d.train_x.dtype == torch.uint8
    assert d.val_x.shape == (300, 1, 28, 28)
    assert d.train_y.shape == (1000,) and d.val_y.shape == (300,)
    assert (d.num_classes, d.in_channels, d.resolution) == (10, 1, 28)
    # Class-balanced: every class gets its share of both splits.
    assert torch.bincount(d.val_y, minlength=10).tolist() == [30] * 10
    assert torch.bincount(d.train_y, minlength=10).tolist() == [100] * 10
    # Fashion-MNIST's well-known statistics, measured here on 1000 images.
    assert d.mean[0] == pytest.approx(0.286, abs=0.02) and d.std[0] == pytest.approx(0.353, abs=0.02)
    assert d.augment is Augment.NONE
    assert "Fashion-MNIST" in d.description and "1000 train + 300 validation" in d.description


@needs_fashion
def test_fashion_validation_is_held_out_of_training_set() -> None:
    d = load_data("fashion-mnist", train_samples=2000, val_samples=500, seed=3)
    train, val = set(d.train_index.tolist()), set(d.val_index.tolist())
    assert len(train) == 2000 and len(val) == 500
    assert not train & val
    assert max(train | val) < 60000
    # The indices really are where the images came from.
    full = read_idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")
    assert torch.equal(d.val_x[:, 0], full[d.val_index])


@needs_fashion
def test_split_is_fixed_by_seed() -> None:
    a = load_data("fashion-mnist", train_samples=500, val_samples=100, seed=7)
    b = load_data("fashion-mnist", train_samples=500, val_samples=100, seed=7)
    c = load_data("fashion-mnist", train_samples=500, val_samples=100, seed=8)
    assert torch.equal(a.val_index, b.val_index) and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.val_index, c.val_index)
    assert set(a.val_index.tolist()) != set(c.val_index.tolist())


@needs_fashion
def test_defaults_hold_out_a_tenth_and_train_on_the_rest() -> None:
    d = load_data(Dataset.FASHION_MNIST)
    assert (len(d.train_y), len(d.val_y)) == (54000, 6000)


@needs_fashion
def test_decoded_dataset_is_cached_per_process() -> None:
    load_data("fashion-mnist", train_samples=10, val_samples=10, seed=0)
    hits = _datasets._read_fashion.cache_info().hits
    load_data("fashion-mnist", train_samples=20, val_samples=10, seed=1)
    assert _datasets._read_fashion.cache_info().hits == hits + 1


@needs_fashion
def test_resolution_resizes_and_keeps_grayscale() -> None:
    d = load_data("fashion-mnist", train_samples=50, val_samples=20, seed=0, resolution=32)
    assert d.train_x.shape == (50, 1, 32, 32) and d.val_x.shape == (20, 1, 32, 32)
    assert d.train_x.dtype == torch.uint8 and "1x32x32" in d.description


@needs_fashion
def test_torchvision_layout_under_data_root_is_found(
    tmp_path: Path, no_fashion_anywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (raw / name).symlink_to(FASHION_MNIST / name)
    d = load_data("fashion-mnist", root=str(tmp_path / "tv"), train_samples=10, val_samples=10, seed=0)
    assert d.train_x.shape == (10, 1, 28, 28)


def test_missing_fashion_mnist_names_the_fix(no_fashion_anywhere: Path) -> None:
    with pytest.raises(DataError) as info:
        load_data("fashion-mnist", root=str(no_fashion_anywhere), train_samples=10, val_samples=10, seed=0)
    message = str(info.value)
    assert "\n" not in message
    assert str(no_fashion_anywhere) in message and "network unreachable" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "set data_root to a folder" in message and "synthetic dataset" in message
    assert "--" not in message  # a library message names settings, not the CLI's flags


def test_unknown_dataset_bad_resolution_and_oversized_splits_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'") as info:
        load_data("mnist")
    assert info.value.field == "dataset"
    with pytest.raises(ConfigError, match="resolution must be at least 4 pixels, got 2"):
        load_data("synthetic", resolution=2)
    with pytest.raises(ConfigError, match="cannot take .*change train_samples or val_samples"):
        load_data("synthetic", train_samples=6000, val_samples=1)
    with pytest.raises(ConfigError, match="cannot take"):
        load_data("synthetic", train_samples=10, val_samples=0)


def test_corrupt_idx_files_are_data_errors(tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    cut.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))  # header says 9 bytes, 2 follow
    with pytest.raises(DataError, match="is truncated.*re-download it"):
        read_idx(cut)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="cannot read .*re-download it"):
        read_idx(broken)


def test_imagefolder_needs_a_root_and_reads_class_folders(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from PIL import Image

    with pytest.raises(ConfigError, match="one sub-folder of images per class") as info:
        load_data("imagefolder")
    assert info.value.field == "data_root"
    with pytest.raises(DataError, match="missing is not a folder") as info:
        load_data("imagefolder", root=str(tmp_path / "missing"))
    assert info.value.field == "data_root"
    for label, colour in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
        (tmp_path / label).mkdir()
        for i in range(6):
            Image.new("RGB", (40 + i, 30), colour).save(tmp_path / label / f"{i}.png")
    d = load_data("imagefolder", root=str(tmp_path), train_samples=8, val_samples=4, seed=0, resolution=16,
                  cache_dir=tmp_path_factory.mktemp("cache"))
    assert d.train_x.shape == (8, 3, 16, 16) and d.num_classes == 2
    assert d.augment is Augment.RESIZED_CROP_FLIP
    assert torch.bincount(d.val_y).tolist() == [2, 2]
    # The red class really is red after decoding and resizing.
    red = d.train_x[d.train_y == 0]
    assert int(red[:, 0].min()) > 150 and int(red[:, 2].max()) < 60


def test_synthetic_is_small_colour_and_says_it_is_for_tests() -> None:
    d = load_data("synthetic", train_samples=200, val_samples=100, seed=0, resolution=16)
    assert d.train_x.shape == (200, 3, 16, 16) and d.val_x.shape == (100, 3, 16, 16)
    assert (d.num_classes, d.in_channels) == (10, 3)
    assert "fast tests" in d.description
    assert len(d.mean) == len(d.std) == 3


def _image_folder(root: Path) -> Path:
    from PIL import Image

    for label, colour in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
        (root / label).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (20 + i, 24), colour).save(root / label / f"{i}.png")
    return root


@pytest.mark.parametrize(("dataset", "expected"), [
    pytest.param("fashion-mnist", Augment.NONE, marks=needs_fashion),  # glyphs: no crops, no mirror images
    ("synthetic", Augment.NONE),
    ("cifar10", Augment.PAD_CROP_FLIP),  # CIFAR's classic recipe, at its small fixed resolution
    ("imagefolder", Augment.RESIZED_CROP_FLIP),  # photos at any resolution: ImageNet's recipe
])
def test_each_dataset_gets_the_augmentation_that_suits_it(
    dataset: str, expected: Augment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = None
    if dataset == "cifar10":
        accept_fake_cifar(monkeypatch)
        root = str(write_cifar10(tmp_path / "cifar"))
    elif dataset == "imagefolder":
        root = str(_image_folder(tmp_path / "images"))
    d = load_data(dataset, root=root, train_samples=6, val_samples=2, resolution=16,
                  cache_dir=tmp_path / "cache")
    assert d.augment is expected


def test_the_augmentation_is_an_enum_not_a_flag() -> None:
    d = load_data("synthetic", train_samples=20, val_samples=10, seed=0, resolution=8)
    assert dataclasses.replace(d, augment="pad_crop_flip").augment is Augment.PAD_CROP_FLIP  # by value
    with pytest.raises(ValueError, match="True is not a valid Augment"):
        dataclasses.replace(d, augment=True)  # the old boolean field: which augmentation would it mean?
    assert pickle.loads(pickle.dumps(d)).augment is Augment.NONE
