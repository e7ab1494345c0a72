"""One end-to-end harness for every search backend: the CLI in a subprocess, the run folder read back."""

from __future__ import annotations

import csv
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SPACE = str(ROOT / "search_spaces" / "cifar_family.yaml")
# The flags that choose each backend; one Ray trial at a time, so Ray's sampler sees the Optuna loop's history.
BACKENDS = {"optuna": [], "ray": ["--backend", "ray", "--max-concurrent", "1"]}


def environment(token_dir: Path) -> dict[str, str]:
    """A clean environment with a Ray token of its own (RAY_AUTH_TOKEN_PATH) and this venv first on PATH."""
    token = token_dir / "auth_token"
    if not token.is_file():
        token.write_text(secrets.token_hex(32))
    clean = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    return {**clean, "RAY_AUTH_TOKEN_PATH": str(token), "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def command(*args: str, faults: tuple[str, ...] = ()) -> list[str]:
    """The resnas CLI as a command line; `faults` ("loss=nan", "exit_once=FILE") go through tests._faulty."""
    entry = ["tests._faulty", *faults, "--"] if faults else ["resnas.cli"]
    return [sys.executable, "-m", *entry, *args]


def _as_from_a_shell() -> None:
    """In the child: Ctrl-C as a shell leaves it, whatever the test process inherited or was left with
    (an ignored SIGINT is inherited across exec, and Python then never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args: str, env: dict[str, str] | None = None, faults: tuple[str, ...] = (),
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(*args, faults=faults), cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=timeout, env=env or {**os.environ, "OMP_NUM_THREADS": "1"},
                          preexec_fn=_as_from_a_shell)


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(command(*args), cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env or {**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=_as_from_a_shell)


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def trained(out: Path) -> list[dict[str, str]]:
    return [r for r in rows(out) if r["state"] in ("complete", "pruned")]
