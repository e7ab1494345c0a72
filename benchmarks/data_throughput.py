"""Image-folder loading: the on-disk cache against the in-memory decode resnas used before it.

On a generated folder of JPEG files (photo-like: smooth colour fields plus noise, 4:3 and 3:4, a few
hundred pixels a side) in a temporary folder, measured in one run:

- the old path: every image of the folder decoded in this process into one in-memory tensor (torchvision
  ImageFolder + Resize + CenterCrop), images/s;
- the cache build of a split (`load_data(..., cache_dir=...)`) with 1 worker process and with N, images/s;
- a second load of the same split (a second search, a resume): its start-up time over the first's
  (target < 5%), with the page cache warm as on the node that built it;
- a small split (`--train-samples 200`) of the whole folder: only its images are decoded (by the default
  number of workers: one process for so few images, as a spawned worker's start-up costs seconds);
- batch reads while training: random batches gathered from the in-memory tensor (the all-on-device path
  on a CPU) against batches streamed from the memory-mapped cache (resnas._train's prefetch thread).

    python benchmarks/data_throughput.py                     # 3000 images at 64 px, 2 workers and all CPUs
    python benchmarks/data_throughput.py --images 1000 --resolution 96 --workers 4
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resnas import _cache  # noqa: E402
from resnas._data import DataSplits, load_data  # noqa: E402
from resnas._train import _prefetched  # noqa: E402

CLASSES = 10


def write_folder(root: Path, images: int) -> None:
    """`images` photo-like JPEGs (quality 90) spread over CLASSES class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        label = root / f"class{i % CLASSES:02d}"
        label.mkdir(parents=True, exist_ok=True)
        h, w = (375, 500) if i % 2 else (500, 375)
        coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
        pixels = np.clip(field + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(label / f"{i:06d}.jpg", quality=90)


def old_in_memory(root: Path, resolution: int) -> tuple[torch.Tensor, float]:
    """What `_read_imagefolder` did: the whole folder decoded in this process; the tensor and seconds."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    start = time.perf_counter()
    tf = transforms.Compose([transforms.Resize(resolution), transforms.CenterCrop(resolution),
                             transforms.PILToTensor()])
    ds = ImageFolder(str(root), transform=tf)
    x = torch.empty(len(ds), 3, resolution, resolution, dtype=torch.uint8)
    for i in range(len(ds)):
        x[i] = ds[i][0]
    return x, time.perf_counter() - start


def timed_load(root: Path, cache: Path, resolution: int, workers: int | None, train: int,
               val: int) -> tuple[DataSplits, float]:
    """`load_data` of the imagefolder split, and the seconds it took."""
    start = time.perf_counter()
    d = load_data("imagefolder", root=str(root), train_samples=train, val_samples=val, seed=0,
                  resolution=resolution, cache_dir=cache, workers=workers)
    return d, time.perf_counter() - start


def batch_rate(x: torch.Tensor, batch: int, streamed: bool) -> float:
    """Images/s of one epoch of seeded random batches gathered from `x` (streamed: by the prefetch thread)."""
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    batches = tuple(perm[i : i + batch] for i in range(0, len(x) - batch + 1, batch))
    start = time.perf_counter()
    total = 0
    source = _prefetched(x, batches, torch.device("cpu")) if streamed else (x[idx] for idx in batches)
    for images in source:
        total += int(images[:, :, 0, 0].sum())  # touch the batch as training would
    seconds = time.perf_counter() - start
    assert total >= 0
    return len(batches) * batch / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--workers", type=int, default=_cache.default_workers(),
                        help="worker processes of the parallel build (default: the CPUs, at most 16)")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    n, res = args.images, args.resolution
    val = n // 10
    print(f"{n} JPEGs (500x375 and 375x500) at {res} px; {os.cpu_count()} CPUs; torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="resnas-data-bench-") as tmp:
        root = Path(tmp) / "images"
        start = time.perf_counter()
        write_folder(root, n)
        size = sum(f.stat().st_size for f in root.rglob("*.jpg"))
        print(f"generated in {time.perf_counter() - start:.1f} s ({size / 2**20:.0f} MiB)")

        old_x, old_s = old_in_memory(root, res)
        print(f"old in-memory decode, whole folder, 1 process: {old_s:6.2f} s  {n / old_s:8.0f} images/s")
        one, one_s = timed_load(root, Path(tmp) / "cache1", res, 1, n - val, val)
        print(f"cache build, 1 worker:                          {one_s:6.2f} s  {n / one_s:8.0f} images/s")
        many, many_s = timed_load(root, Path(tmp) / "cacheN", res, args.workers, n - val, val)
        print(f"cache build, {args.workers} workers:{' ' * (33 - len(str(args.workers)))}"
              f"{many_s:6.2f} s  {n / many_s:8.0f} images/s")
        again, again_s = timed_load(root, Path(tmp) / "cacheN", res, args.workers, n - val, val)
        print(f"second load of the same split (cache hit):      {again_s:6.3f} s")
        small, small_s = timed_load(root, Path(tmp) / "cacheS", res, None, 200, 100)
        print(f"split of 200 + 100 of {n}, default workers:{' ' * (21 - len(str(n)))}{small_s:6.2f} s")
        # The same pixels every way: the old path's rows at the splits' positions in the folder.
        for d in (one, many, again, small):
            assert torch.equal(d.train_x, old_x[d.train_index]) and torch.equal(d.val_x, old_x[d.val_index])

        rate_mem = batch_rate(old_x[again.train_index], args.batch, streamed=False)
        rate_map = batch_rate(again.train_x, args.batch, streamed=True)
        print(f"batch reads, in memory (gather):                {rate_mem:8.0f} images/s")
        print(f"batch reads, streamed from the cache (prefetch):{rate_map:8.0f} images/s")

        print("ratios:")
        print(f"  cache build 1 worker / old decode:            {old_s / one_s:5.2f}x the images/s")
        print(f"  cache build {args.workers} workers / 1 worker:{' ' * (18 - len(str(args.workers)))}"
              f"{one_s / many_s:5.2f}x")
        print(f"  second load / first load (target < 5%):       {100 * again_s / many_s:5.2f}%")
        print(f"  second load / old decode:                     {100 * again_s / old_s:5.2f}%")
        print(f"  small split / old decode of the whole folder: {100 * small_s / old_s:5.2f}%")
        print(f"  streamed batch reads / in-memory:             {rate_map / rate_mem:5.2f}x")


if __name__ == "__main__":
    main()
