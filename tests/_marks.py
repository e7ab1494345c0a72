"""Marks shared by the test modules."""

from pathlib import Path

import pytest

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# CI installs it (`make test` depends on `make data`), so there these tests always run.
needs_fashion = pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="needs Debian's Fashion-MNIST: `apt-get install dataset-fashion-mnist` (or `make data`)",
)
