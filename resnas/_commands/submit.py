"""`resnas submit`: run a search as a Ray Job on a cluster, with this project as the job's working dir."""

from __future__ import annotations

import argparse
import asyncio
import math
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from resnas._errors import UserError

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

# Not shipped with the job: results, weights, caches (Ray skips .git, .venv and .gitignore'd files itself).
EXCLUDES = ["results", "data", "build", "*.egg-info", "*.pt", "__pycache__", ".mypy_cache", ".pytest_cache",
            ".ruff_cache", ".hypothesis"]
# Ray 2.60 deletes the head's copy of a job's working_dir as soon as the job's driver connects to the
# cluster (its workers get a fresh copy): the search runs from a private copy, removed when it ends.
ENTRYPOINT = 'd=$(mktemp -d) && cp -R . "$d" && cd "$d" && {command}; rc=$?; rm -rf "$d"; exit $rc'
# A job's status settles shortly after its log stream ends.
_SETTLE_S = 30.0
# Ray gives the head node this resource: a driver that asks for a sliver of it runs there, where --out is.
HEAD_RESOURCE = "node:__internal_head__"
DRIVER_KEY = "resnas_driver"  # the job's metadata entry recording the driver's reservation, for `jobs status`


def driver_resources(cpus: float, gpus: float) -> dict[str, object]:
    """`submit_job`'s reservation for the search's driver: `cpus` CPUs and `gpus` GPUs on the head node.

    Ray would otherwise run the driver on the head with nothing reserved, so trials could take the CPU that
    samples the next candidates, loads the data and writes the run folder; with a reservation and no pin it
    could land on any node, away from --out.
    """
    for flag, value in (("--driver-cpus", cpus), ("--driver-gpus", gpus)):
        if not (value >= 0 and math.isfinite(value)):
            raise UserError(f"{flag} {value:g}: give a number of at least 0 (0 reserves nothing)")
    return {"entrypoint_num_cpus": cpus, "entrypoint_num_gpus": gpus,
            "entrypoint_resources": {HEAD_RESOURCE: 0.001}, "metadata": {DRIVER_KEY: f"{cpus:g} CPU, {gpus:g} GPU"}}


def project_root() -> Path:
    """The source checkout holding the resnas package, which becomes the job's working dir."""
    import resnas

    root = Path(resnas.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise UserError(f"resnas is installed from a wheel ({root}); `resnas submit` ships the source checkout "
                        "as the job's working dir: run it from a clone (pip install -e .)")
    return root


def _portable(path: str, root: Path) -> str:
    """A path the job can open: relative to the project if inside it (the job runs in a copy), else absolute."""
    full = Path(path).resolve()
    return str(full.relative_to(root)) if full.is_relative_to(root) else str(full)


def _job_command(words: list[str], root: Path) -> list[str]:
    """The `resnas search` words to run on the cluster: paths made valid there, on the Ray backend.

    --out becomes absolute (a relative one would land in the job's temporary copy of the project);
    without --backend and --address the search attaches to the job's cluster (`--backend ray --address auto`).
    """
    from resnas._budget import parse_budget
    from resnas._commands.search import _default_out, add_search_flags
    from resnas.cli import _Parser

    # No abbreviated flags: the paths below are found by their full names.
    parser = _Parser(prog="resnas submit -- search", allow_abbrev=False)
    add_search_flags(parser)
    args = parser.parse_args(words)  # bad flags fail here, not minutes later on the cluster
    paths = {"--out": lambda p: str(Path(p).resolve()), "--space": lambda p: _portable(p, root),
             "--data-root": lambda p: str(Path(p).resolve()),
             "--storage-path": lambda p: p if "://" in p else str(Path(p).resolve()),
             "--data-cache": lambda p: str(Path(p).resolve())}
    out: list[str] = []
    rest = iter(words)
    for word in rest:
        flag, eq, value = word.partition("=")
        if flag in paths and eq:
            out.append(f"{flag}={paths[flag](value)}")
        elif word in paths:
            out += [word, paths[word](next(rest))]
        else:
            out.append(word)
    if args.out is None:
        out += ["--out", str(Path(_default_out(args, parse_budget(args.budget))).resolve())]
    backend_given = any(w == "--backend" or w.startswith("--backend=") for w in words)
    if not backend_given:
        out += ["--backend", "ray"]
    if args.address is None and (args.backend == "ray" or not backend_given):
        out += ["--address", "auto"]
    return ["search", *out]


def follow(client: JobSubmissionClient, job_id: str) -> int:
    """Stream a job's output until it ends; 0 if it succeeded."""
    from ray.job_submission import JobStatus

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        print(f"resnas: stopped following; job {job_id} keeps running (resnas jobs stop {job_id})", file=sys.stderr)
        return 130
    deadline = time.monotonic() + _SETTLE_S
    while not (status := client.get_job_status(job_id)).is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5)
    print(f"resnas: job {job_id} {status.value.lower()}", file=sys.stderr)
    return 0 if status == JobStatus.SUCCEEDED else 1


def _run(args: argparse.Namespace) -> int:
    from resnas._ray import job_client

    words = args.command[1:] if args.command[:1] == ["--"] else args.command
    if words[:1] != ["search"]:
        raise UserError("resnas submit runs a search: resnas submit [--address http://HEAD:8265] [--follow] -- "
                        "search --budget ... [search flags]")
    root = project_root()
    command = _job_command(words[1:], root)
    resources = driver_resources(args.driver_cpus, args.driver_gpus)
    with job_client(args.address) as client:
        job_id = client.submit_job(
            entrypoint=ENTRYPOINT.format(command=shlex.join(["python", "-m", "resnas.cli", *command])),
            runtime_env={"working_dir": str(root), "excludes": EXCLUDES},
            **resources,  # type: ignore[arg-type]
        )
        print(job_id)
        print(f"resnas: submitted `resnas {shlex.join(command)}` as Ray job {job_id}; follow it with "
              f"`resnas jobs logs {job_id} --follow`", file=sys.stderr)
        return follow(client, job_id) if args.follow else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "submit", help="run a search as a Ray Job on a cluster",
        description="Submit `resnas search` as a Ray Job (needs ray[default]: pip install 'resnas[cluster]'). "
                    "The project folder is the job's working dir; the search runs on the Ray backend, attached to "
                    "the job's cluster, and writes to --out on the head node (made absolute here).",
    )
    p.add_argument("--address", help="the cluster's job server, the head's dashboard: http://HEAD:8265 "
                                      "(default: $RAY_ADDRESS, else the cluster started on this machine)")
    p.add_argument("--follow", action="store_true", help="stream the job's output until it ends; exit 0 if it "
                                                          "succeeded")
    p.add_argument("--driver-cpus", type=float, default=1.0,
                   help="CPUs reserved on the head node for the search's driver, which samples candidates, "
                        "loads the data and writes --out (default 1; 0 for a head started with --num-cpus=0, "
                        "where a job asking for a CPU would wait forever)")
    p.add_argument("--driver-gpus", type=float, default=0.0, help="GPUs reserved for the driver (default 0)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- search <search flags>")
    p.set_defaults(func=_run)
