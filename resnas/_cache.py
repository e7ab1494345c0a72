"""On-disk caches of decoded images: a raw uint8 N x C x H x W file plus a JSON record, memory-mapped.

An image folder is decoded once, by worker processes, at the training resolution, and only the images a
split needs; a dataset already decoded in memory (CIFAR) is resized to another resolution the same way,
its images being the sources. Later loads (a second search, a resume, every trial on the node) map the
file copy-on-write: the pages are shared through the page cache and nothing is decoded or copied up front.

Files per entry, named by a digest of the key (source, file-list fingerprint, resolution, indices):
`<digest>.u8` (the pixels), `<digest>.json` (the key, shape, the data file's size/inode/mtime and the
caller's summary, e.g. channel statistics) and `<digest>.lock`. Builders hold an exclusive `flock` on the
lock file, so concurrent processes decode once and never write the same file; the pixels are written to
a temporary file renamed into place, and the record is renamed in last, so a killed build leaves no
entry that looks complete. An entry whose record does not match its data file (truncated, rewritten,
replaced) is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from resnas._errors import DataError, StorageError
from resnas._lock import exclusive

__all__ = ["Decoder", "cached_images", "decode_image", "default_cache_dir", "default_workers"]

# A decoder maps (source, resolution) to a C x res x res uint8 array: an image path and `decode_image`, or a
# decoded image (a small array, pickled to the workers) and a resize.
Decoder = Callable[[Any, int], np.ndarray]
# Bumped whenever `decode_image` or the file layout changes, so older entries stop matching.
FORMAT_VERSION = 1
# Images per task handed to a worker: large enough to amortise the task, small enough to balance.
_CHUNK = 32
# Images per worker below which a default build uses fewer: a spawned worker imports torch and torchvision
# (2-5 s), the time it takes to decode about 1000 small JPEGs.
_MIN_IMAGES_PER_WORKER = 1000
_MAX_DEFAULT_WORKERS = 16


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/resnas/data, else ~/.cache/resnas/data."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resnas" / "data"


def default_workers() -> int:
    """The CPUs this process may run on, at most 16."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, _MAX_DEFAULT_WORKERS))


def decode_image(path: str, resolution: int) -> np.ndarray:
    """One image file as RGB, shorter side resized to `resolution` and centre-cropped: 3 x res x res uint8.

    The same steps as torchvision's ImageFolder with Resize + CenterCrop + PILToTensor.
    """
    from torchvision import transforms
    from torchvision.datasets.folder import pil_loader

    tf = transforms.Compose([transforms.Resize(resolution), transforms.CenterCrop(resolution)])
    image = tf(pil_loader(path))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def cached_images(
    key: Mapping[str, Any],
    sources: Sequence[Any],
    resolution: int,
    *,
    cache_dir: Path,
    workers: int | None,
    decode: Decoder,
    summarize: Callable[[np.ndarray], dict[str, Any]],
    folder: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    """`sources` (image paths, or images) decoded to an N x 3 x res x res memmap (copy-on-write) and
    `summarize`'s record of it.

    Found by `key` (JSON-able) in `cache_dir`, or built there first by `workers` processes running
    `decode` (None: one per CPU, at most 16, fewer for small splits; a `decode` run by 2+ workers must
    pickle: a module-level function or a partial of one); `summarize` runs once, on the fresh build, and
    its result is stored with it. `folder` names the source in the error raised for an image that cannot be
    decoded.
    """
    shape = (len(sources), 3, resolution, resolution)
    record = {"version": FORMAT_VERSION, "key": json.loads(json.dumps(dict(key))), "shape": list(shape)}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]
    data, meta = cache_dir / f"{digest}.u8", cache_dir / f"{digest}.json"
    found = _open_valid(data, meta, record)
    if found is not None:
        return found
    _make_dir(cache_dir)
    lock = cache_dir / f"{digest}.lock"
    with exclusive(lock, _lock_error(lock)):
        found = _open_valid(data, meta, record)  # built by another process while this one waited
        if found is not None:
            return found
        _build(data, meta, record, sources, resolution, workers=workers, decode=decode,
               summarize=summarize, folder=folder)
    found = _open_valid(data, meta, record)
    if found is None:
        raise StorageError(f"the image cache {data} changed while it was being built; run again, or give "
                           "cache_dir a folder no other program writes to")
    return found


def _open_valid(data: Path, meta: Path, record: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The entry's pixels, mapped copy-on-write, and its summary; None if it is missing or does not match."""
    try:
        stored = json.loads(meta.read_text())
        st = data.stat()
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or any(stored.get(k) != v for k, v in record.items()):
        return None
    # Size, inode and mtime as recorded after the rename: a truncated, rewritten or swapped file differs.
    if stored.get("file") != _identity(st) or st.st_size != math.prod(record["shape"]):
        return None
    # Mode "c": pages come from the shared page cache; a write (none is made) would stay private.
    pixels = np.memmap(data, dtype=np.uint8, mode="c", shape=tuple(record["shape"]))
    return pixels, stored.get("summary", {})


def _identity(st: os.stat_result) -> list[int]:
    """What identifies one version of a file: its size, inode and modification time."""
    return [st.st_size, st.st_ino, st.st_mtime_ns]


def _make_dir(cache_dir: Path) -> None:
    """Create `cache_dir`, or say which folder to give instead."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create the image cache folder {cache_dir} ({e.strerror}); give cache_dir "
                           "a writable folder") from None


def _lock_error(path: Path) -> Callable[[OSError], StorageError]:
    """The error for a lock file that cannot be created in the cache folder: it names a fix."""
    def error(e: OSError) -> StorageError:
        return StorageError(f"cannot write in the image cache folder {path.parent} ({e.strerror}); give "
                            "cache_dir a writable folder")
    return error


def _build(data: Path, meta: Path, record: Mapping[str, Any], sources: Sequence[Any], resolution: int, *,
           workers: int | None, decode: Decoder, summarize: Callable[[np.ndarray], dict[str, Any]],
           folder: str) -> None:
    """Decode into a temporary file, then rename it and its record into place (the record last)."""
    shape = tuple(record["shape"])
    # Under the lock no other builder of this entry runs: any temporary left is a killed build's.
    for stale in data.parent.glob(f"{data.stem}.*.tmp-*"):
        stale.unlink(missing_ok=True)
    _check_space(data.parent, math.prod(shape))
    token = f"tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp_data, tmp_meta = data.with_name(f"{data.name}.{token}"), meta.with_name(f"{meta.name}.{token}")
    try:
        np.memmap(tmp_data, dtype=np.uint8, mode="w+", shape=shape).flush()
        _decode_all(tmp_data, shape, sources, resolution, workers=workers, decode=decode, folder=folder)
        summary = summarize(np.memmap(tmp_data, dtype=np.uint8, mode="c", shape=shape))
        _fsync(tmp_data)
        os.replace(tmp_data, data)
        stored = {**record, "summary": summary, "file": _identity(data.stat())}
        tmp_meta.write_text(json.dumps(stored, sort_keys=True))
        _fsync(tmp_meta)
        os.replace(tmp_meta, meta)
    except OSError as e:
        raise StorageError(f"cannot write the image cache {data} ({e.strerror or e}); free space there or "
                           "give cache_dir another folder") from None
    finally:
        tmp_data.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)


def _check_space(folder: Path, size: int) -> None:
    """The cache's folder has room for `size` bytes, checked before decoding for minutes."""
    free = shutil.disk_usage(folder).free
    if size > free:
        raise StorageError(f"the image cache needs {size / 2**30:,.1f} GiB but {folder} has {free / 2**30:,.1f} "
                           "GiB free; free space there, give cache_dir another folder, or lower the resolution")


def _fsync(path: Path) -> None:
    """Flush `path` to disk, so a crash after the rename cannot leave a complete-looking empty file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _decode_all(target: Path, shape: tuple[int, ...], sources: Sequence[Any], resolution: int, *,
                workers: int | None, decode: Decoder, folder: str) -> None:
    """Decode source i into row i of the memmap file `target`, in worker processes where it pays."""
    tasks = [(str(target), shape, start, list(sources[start : start + _CHUNK]), resolution, decode, folder)
             for start in range(0, len(sources), _CHUNK)]
    if workers is None:
        workers = min(default_workers(), len(sources) // _MIN_IMAGES_PER_WORKER)
    workers = max(1, min(workers, len(tasks)))
    if workers == 1:
        for task in tasks:
            _decode_chunk(task)
        return
    # Spawned, not forked: the caller may run threads (trials, Ray) that a fork would copy mid-lock. An
    # executor, not a Pool: a worker that dies (killed, out of memory) fails the build instead of hanging it.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_single_threaded)
    try:
        for _ in pool.map(_decode_chunk, tasks):
            pass
    except BrokenProcessPool as e:
        raise DataError(f"a worker process decoding {folder} died ({e}); run again, with workers=1 if it "
                        "happens again (e.g. out of memory)") from None
    finally:
        # After a failure (an image that cannot be decoded), the queued chunks are dropped, not decoded.
        pool.shutdown(wait=True, cancel_futures=True)


def _single_threaded() -> None:
    """Run in each worker before its first task: a decoder using torch (a resize) takes one thread, not one
    per CPU in each of the one-per-CPU workers (a worker imports torch anyway: the `resnas` package does)."""
    import torch

    torch.set_num_threads(1)


def _decode_chunk(task: tuple[str, tuple[int, ...], int, list[Any], int, Decoder, str]) -> None:
    """Decode one run of consecutive images into their rows of the memmap file (runs in a worker)."""
    target, shape, start, sources, resolution, decode, folder = task
    out = np.memmap(target, dtype=np.uint8, mode="r+", shape=shape)
    for i, source in enumerate(sources):
        out[start + i] = _decode_one(decode, source, resolution, folder)
    out.flush()
    del out


def _decode_one(decode: Decoder, source: Any, resolution: int, folder: str) -> np.ndarray:
    """One decoded image; a file PIL cannot decode is a DataError naming it."""
    from PIL import Image

    try:
        return decode(source, resolution)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        if not isinstance(source, str):
            raise  # an image already decoded that cannot be resized: a bug to report, not a file to remove
        # PIL raises UnidentifiedImageError (an OSError) for non-images, OSError for truncated files,
        # SyntaxError or ValueError for some malformed headers, DecompressionBombError for huge ones.
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot decode {source} as an image ({message}); delete it or move it out of "
                        f"{folder}") from None
