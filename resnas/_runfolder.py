"""`RunFolder`: the one owner of a run's files, for the search that writes them and the commands that read them.

Layout of a run folder (`--out`):
    run.json               its owner (the study it belongs to) and the search's settings (space, budget, data
                           and training proxy); written first, so a folder without it is not resnas's
    study.db               the Optuna study (SQLite) unless another storage is given
    trials.csv             one row per trial, rewritten as trials finish
    accuracy_vs_flops.png  every trained trial, the budget line and the Pareto front
    weights/trial_N.pt     state dicts of the top `keep_top` trials (and the Pareto front)
    best/arch.json         the best trial's searched Arch (what the budget was checked on)
    best/trained_arch.json the network actually trained: arch.json narrowed by the proxy width
    best/weights.pt        its state dict: loads into build(trained_arch.json) with the training input's
                           classes and channels (run.json's training_input)
    .study.lock            the lock processes sharing the study take turns through (beside study.db)
    ray/                   Ray Tune's experiment while a Ray search runs (`--backend ray`)
    export/                `resnas export`'s networks unless --out says otherwise
    verify/                `resnas verify`: verify.json (recipe, networks), verify.csv (one row per network
                           and seed), summary.json, verify.png, weights/<network>.pt (seed 0's)

A run folder belongs to one study (`Owner`): `claim` refuses a folder that holds another study, or files
resnas did not write, and resnas never deletes or overwrites a file it did not write.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pickle
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnas._errors import StorageError
from resnas._trial import COLUMNS, TrialRecord, TrialState, pareto_front, ranked

if TYPE_CHECKING:
    import torch

RUN_FILE = "run.json"
STUDY_FILE = "study.db"
TRIALS_FILE = "trials.csv"
PLOT_FILE = "accuracy_vs_flops.png"
WEIGHTS_DIR = "weights"
BEST_DIR = "best"
VERIFY_DIR = "verify"
TUNE_DIR = "ray"
EXPORT_DIR = "export"
STUDY_LOCK = ".study.lock"
# What resnas writes in a run folder besides run.json: found in a folder without run.json, they are a user's.
RUN_NAMES = (STUDY_FILE, TRIALS_FILE, PLOT_FILE, WEIGHTS_DIR, BEST_DIR, VERIFY_DIR)


@dataclass(frozen=True)
class Owner:
    """The study a run folder belongs to: its name, its storage URL as given (None: study.db in the folder),
    and the id resnas gave the study when it was created (None until the folder first opened it)."""

    study: str
    storage: str | None
    study_id: str | None = None

    def same_study(self, other: Owner) -> bool:
        return (self.study, self.storage) == (other.study, other.storage)

    def where(self, folder: Path) -> str:
        return f"study {self.study!r} in {self.storage or folder / STUDY_FILE}"


@contextlib.contextmanager
def _temporary(path: Path) -> Iterator[Path]:
    """A new temporary file beside `path`, removed unless renamed away; created like open() creates files
    (0666 less the umask: mkstemp's 0600 would make run files unreadable to the group that reads weights)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name beside {path}")
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


# `_temporary`'s names (and export's staging folders): .<name>.<pid>.<token>.tmp
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<token>\w+)\.tmp")


def sweep_temporaries(folder: Path) -> None:
    """Remove what killed processes of this machine left half-written in `folder` (and one level down)."""
    for path in [*folder.glob(".*.tmp"), *folder.glob("*/.*.tmp")]:
        match = _TEMPORARY.fullmatch(path.name)
        if match is None or pid_alive(int(match["pid"])):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this machine lives (one we may not signal does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def atomic_write(path: Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write via a temporary file and rename, so a killed run never leaves a half-written file.

    `exclusive`: only if `path` does not exist yet (a hard link fails on an existing name: no race);
    returns whether it was written.
    """
    with _temporary(path) as tmp:
        tmp.write_bytes(data)
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    return True


def ensure_writable(folder: Path, what: str = "the output folder") -> None:
    """Create `folder` (and parents) or raise a StorageError naming it and the fix."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".resnas-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise StorageError(f"cannot write to {what} {folder}: {e.strerror or e}; choose a folder you can write "
                           "to") from None


class RunFolder:
    """A run's files under `path`: reads and writes of run.json, trials.csv, weights, best/ and the plot."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._created = False  # by `claim`: `abandon` may remove it again

    def claim(self, owner: Owner) -> Owner:
        """Make this `owner`'s run folder; returns the owner it records (with the study's id once known).

        Refused (StorageError): a file, a run folder of another study, or a folder holding files resnas did
        not write (no run.json). Concurrent claims of a new folder by one study agree (run.json is created
        exclusively).
        """
        if self.path.exists() and not self.path.is_dir():
            raise StorageError(f"{self.path} is a file, not a folder; pass a new folder or a run folder of this "
                               "search", field="out")
        recorded = self._owner()
        if recorded is None:
            foreign = [name for name in RUN_NAMES if (self.path / name).exists()]
            if foreign:
                raise StorageError(f"{self.path} holds {', '.join(foreign)} but no {RUN_FILE}: resnas did not "
                                   "write them and will not overwrite them; pass a new or empty folder",
                                   field="out")
            self._created = not self.path.exists()
            ensure_writable(self.path, "the run folder")
            if atomic_write(self.path / RUN_FILE, _json({"owner": asdict(owner)}), exclusive=True):
                return owner
            recorded = self._owner()  # another process of the same command claimed it first
            assert recorded is not None
        if not recorded.same_study(owner):
            raise StorageError(f"{self.path} is the run folder of {recorded.where(self.path)}; a run folder "
                               f"keeps one study, so pass a new folder for study {owner.study!r}", field="out")
        sweep_temporaries(self.path)
        return recorded

    def abandon(self) -> None:
        """Undo `claim` of a folder it created, when the search failed before opening its study."""
        if self._created and not (self.path / STUDY_FILE).exists():
            (self.path / RUN_FILE).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if nothing else was put there meanwhile

    def _owner(self) -> Owner | None:
        """The owner run.json records; None without run.json; a StorageError for someone else's run.json."""
        if not (self.path / RUN_FILE).is_file():
            return None
        run = self.read_run()
        owner = run.get("owner")
        try:
            if isinstance(owner, dict):
                return Owner(**owner)
            if isinstance(run.get("settings"), dict) and "proxy_width" in run:  # written before owners
                return Owner(run["settings"]["study"], None)
        except (TypeError, KeyError):
            pass
        raise StorageError(f"{self.path / RUN_FILE} was not written by resnas; pass a new folder", field="out")

    def finished_trials(self) -> int:
        """Trained trials this folder holds results of (trials.csv rows, kept weights): what must not be lost."""
        # Read as text: a damaged file still tells what must not be overwritten.
        trained = sum(r.get("state") in (TrialState.COMPLETE.value, TrialState.PRUNED.value) for r in self._rows())
        folder = self.path / WEIGHTS_DIR
        return max(trained, len(list(folder.glob("trial_*.pt"))) if folder.is_dir() else 0)

    def verification(self) -> VerifyFolder:
        """The files of `resnas verify` in this run."""
        return VerifyFolder(self.path / VERIFY_DIR)

    def study_url(self, storage: str | None) -> str:
        """The study's Optuna storage: `storage`, else study.db in this folder."""
        return storage or f"sqlite:///{(self.path / STUDY_FILE).resolve()}"

    def study_lock(self, storage: str | None) -> Path:
        """The lock the processes of the study take turns through: beside a SQLite study's file (every process
        on it sees that one), else in this folder."""
        url = self.study_url(storage)
        if url.startswith("sqlite:///"):
            db = Path(url.removeprefix("sqlite:///"))
            if os.access(db.parent, os.W_OK):
                return db.with_name(f".{db.name}.lock")
        return self.path / STUDY_LOCK

    @property
    def tune_dir(self) -> Path:
        """Ray Tune's storage path while a Ray search runs (removed when it ends)."""
        return self.path / TUNE_DIR

    @property
    def export_dir(self) -> Path:
        """Where `resnas export` writes unless told otherwise."""
        return self.path / EXPORT_DIR

    # -- run.json ---------------------------------------------------------------------------------

    def write_run(self, owner: Owner, run: Mapping[str, Any]) -> None:
        """run.json: `owner` first, then `run`."""
        atomic_write(self.path / RUN_FILE, _json({"owner": asdict(owner), **run}))

    def read_run(self) -> dict[str, Any]:
        """run.json, or a StorageError saying the folder is not a run."""
        path = self.path / RUN_FILE
        if not path.is_file():
            raise StorageError(f"{self.path} is not a resnas run folder (no {RUN_FILE}); pass the output folder "
                               "of a search")
        return read_json(path, "rerun the search or restore the file") or {}

    # -- trials.csv -------------------------------------------------------------------------------

    def write_trials(self, records: list[TrialRecord]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS)
        writer.writeheader()
        for r in sorted(records, key=lambda r: r.number):
            writer.writerow(r.row())
        atomic_write(self.path / TRIALS_FILE, buf.getvalue().encode())

    def _rows(self) -> list[dict[str, str]]:
        """trials.csv's rows as text (none without the file)."""
        try:
            with open(self.path / TRIALS_FILE, newline="", errors="replace") as f:
                return list(csv.DictReader(f))
        except FileNotFoundError:
            return []

    def read_trials(self) -> list[TrialRecord]:
        """trials.csv's records (none before the first trial has finished); a damaged row is a StorageError."""
        path = self.path / TRIALS_FILE
        records = []
        for row in self._rows():
            try:
                records.append(TrialRecord.from_row(row))
            except ValueError as e:
                raise StorageError(f"{path}: trial {row.get('number')} is damaged ({e}); restore the file from "
                                   "the study (rerun the search to rewrite it)") from None
        return records

    # -- weights ----------------------------------------------------------------------------------

    def weights_path(self, number: int) -> Path:
        return self.path / WEIGHTS_DIR / f"trial_{number:04d}.pt"

    def save_weights(self, number: int, state: Mapping[str, torch.Tensor]) -> None:
        """A trial's state dict, on the CPU, written atomically."""
        _save_state(self.weights_path(number), state)

    def outside(self, records: list[TrialRecord], keep_top: int) -> list[int]:
        """Trials whose weight files `keep_weights(records, keep_top)` would delete."""
        keep = {r.number for r in ranked(records)[:keep_top]} | {r.number for r in pareto_front(records)}
        return sorted(set(self._kept()) - keep)

    def _kept(self) -> dict[int, Path]:
        folder = self.path / WEIGHTS_DIR
        found = {}
        for f in folder.glob("trial_*.pt") if folder.is_dir() else ():
            with contextlib.suppress(IndexError, ValueError):
                found[int(f.stem.split("_")[1])] = f
        return found

    def keep_weights(self, records: list[TrialRecord], keep_top: int) -> None:
        """Delete weight files outside the top `keep_top` and the Pareto front; refresh best/."""
        kept = self._kept()
        for number in self.outside(records, keep_top):
            kept[number].unlink(missing_ok=True)
        best = ranked(records)[:1]
        if best and self.weights_path(best[0].number).is_file():
            self._write_best(best[0])

    def _write_best(self, best: TrialRecord) -> None:
        folder = self.path / BEST_DIR
        folder.mkdir(exist_ok=True)
        atomic_write(folder / "arch.json", _json(best.arch, sort_keys=True))
        atomic_write(folder / "trained_arch.json", _json(best.trained_arch, sort_keys=True))
        with _temporary(folder / "weights.pt") as tmp:  # two processes may publish best/ at once
            shutil.copyfile(self.weights_path(best.number), tmp)
            os.replace(tmp, folder / "weights.pt")
        atomic_write(folder / "trial.json", _json(best.row()))

    def save_plot(self, fig: Any) -> None:
        """accuracy_vs_flops.png (`resnas._plots.trials_figure`)."""
        save_figure(fig, self.path / PLOT_FILE)


SWEEP_FILE = "sweep.json"


class SweepFolder:
    """`resnas sweep`'s folder: sweep.json (space, budgets, samples, runs) and one run folder per budget."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, Any] | None:
        """sweep.json, None without one; a StorageError for a corrupt one."""
        path = self.path / SWEEP_FILE
        sweep = read_json(path, "restore it or pass a new folder")
        if sweep is None:
            return None
        if not isinstance(sweep.get("runs"), list):
            raise StorageError(f"{path} was not written by resnas sweep; pass a new folder")
        return sweep

    def record(self, space: str, runs: Mapping[str, int], samples: int) -> None:
        """Create or extend sweep.json with `runs` (folder name -> budget); refuse another space or a folder
        resnas did not make."""
        known = self.read()
        if known is None and self.path.is_dir() and any(self.path.iterdir()):
            raise StorageError(f"{self.path} is not empty and holds no {SWEEP_FILE}; pass a new or empty folder",
                               field="out")
        if known is not None and Path(known["space"]).name != Path(space).name:
            raise StorageError(f"{self.path} is a sweep of {known['space']}; pass a new folder for {space}",
                               field="out")
        budgets = {**dict(zip(known["runs"], known["budgets"])), **runs} if known else dict(runs)
        order = sorted(budgets, key=budgets.get)  # type: ignore[arg-type]
        ensure_writable(self.path, "the sweep folder")
        atomic_write(self.path / SWEEP_FILE, _json({
            "space": space, "runs": order, "budgets": [budgets[r] for r in order],
            "samples": max(samples, known["samples"] if known else 0)}))


class VerifyFolder:
    """`resnas verify`'s files in a run folder (see the module docstring)."""

    PLAN, UNITS, SUMMARY, PLOT = "verify.json", "verify.csv", "summary.json", "verify.png"

    def __init__(self, path: Path) -> None:
        self.path = path

    def read_plan(self) -> dict[str, Any] | None:
        return self._read_json(self.PLAN)

    def write_plan(self, plan: Mapping[str, Any]) -> None:
        ensure_writable(self.path, "the verification folder")
        atomic_write(self.path / self.PLAN, _json(plan))

    def read_summary(self) -> dict[str, Any] | None:
        return self._read_json(self.SUMMARY)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write(self.path / self.SUMMARY, _json(summary))

    def _read_json(self, name: str) -> dict[str, Any] | None:
        return read_json(self.path / name, f"move {self.path} away to verify afresh")

    def read_units(self) -> list[dict[str, str]]:
        """verify.csv's rows, one per finished unit (none before the first)."""
        try:
            with open(self.path / self.UNITS, newline="") as f:
                return list(csv.DictReader(f))
        except FileNotFoundError:
            return []

    def write_units(self, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path / self.UNITS, buf.getvalue().encode())

    def weights_path(self, label: str, seed: int = 0) -> Path:
        """The state dict of network `label` ("#12" is trial_0012) trained with `seed` (0: the one export ships)."""
        stem = f"trial_{int(label[1:]):04d}" if label.startswith("#") else label
        return self.path / WEIGHTS_DIR / (f"{stem}.pt" if seed == 0 else f"{stem}.seed{seed}.pt")

    def save_weights(self, label: str, state: Mapping[str, torch.Tensor], seed: int = 0) -> None:
        _save_state(self.weights_path(label, seed), state)

    def read_weights(self, label: str, seed: int = 0) -> dict[str, torch.Tensor]:
        """A kept state dict; a StorageError naming the file when it is missing or damaged."""
        return read_state(self.weights_path(label, seed), f"move {self.path} away to verify afresh")

    def save_plot(self, fig: Any) -> None:
        """verify.png (`resnas._plots.verify_figure`)."""
        save_figure(fig, self.path / self.PLOT)


def _json(data: Any, *, sort_keys: bool = False) -> bytes:
    return json.dumps(data, indent=2, sort_keys=sort_keys).encode()


def read_json(path: Path, fix: str) -> dict[str, Any] | None:
    """A JSON object file of the folder; None without one; a StorageError naming `path` and `fix` when it is
    not JSON, not UTF-8 or not an object."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StorageError(f"{path} is corrupt ({e}); {fix}") from None
    if not isinstance(data, dict):
        raise StorageError(f"{path} is corrupt (a JSON {type(data).__name__}, not an object); {fix}") from None
    return data


def read_state(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """A state dict written by `_save_state`, on the CPU; a StorageError naming `path` and `fix` when it is
    missing or damaged."""
    import torch

    try:
        state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StorageError(f"{path} is missing; {fix}") from None
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StorageError(f"cannot read {path} ({first}): the file is damaged; {fix}") from None
    return state


def _save_state(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """A state dict, on the CPU, written atomically."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with _temporary(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp)
        os.replace(tmp, path)


def save_figure(fig: Any, path: Path) -> None:
    """A matplotlib Figure as a PNG, written atomically."""
    with _temporary(path) as tmp:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
