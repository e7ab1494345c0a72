"""A search's settings: one frozen, validated `SearchConfig` (the CLI's flags map one to one onto its fields)."""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass
from typing import Any

from resnas._errors import ConfigError


class Objectives(str, enum.Enum):
    ACCURACY = "accuracy"
    ACCURACY_FLOPS = "accuracy+flops"


class SamplerName(str, enum.Enum):
    TPE = "tpe"
    RANDOM = "random"
    NSGA2 = "nsga2"


class PrunerName(str, enum.Enum):
    HYPERBAND = "hyperband"
    MEDIAN = "median"
    NONE = "none"


class DeviceName(str, enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Backend(str, enum.Enum):
    OPTUNA = "optuna"  # trials one after another in this process (resnas._local)
    RAY = "ray"  # Ray Tune trials on a local Ray instance or a cluster (resnas._ray)


# The settings that only the Ray backend reads.
RAY_ONLY = ("address", "cpus_per_trial", "gpus_per_trial", "max_concurrent")


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search run needs; errors name the field at fault (`ConfigError.field`)."""

    space: str
    budget: int
    out: str
    trials: int = 8
    epochs: int = 2
    dataset: str = "fashion-mnist"
    data_root: str | None = None
    train_samples: int | None = 2000
    val_samples: int | None = 1000
    train_resolution: int | None = None
    # Proxy width factor for training (None: 0.5 on CPU, 1.0 on a GPU); budgets always use the real width.
    proxy_width: float | None = None
    batch_size: int = 64
    lr: float = 0.05
    seed: int = 0
    study: str = "resnas"
    storage: str | None = None
    sampler: SamplerName = SamplerName.TPE
    pruner: PrunerName = PrunerName.HYPERBAND
    objectives: Objectives = Objectives.ACCURACY
    device: DeviceName = DeviceName.AUTO
    keep_top: int = 3
    # Train the zoo networks the space contains under the budget first (resnas._lifecycle.Openings).
    classics: bool = True
    timeout: float | None = None
    backend: Backend = Backend.OPTUNA
    # Ray only: the cluster to attach to (None: start a local instance), resources per trial, trials at once.
    address: str | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    command: str = ""

    def __post_init__(self) -> None:
        for name, kind in (("sampler", SamplerName), ("pruner", PrunerName), ("objectives", Objectives),
                           ("device", DeviceName), ("backend", Backend)):
            object.__setattr__(self, name, kind(getattr(self, name)))
        for name in ("trials", "epochs", "batch_size", "keep_top", "train_samples", "val_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"must be at least 1, got {value}", field=name)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"must be positive, got {self.lr}", field="lr")
        if self.proxy_width is not None and not 0 < self.proxy_width <= 1:
            raise ConfigError(f"must be in (0, 1], got {self.proxy_width}", field="proxy_width")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"must be positive seconds, got {self.timeout}", field="timeout")
        if self.train_resolution is not None and self.train_resolution < 32:
            raise ConfigError(f"must be at least 32 (resnas networks need it), got {self.train_resolution}",
                              field="train_resolution")
        self._check_ray_settings()

    def _check_ray_settings(self) -> None:
        """The Ray backend's settings: only with backend ray, and with values a cluster can honour."""
        given = [name for name in RAY_ONLY if getattr(self, name) is not None]
        if given and self.backend is not Backend.RAY:
            raise ConfigError("needs the ray backend", field=given[0])
        if self.cpus_per_trial is not None and not self.cpus_per_trial > 0:
            raise ConfigError(f"must be positive, got {self.cpus_per_trial}", field="cpus_per_trial")
        if self.gpus_per_trial is not None and not 0 <= self.gpus_per_trial <= 1:
            raise ConfigError(f"must be in [0, 1] (a trial trains on one device; a fraction shares a GPU), got "
                              f"{self.gpus_per_trial}", field="gpus_per_trial")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"must be at least 1, got {self.max_concurrent}", field="max_concurrent")
        if self.address is not None and self.address.startswith(("http://", "https://")):
            raise ConfigError(f"{self.address} is a dashboard URL: give the cluster's HOST:PORT (6379 by default) "
                              "or auto; the dashboard is for `resnas submit` and `resnas jobs`", field="address")

    @property
    def multi_objective(self) -> bool:
        return self.objectives is Objectives.ACCURACY_FLOPS

    def fingerprint(self, space_text: str, proxy_width: float) -> dict[str, Any]:
        """The settings that define a study: a resumed run must use the same ones."""
        return {
            "proxy_width": proxy_width,
            "space_sha256": hashlib.sha256(space_text.encode()).hexdigest()[:16],
            "budget": self.budget,
            "objectives": self.objectives.value,
            "dataset": self.dataset,
            "epochs": self.epochs,
            "train_samples": self.train_samples,
            "val_samples": self.val_samples,
            "train_resolution": self.train_resolution,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "seed": self.seed,
        }
