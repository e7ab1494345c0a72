"""The on-disk image cache of an image folder and of CIFAR at another resolution, and batches streamed from
host memory while training.

Reference for pixels: torchvision's ImageFolder with Resize + CenterCrop + PILToTensor decoding the same
JPEG files (what resnas did in memory before the cache); for CIFAR, torchvision's CIFAR10 reading a tiny
folder in the real format, resized in memory by `interpolate`. Decodes are counted by a decoder passed as
the `decode` test hook, wrapping the real one; CIFAR's resizes by wrapping resnas's.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnas import _cache, _data
from resnas._data import Augment, DataSplits, load_data, load_verification
from resnas._errors import DataError, StorageError
from resnas._train import Fault, NonFiniteLossError, TrainConfig, train_candidate
from tests._cifar import accept_fake_cifar, write_cifar10

RESOLUTION = 16
CLASSES = ("cat", "dog", "fox")


def _write_folder(root: Path, per_class: int = 20) -> Path:
    """An image folder of real JPEG files: per class, noisy images of its own colour and varied sizes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, label in enumerate(CLASSES):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            h, w = 24 + i % 5, 20 + (3 * i) % 17  # portrait and landscape: resize + crop both ways
            base = np.zeros((h, w, 3)) + [60 + 80 * c, 200 - 70 * c, 40 + 30 * i % 200]
            pixels = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i:03d}.jpg", quality=90)
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """60 JPEGs in 3 class folders."""
    return _write_folder(tmp_path / "images")


def _reference(root: Path, index: torch.Tensor) -> torch.Tensor:
    """The images at `index` decoded by torchvision's ImageFolder, as resnas decoded them in memory."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    tf = transforms.Compose([transforms.Resize(RESOLUTION), transforms.CenterCrop(RESOLUTION),
                             transforms.PILToTensor()])
    ds = ImageFolder(str(root), transform=tf)
    return torch.stack([ds[int(i)][0] for i in index])


def _counting(log: list[str]) -> Callable[[str, int], np.ndarray]:
    """The real decoder, recording each path it decodes in `log` (one process)."""
    def decode(path: str, resolution: int) -> np.ndarray:
        log.append(path)
        return _cache.decode_image(path, resolution)
    return decode


def _logged_decode(log: str, path: str, resolution: int) -> np.ndarray:
    """The real decoder, appending each path to the file `log` (any process: picklable as a partial)."""
    with open(log, "a") as f:
        f.write(path + "\n")
    return _cache.decode_image(path, resolution)


def _load(folder: Path, cache: Path, decode: Callable[[str, int], np.ndarray] | None = None, *,
          workers: int | None = 1, seed: int = 0) -> DataSplits:
    return load_data("imagefolder", root=str(folder), train_samples=6, val_samples=4, seed=seed,
                     resolution=RESOLUTION, cache_dir=cache, workers=workers, decode=decode)


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.u8"))


def test_only_the_split_is_decoded_once_and_equals_torchvision_decoding(folder: Path, tmp_path: Path) -> None:
    cache, decoded = tmp_path / "cache", []
    first = _load(folder, cache, _counting(decoded))
    # 10 of the 60 images, each once, and exactly those of the split.
    assert len(decoded) == 10 == len(set(decoded))
    from torchvision.datasets import ImageFolder

    files = [p for p, _ in ImageFolder(str(folder)).samples]
    assert set(decoded) == {files[i] for i in [*first.train_index.tolist(), *first.val_index.tolist()]}
    assert torch.equal(first.train_x, _reference(folder, first.train_index))
    assert torch.equal(first.val_x, _reference(folder, first.val_index))
    targets = torch.tensor(ImageFolder(str(folder)).targets)
    assert torch.equal(first.train_y, targets[first.train_index]) and torch.equal(first.val_y, targets[first.val_index])
    # Statistics of the training images, as numpy measures them from the reference pixels.
    ref = _reference(folder, first.train_index).numpy() / 255
    assert first.mean == pytest.approx(ref.mean(axis=(0, 2, 3)), abs=1e-6)
    assert first.std == pytest.approx(ref.std(axis=(0, 2, 3)), abs=1e-6)

    (entry,) = _entries(cache)
    before = entry.stat()
    second = _load(folder, cache, _counting(decoded))
    assert len(decoded) == 10  # nothing decoded again
    assert torch.equal(second.train_x, first.train_x) and torch.equal(second.val_x, first.val_x)
    assert (second.mean, second.std) == (first.mean, first.std)
    assert _entries(cache) == [entry] and (entry.stat().st_ino, entry.stat().st_mtime_ns) == (
        before.st_ino, before.st_mtime_ns)
    # Another split of the same folder decodes only its own images, into its own entry.
    _load(folder, cache, _counting(decoded), seed=1)
    assert len(decoded) == 20 and len(_entries(cache)) == 2


def test_a_changed_folder_or_resolution_is_a_new_entry(folder: Path, tmp_path: Path) -> None:
    cache, decoded = tmp_path / "cache", []
    _load(folder, cache, _counting(decoded))
    first = _load(folder, cache, _counting(decoded))
    # Rewritten in place with other pixels: the fingerprint (size, mtime) changes, the stale entry is not used.
    from PIL import Image

    target = Path(sorted(set(decoded))[0])
    Image.new("RGB", (30, 30), (255, 255, 255)).save(target)
    os.utime(target, ns=(1, 1))
    changed = _load(folder, cache, _counting(decoded))
    assert len(decoded) == 20 and len(_entries(cache)) == 2
    assert not torch.equal(torch.cat([changed.val_x, changed.train_x]), torch.cat([first.val_x, first.train_x]))
    assert torch.equal(changed.train_x, _reference(folder, changed.train_index))


def test_parallel_workers_build_the_same_cache(folder: Path, tmp_path: Path) -> None:
    log = tmp_path / "decoded.txt"
    decode = functools.partial(_logged_decode, str(log))
    d = load_data("imagefolder", root=str(folder), train_samples=50, val_samples=10, seed=0,
                  resolution=RESOLUTION, cache_dir=tmp_path / "cache", workers=2, decode=decode)
    assert len(log.read_text().splitlines()) == 60
    assert torch.equal(d.train_x, _reference(folder, d.train_index))
    assert torch.equal(d.val_x, _reference(folder, d.val_index))


@pytest.mark.parametrize("damage", ["truncate", "rewrite", "bad record", "no record"])
def test_a_damaged_cache_is_rebuilt_never_used(folder: Path, tmp_path: Path, damage: str) -> None:
    cache, decoded = tmp_path / "cache", []
    _load(folder, cache, _counting(decoded))
    (entry,) = _entries(cache)
    record = entry.with_suffix(".json")
    if damage == "truncate":  # a copy cut short, a full disk
        with open(entry, "r+b") as f:
            f.truncate(entry.stat().st_size - 100)
    elif damage == "rewrite":  # the same size, other bytes
        entry.write_bytes(bytes(entry.stat().st_size))
    elif damage == "bad record":  # a record cut short
        record.write_text(record.read_text()[:20])
    else:  # a build killed after writing its pixels, before its record
        record.unlink()
    d = _load(folder, cache, _counting(decoded))
    assert len(decoded) == 20  # rebuilt
    assert torch.equal(d.train_x, _reference(folder, d.train_index))
    assert torch.equal(d.val_x, _reference(folder, d.val_index))
    assert json.loads(record.read_text())["shape"] == [10, 3, RESOLUTION, RESOLUTION]


def test_a_killed_builds_leftovers_are_removed_and_a_bad_image_leaves_no_entry(
    folder: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    _load(folder, cache)
    (entry,) = _entries(cache)
    entry.with_suffix(".json").unlink()
    leftover = entry.with_name(f"{entry.name}.tmp-99999-dead")
    leftover.write_bytes(b"half")
    _load(folder, cache)
    assert not leftover.exists() and _entries(cache) == [entry]

    # A file that is no image, in the split: one-line DataError naming it, and nothing cached.
    broken = folder / "cat" / "000.jpg"
    broken.write_text("not a JPEG at all")
    fresh = tmp_path / "fresh"
    with pytest.raises(DataError) as info:
        load_data("imagefolder", root=str(folder), train_samples=50, val_samples=10, resolution=RESOLUTION,
                  cache_dir=fresh, workers=1)
    message = str(info.value)
    assert f"cannot decode {broken} as an image" in message and "\n" not in message
    assert [p.suffix for p in fresh.iterdir()] == [".lock"]


def _gated_decode(log: str, gate: str, path: str, resolution: int) -> np.ndarray:
    """The real decoder, logging each path to the file `log`, held back until the file `gate` exists."""
    with open(log, "a") as f:
        f.write(path + "\n")
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return _cache.decode_image(path, resolution)


def _build_in_child(folder: str, cache: str, log: str, gate: str, out: str) -> None:
    """Load the split, a process of its own, and save what it got to `out`."""
    import torchvision.datasets  # noqa: F401 - imported first (seconds), so "started" means about to load
    import torchvision.transforms  # noqa: F401

    Path(out + ".started").touch()
    d = _load(Path(folder), Path(cache), functools.partial(_gated_decode, log, gate))
    torch.save({"train_x": d.train_x.clone(), "val_x": d.val_x.clone()}, out)


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, "a child process did not get there in 60 s"
        time.sleep(0.02)


def _child(tmp_path: Path, folder: Path, name: str) -> multiprocessing.process.BaseProcess:
    args = (str(folder), str(tmp_path / "cache"), str(tmp_path / "log"), str(tmp_path / "gate"), str(tmp_path / name))
    child = multiprocessing.get_context("spawn").Process(target=_build_in_child, args=args)
    child.start()
    return child


def _decoded(tmp_path: Path) -> int:
    log = tmp_path / "log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_concurrent_builders_decode_once_and_agree(folder: Path, tmp_path: Path) -> None:
    first = _child(tmp_path, folder, "a")
    _wait_for(lambda: _decoded(tmp_path) >= 1)  # mid-build, its images held back by the gate
    second = _child(tmp_path, folder, "b")
    _wait_for(lambda: (tmp_path / "b.started").exists())
    time.sleep(1.0)  # the second reaches the cache (in milliseconds) while the first still builds
    (tmp_path / "gate").touch()
    for child in (first, second):
        child.join(timeout=120)
        assert child.exitcode == 0
    # The lock let one build; the other waited and mapped the finished entry.
    assert _decoded(tmp_path) == 10 and len(_entries(tmp_path / "cache")) == 1
    here = _load(folder, tmp_path / "cache", _counting(decoded := []))
    assert not decoded
    for name in ("a", "b"):
        got = torch.load(tmp_path / name)
        assert torch.equal(got["train_x"], here.train_x) and torch.equal(got["val_x"], here.val_x)
    assert torch.equal(here.train_x, _reference(folder, here.train_index))


def test_a_build_killed_midway_leaves_no_entry_and_is_redone(folder: Path, tmp_path: Path) -> None:
    doomed = _child(tmp_path, folder, "a")
    _wait_for(lambda: _decoded(tmp_path) >= 1)  # mid-build: the temporary file exists, the gate is shut
    doomed.kill()
    doomed.join(timeout=60)
    cache = tmp_path / "cache"
    assert not _entries(cache) and [p for p in cache.iterdir() if ".tmp-" in p.name]  # half-written, not an entry
    d = _load(folder, cache, _counting(decoded := []))
    assert len(decoded) == 10  # the killed build's lock was released; its leftovers are swept
    assert not [p for p in cache.iterdir() if ".tmp-" in p.name] and len(_entries(cache)) == 1
    assert torch.equal(d.train_x, _reference(folder, d.train_index))


def test_the_lock_excludes_other_holders_until_its_block_ends_and_says_why_it_cannot_be_taken(
    tmp_path: Path,
) -> None:
    import fcntl

    from resnas._lock import exclusive

    def free(path: Path) -> bool:
        """Whether another open file (as another process would hold) can take the lock at once."""
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    lock = tmp_path / "x.lock"
    with exclusive(lock):
        assert lock.is_file() and not free(lock)
    assert free(lock)
    with pytest.raises(RuntimeError), exclusive(lock):
        raise RuntimeError("the block failed")
    assert free(lock)  # released on the way out of a failing block too
    # Its folder is not created: the error is the OSError itself (a study's lock), or the one `error` makes.
    with pytest.raises(FileNotFoundError), exclusive(tmp_path / "missing" / "x.lock"):
        pass
    named = exclusive(tmp_path / "missing" / "x.lock", lambda e: StorageError(f"named: {e.strerror}"))
    with pytest.raises(StorageError, match="named: No such file"), named:
        pass


def test_a_resumed_search_maps_the_cache_without_decoding(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from resnas import cli
    from tests.test_hostile_inputs import QUICK_SEARCH

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the documented default place, moved
    cache = tmp_path / "xdg" / "resnas" / "data"
    argv = [*QUICK_SEARCH, "--dataset", "imagefolder", "--data-root", str(folder), "--train-resolution", "32",
            "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 0, capsys.readouterr().err
    (entry,) = _entries(cache)
    before = entry.stat()
    resumed = [*argv[: argv.index("--trials") + 1], "2", *argv[argv.index("--trials") + 2 :]]
    assert cli.main(resumed) == 0, capsys.readouterr().err
    assert _entries(cache) == [entry]
    after = entry.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3))


@pytest.mark.parametrize("accumulation", [1, 2])
def test_streamed_batches_train_exactly_as_the_data_on_the_device(
    folder: Path, tmp_path: Path, accumulation: int
) -> None:
    d = load_data("imagefolder", root=str(folder), train_samples=48, val_samples=12, seed=0,
                  resolution=RESOLUTION, cache_dir=tmp_path / "cache", workers=1)
    assert d.augment is Augment.RESIZED_CROP_FLIP  # natural images: the random-resized crop runs too
    cfg = TrainConfig(epochs=2, batch_size=16, seed=3, accumulation=accumulation)
    on_device, streamed = _small_cnn(), _small_cnn()
    a = train_candidate(on_device, d, cfg, device="cpu")
    # Declared larger than the device's budget: batches are gathered from the memory-mapped cache.
    b = train_candidate(streamed, d, dataclasses.replace(cfg, device_budget_bytes=1), device="cpu")
    assert [(r.train_loss, r.val_accuracy) for r in a.history] == [(r.train_loss, r.val_accuracy) for r in b.history]
    for p, q in zip(on_device.state_dict().values(), streamed.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(next(_small_cnn().parameters()), next(on_device.parameters()))  # it did train


def test_streaming_stops_its_thread_when_training_stops_mid_epoch(folder: Path, tmp_path: Path) -> None:
    import threading

    d = load_data("imagefolder", root=str(folder), train_samples=48, val_samples=12, seed=0,
                  resolution=RESOLUTION, cache_dir=tmp_path / "cache", workers=1)
    cfg = TrainConfig(epochs=3, batch_size=8, device_budget_bytes=0)
    # The first step's loss is NaN: training ends at step 1 of 6, with batches still being gathered.
    with pytest.raises(NonFiniteLossError):
        train_candidate(_small_cnn(), d, cfg, device="cpu", fault=Fault.NAN)
    assert not [t for t in threading.enumerate() if t.name == "resnas-prefetch"]


@pytest.fixture
def cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A CIFAR-10 folder of 100 training and 20 test images that torchvision reads offline."""
    accept_fake_cifar(monkeypatch)
    return write_cifar10(tmp_path / "cifar")


def _cifar_reference(root: Path, index: torch.Tensor, resolution: int, train: bool = True) -> torch.Tensor:
    """The images at `index` as torchvision reads them, resized in memory (bilinear, antialiased, rounded)."""
    from torchvision.datasets import CIFAR10

    x = torch.from_numpy(CIFAR10(str(root), train=train).data[index.numpy()]).permute(0, 3, 1, 2).float()
    resized = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True)
    return resized.round().clamp(0, 255).to(torch.uint8)


def _mapped_from(tensor: torch.Tensor, path: Path) -> bool:
    """Whether `tensor`'s memory lies in a mapping of the file `path` (Linux's /proc/self/maps)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            start, end = (int(a, 16) for a in fields[0].split("-"))
            if start <= address < end:
                return True
    return False


def test_cifar_at_another_resolution_is_resized_once_into_the_cache(
    cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resized: list[int] = []
    real = _data._resize_one

    def counting(image: np.ndarray, resolution: int) -> np.ndarray:
        resized.append(resolution)
        return real(image, resolution)

    monkeypatch.setattr(_data, "_resize_one", counting)
    cache = tmp_path / "cache"

    def load(resolution: int | None) -> DataSplits:
        return load_data("cifar10", root=str(cifar), train_samples=60, val_samples=20, seed=0,
                         resolution=resolution, cache_dir=cache, workers=1)

    first = load(48)
    assert first.augment is Augment.PAD_CROP_FLIP and len(resized) == 80  # the split's images, each once
    assert torch.equal(first.train_x, _cifar_reference(cifar, first.train_index, 48))
    assert torch.equal(first.val_x, _cifar_reference(cifar, first.val_index, 48))
    ref = _cifar_reference(cifar, first.train_index, 48).numpy() / 255
    assert first.mean == pytest.approx(ref.mean(axis=(0, 2, 3)), abs=1e-6)
    assert first.std == pytest.approx(ref.std(axis=(0, 2, 3)), abs=1e-6)

    (entry,) = _entries(cache)
    before = entry.stat()
    second = load(48)
    assert len(resized) == 80  # nothing resized again: the entry's file is mapped
    assert _mapped_from(second.train_x, entry) and _mapped_from(second.val_x, entry)
    assert torch.equal(second.train_x, first.train_x) and (second.mean, second.std) == (first.mean, first.std)
    after = entry.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    load(40)  # another resolution: an entry of its own
    assert len(resized) == 160 and len(_entries(cache)) == 2
    native = load(32)  # the native resolution stays in memory, uncached, as before
    assert len(resized) == 160 and len(_entries(cache)) == 2
    assert torch.equal(native.train_x, _cifar_reference(cifar, native.train_index, 32))

    # `resnas verify`'s splits: the training images with the selection split (the other 70 of the 100
    # training images), and the test set, each an entry of its own.
    verify = load_verification("cifar10", root=str(cifar), train_samples=30, resolution=48, cache_dir=cache,
                               workers=1)
    assert len(_entries(cache)) == 4 and len(resized) == 160 + 30 + 70 + 20
    assert verify.test_x is not None and len(verify.val_y) == 70
    assert torch.equal(verify.test_x, _cifar_reference(cifar, torch.arange(20), 48, train=False))
    assert torch.equal(verify.val_x, _cifar_reference(cifar, verify.val_index, 48))
    assert torch.equal(verify.train_x, _cifar_reference(cifar, verify.train_index, 48))


def test_cifar_resized_by_parallel_workers_equals_the_in_memory_resize(cifar: Path, tmp_path: Path) -> None:
    d = load_data("cifar10", root=str(cifar), train_samples=70, val_samples=30, seed=1, resolution=56,
                  cache_dir=tmp_path / "cache", workers=2)
    assert torch.equal(d.train_x, _cifar_reference(cifar, d.train_index, 56))
    assert torch.equal(d.val_x, _cifar_reference(cifar, d.val_index, 56))
    assert len(_entries(tmp_path / "cache")) == 1
