"""A search's settings: one frozen, validated `SearchConfig` (the CLI's flags map one to one onto its fields)."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from resnas._arch import MAX_RESOLUTION, brief, is_finite, is_integer
from resnas._budget import MAX_BUDGET
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
RAY_ONLY = ("address", "cpus_per_trial", "gpus_per_trial", "max_concurrent", "storage_path")
# Seeds below 2^31: NumPy (Optuna's samplers) takes seeds below 2^32, and trials add their number to it.
MAX_SEED = 2**31 - 1


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    """`value` is an integer in [minimum, maximum], or a ConfigError names the field."""
    if not is_integer(value):
        raise ConfigError(f"must be an integer, got {brief(value)}", field=name)
    if value < minimum:
        raise ConfigError(f"must be at least {minimum}, got {value}", field=name)
    if maximum is not None and value > maximum:
        raise ConfigError(f"must be at most {maximum}, got {brief(value)}", field=name)


class Proxy(NamedTuple):
    """How a search trained its candidates, as run.json records it."""

    epochs: int
    train_samples: int
    batch_size: int
    lr: float


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
    # Where an image folder's decoded split is cached (default: $XDG_CACHE_HOME/resnas/data).
    data_cache: str | None = None
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
    # Train the zoo networks the space contains under the budget first (resnas._proposals.Openings).
    classics: bool = True
    # Then one fitting architecture per shortcut kind no classic covers (off in a sweep: not a random draw).
    first_of_each_kind: bool = True
    # After the openings, this share of the trials are one-step moves of the best trial so far
    # (resnas._proposals.LocalMoves), interleaved with the sampler's picks; 0 turns them off.
    local_moves: float = 0.5
    timeout: float | None = None
    backend: Backend = Backend.OPTUNA
    # Optuna backend only: processes training at once on this machine, each asking the one study (None: one
    # per CUDA GPU PyTorch sees when training on CUDA, else 1).
    workers: int | None = None
    # Ray only: the cluster to attach to (None: start a local instance), resources per trial, trials at once.
    address: str | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    # Where Tune keeps checkpoints (default: <out>/ray): a folder every node mounts, or a URI such as s3://.
    storage_path: str | None = None
    command: str = ""

    def __post_init__(self) -> None:
        for name, kind in (("sampler", SamplerName), ("pruner", PrunerName), ("objectives", Objectives),
                           ("device", DeviceName), ("backend", Backend)):
            object.__setattr__(self, name, kind(getattr(self, name)))
        self._check_counts()
        if not (is_finite(self.lr) and self.lr > 0):
            raise ConfigError(f"must be positive and finite, got {brief(self.lr)}", field="lr")
        if self.proxy_width is not None and not (is_finite(self.proxy_width) and 0 < self.proxy_width <= 1):
            raise ConfigError(f"must be in (0, 1], got {brief(self.proxy_width)}", field="proxy_width")
        if self.timeout is not None and not (is_finite(self.timeout) and self.timeout > 0):
            raise ConfigError(f"must be a positive, finite number of seconds, got {brief(self.timeout)}; leave "
                              "it out for no time limit", field="timeout")
        if self.train_resolution is not None:
            # At least 32: the stem and stride-2 stages of a resnas network need it.
            _check_int("train_resolution", self.train_resolution, 32, MAX_RESOLUTION)
        if not (is_finite(self.local_moves) and 0 <= self.local_moves <= 1):
            raise ConfigError(f"must be in [0, 1], got {brief(self.local_moves)}", field="local_moves")
        self._check_ray_settings()

    def _check_counts(self) -> None:
        """The integer settings: at least 1 (the seed at least 0), the budget and seed within their limits."""
        _check_int("budget", self.budget, 1, MAX_BUDGET)
        _check_int("seed", self.seed, 0, MAX_SEED)
        for name in ("trials", "epochs", "batch_size", "keep_top", "train_samples", "val_samples",
                     "max_concurrent", "workers"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, 1)

    def _check_ray_settings(self) -> None:
        """The Ray backend's settings: only with backend ray, and with values a cluster can honour."""
        given = [name for name in RAY_ONLY if getattr(self, name) is not None]
        if given and self.backend is not Backend.RAY:
            raise ConfigError("needs the ray backend", field=given[0])
        if self.workers is not None and self.backend is Backend.RAY:
            raise ConfigError("is for the optuna backend; Ray runs as many trials as the cluster fits (or "
                              "max_concurrent)", field="workers")
        if self.cpus_per_trial is not None and not (is_finite(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise ConfigError(f"must be positive and finite, got {brief(self.cpus_per_trial)}",
                              field="cpus_per_trial")
        if self.gpus_per_trial is not None and not (is_finite(self.gpus_per_trial) and 0 <= self.gpus_per_trial <= 1):
            raise ConfigError(f"must be in [0, 1] (a trial trains on one device; a fraction shares a GPU), got "
                              f"{self.gpus_per_trial}", field="gpus_per_trial")
        if self.storage_path is not None and not self.storage_path.strip():
            raise ConfigError("is empty: give a folder every node mounts, or a URI such as s3://bucket/path",
                              field="storage_path")
        if self.address is not None and self.address.startswith(("http://", "https://")):
            raise ConfigError(f"{self.address} is a dashboard URL: give the cluster's HOST:PORT (6379 by default) "
                              "or auto; the dashboard is for `resnas submit` and `resnas jobs`", field="address")

    @property
    def multi_objective(self) -> bool:
        return self.objectives is Objectives.ACCURACY_FLOPS

    @classmethod
    def proxy_of(cls, settings: Mapping[str, Any]) -> Proxy:
        """The proxy training run.json's `settings` record, this class's defaults where they say nothing."""
        defaults = {f.name: f.default for f in fields(cls)}

        def get(key: str) -> Any:
            value = settings.get(key)
            return defaults[key] if value is None else value

        return Proxy(int(get("epochs")), int(get("train_samples")), int(get("batch_size")), float(get("lr")))

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
