"""A tiny CIFAR-10 folder in the real on-disk format (no download: the tests write their own)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_cifar10(root: Path, per_batch: int = 20) -> Path:
    """root/cifar-10-batches-py/ with `data_batch_1..5`, `test_batch` and `batches.meta`: the python pickles
    torchvision's CIFAR10 reads (dicts of `data`, N x 3072 uint8 rows in R, G, B planes, and `labels`), each
    image a colour of its class plus noise."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        base = np.array([[25 * k, 250 - 25 * k, 120] for k in labels], dtype=float)[:, :, None, None]
        pixels = np.clip(base + rng.normal(0, 40, (per_batch, 3, 32, 32)), 0, 255).astype(np.uint8)
        batch = {"batch_label": name, "labels": labels, "data": pixels.reshape(per_batch, 3072),
                 "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": list(LABELS), "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return root


def accept_fake_cifar(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision reads the fake files (it checks the real ones' MD5 sums) and never downloads."""
    import torchvision.datasets.cifar as tv_cifar

    from resnas import _datasets as _data

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    monkeypatch.setattr(_data, "_TORCHVISION_ROOTS", ())
    monkeypatch.delenv("RESNAS_DATA", raising=False)
