"""`resnas search --backend ray`, `resnas submit` and `resnas jobs`: locally, on a two-node cluster, under faults.

The cluster tests start their own Ray cluster on this machine (a head with the dashboard and a second node,
one CPU each, on free ports) and stop exactly the processes they started. A token in a temporary file
(RAY_AUTH_TOKEN_PATH) turns Ray's token authentication on for that cluster without touching ~/.ray, so the
explicit HOST:PORT and dashboard addresses are tested the way they behave once a machine has a token.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import torch

from resnas._config import Backend, SearchConfig
from resnas._errors import ConfigError
from resnas.cli import message
from tests._e2e import BIN, ROOT, SPACE, rows, trained
from tests._e2e import cli as _cli

# A few hundred real images, one epoch, quarter-width proxy: seconds per candidate on 2 cores.
SMALL = ["--space", SPACE, "--budget", "100M", "--epochs", "1", "--train-samples", "200", "--val-samples", "100",
         "--batch-size", "64", "--proxy-width", "0.25"]
# Two epochs (so a trial can resume from the first) and no early stopping (so both always run).
TWO_EPOCHS = [*SMALL[:SMALL.index("--epochs")], "--epochs", "2", *SMALL[SMALL.index("--epochs") + 2:], "--pruner",
              "none"]


@pytest.fixture(scope="module")
def env(ray_env: dict[str, str]) -> dict[str, str]:
    return ray_env


def cli(env: dict[str, str], *args: str, faults: tuple[str, ...] = (),
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return _cli(*args, env=env, faults=faults, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    address: str  # the GCS, for --address
    dashboard: str  # the job server, for resnas submit / jobs


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"`ray start` did not get to {text!r}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


def node_flags() -> list[str]:
    """Each node's own ports: two nodes on one machine cannot share Ray's defaults."""
    ports = ("node-manager", "object-manager", "metrics-export", "runtime-env-agent", "dashboard-agent-listen",
             "dashboard-agent-grpc")
    return ["--block", "--num-cpus=1", "--num-gpus=0", "--object-store-memory=150000000",
            *(f"--{name}-port={free_port()}" for name in ports)]


@pytest.fixture(scope="module")
def cluster(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A head node (with the dashboard) and a second node, one CPU each, stopped by their process ids."""
    logs = tmp_path_factory.mktemp("cluster")
    # Ray's socket paths must stay short: a temp dir of our own under /tmp, not pytest's long one.
    temp_dir = tempfile.mkdtemp(prefix="rn-", dir="/tmp")
    gcs, dashboard = free_port(), free_port()

    head_cmd = [str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--include-dashboard=true",
                "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                f"--ray-client-server-port={free_port()}", f"--temp-dir={temp_dir}", *node_flags()]
    node_cmd = [str(BIN / "ray"), "start", f"--address=127.0.0.1:{gcs}", *node_flags()]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, cmd in (("head", head_cmd), ("node", node_cmd)):
            log = logs / f"{name}.log"
            with open(log, "wb") as f:
                # A node joining an explicit address does not turn token auth on by itself (see README).
                procs.append(subprocess.Popen(cmd, env={**env, "RAY_AUTH_MODE": "token"}, stdout=f,
                                              stderr=subprocess.STDOUT))
            _wait_for(log, "block forever", procs[-1], timeout=180)
        yield Cluster(address=f"127.0.0.1:{gcs}", dashboard=f"http://127.0.0.1:{dashboard}")
    finally:
        # `ray start --block` stops the processes it started on SIGTERM (not `ray stop`: it stops every cluster).
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


# -- fast checks -----------------------------------------------------------------------------------


def test_ray_flags_need_the_ray_backend_and_sane_values() -> None:
    base = {"space": SPACE, "budget": 10**8, "out": "x"}
    cases = [({"address": "auto"}, "--address needs the ray backend"),
             ({"max_concurrent": 2}, "--max-concurrent needs the ray backend"),
             ({"backend": Backend.RAY, "gpus_per_trial": 2}, "--gpus-per-trial must be in [0, 1]"),
             ({"backend": Backend.RAY, "cpus_per_trial": 0}, "--cpus-per-trial must be positive"),
             ({"backend": Backend.RAY, "address": "http://head:8265"}, "is a dashboard URL")]
    for settings, wording in cases:
        with pytest.raises(ConfigError) as raised:
            SearchConfig(**base, **settings)  # type: ignore[arg-type]
        assert wording in message(raised.value)  # the CLI's wording of the field at fault
        assert "--" not in str(raised.value)  # the library's own message names the field, not a flag
    assert SearchConfig(**base, backend="ray", gpus_per_trial=0.5).backend is Backend.RAY


def test_importing_resnas_and_its_cli_does_not_import_ray() -> None:
    code = ("import sys, resnas, resnas._search, resnas.cli; resnas.cli._parser(); "
            "print('ray' in sys.modules or 'optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_training_resumed_from_a_checkpoint_ends_as_the_uninterrupted_run() -> None:
    import io

    from resnas import build, zoo
    from resnas._data import load_data
    from resnas._train import TrainConfig, train_candidate

    arch = zoo.get("resnet20").narrowed(0.25).replace(dropout=0.2)  # dropout: the global RNG is restored too
    data = load_data("fashion-mnist", train_samples=128, val_samples=64, resolution=32)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, seed=1)
    cpu = torch.device("cpu")

    def fresh() -> torch.nn.Module:
        torch.manual_seed(1)
        return build(arch, num_classes=10, in_channels=1)

    straight = fresh()
    whole = train_candidate(straight, data, cfg, device=cpu)
    saved = io.BytesIO()

    def keep_first_epoch(state: dict[str, object]) -> None:
        if len(state["history"]) == 1:  # type: ignore[arg-type]
            torch.save(state, saved)

    train_candidate(fresh(), data, cfg, device=cpu, on_checkpoint=keep_first_epoch)
    state = torch.load(io.BytesIO(saved.getvalue()), weights_only=True)
    torch.manual_seed(99)  # a different initialisation, overwritten by the checkpoint
    resumed = build(arch, num_classes=10, in_channels=1)
    rest = train_candidate(resumed, data, cfg, device=cpu, resume=state)
    assert rest.history == whole.history
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_submit_makes_paths_valid_on_the_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from resnas._commands.submit import _job_command

    monkeypatch.chdir(tmp_path)
    words = _job_command(["--space", SPACE, "--budget", "1G", "--out=runs/a"], ROOT)
    assert words == ["search", "--space", "search_spaces/cifar_family.yaml", "--budget", "1G",
                     f"--out={tmp_path / 'runs' / 'a'}", "--backend", "ray", "--address", "auto"]
    words = _job_command(["--budget", "1G", "--backend", "ray", "--address", "10.0.0.1:6379"], ROOT)
    assert words[-4:-2] == ["--address", "10.0.0.1:6379"] and words[-2] == "--out"
    assert Path(words[-1]).is_absolute()
    with pytest.raises(SystemExit):  # abbreviations would hide --out from the rewrite
        _job_command(["--budget", "1G", "--ou", "x"], ROOT)


def test_submit_refuses_a_negative_driver_reservation(env: dict[str, str]) -> None:
    result = cli(env, "submit", "--driver-cpus", "-1", "--", "search", "--budget", "1G")
    assert result.returncode == 2
    assert result.stderr == "resnas: error: --driver-cpus -1: give a number of at least 0 (0 reserves nothing)\n"


def test_jobs_without_ray_default_name_the_extra(env: dict[str, str]) -> None:
    # aiohttp stands for ray[default]'s packages: None in sys.modules makes importing it fail.
    code = "import sys; sys.modules['aiohttp'] = None; from resnas.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", code, "jobs", "status", "raysubmit_x"], cwd=ROOT,
                            capture_output=True, text=True, check=False, env=env, timeout=120)
    assert result.returncode == 2
    assert "pip install 'resnas[cluster]'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# -- a local Ray instance ----------------------------------------------------------------------------


@pytest.mark.slow
def test_local_ray_search_is_the_optuna_search(env: dict[str, str], tmp_path: Path) -> None:
    """Same flags, both backends: the same folder layout and, one trial at a time, the same trials."""
    outs = {backend: tmp_path / backend for backend in ("optuna", "ray")}
    # One trial at a time, Ray's sampler sees the same history at each ask as the Optuna loop's does.
    flags = {"optuna": [], "ray": ["--backend", "ray", "--max-concurrent", "1"]}
    for backend, out in outs.items():
        # Four: the three queued first trials (one per shortcut kind) and one the sampler proposes.
        result = cli(env, "search", *SMALL, "--trials", "4", "--out", str(out), *flags[backend])
        assert result.returncode == 0, result.stderr
        assert "leaderboard" in result.stdout
    assert "local Ray instance" in result.stdout
    optuna_run, ray_run = outs["optuna"], outs["ray"]
    assert sorted(p.name for p in ray_run.iterdir()) == sorted(p.name for p in optuna_run.iterdir())
    assert not (ray_run / "ray").exists()  # Tune's state is removed once the search is done
    for folder in ("best", "weights"):
        assert sorted(p.name for p in (ray_run / folder).iterdir()) == \
               sorted(p.name for p in (optuna_run / folder).iterdir())
    assert rows(ray_run)[0].keys() == rows(optuna_run)[0].keys()
    assert len(trained(ray_run)) == 4
    for r in rows(ray_run):
        if r["state"] == "over_budget":
            assert int(r["flops"]) > 100_000_000 and r["val_accuracy"] == "" and r["epochs"] == "0"
        else:
            assert r["state"] == "complete" and r["epochs"] == "1" and r["node"] and r["train_flops"]
    # The same seed, the same samples, trained with the same seeds: the same candidates and results.
    same = ("number", "state", "val_accuracy", "flops", "arch", "trained_arch")
    assert [{k: r[k] for k in same} for r in rows(ray_run)] == [{k: r[k] for k in same} for r in rows(optuna_run)]
    weights = [torch.load(run / "best" / "weights.pt", weights_only=True) for run in (ray_run, optuna_run)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    exported = cli(env, "export", str(ray_run), "--out", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    assert any((tmp_path / "export").rglob("weights.pt"))


# -- a two-node cluster ----------------------------------------------------------------------------


@pytest.mark.slow
def test_search_on_a_two_node_cluster_uses_both_nodes(env: dict[str, str], cluster: Cluster,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli(env, "search", *SMALL, "--trials", "3", "--out", str(out), "--backend", "ray",
                 "--address", cluster.address)
    assert result.returncode == 0, result.stderr
    assert f"Ray cluster at {cluster.address}: 2 node(s), 2 CPUs" in result.stdout
    done = trained(out)
    assert len(done) == 3
    assert len({r["node"] for r in done}) == 2


@pytest.mark.slow
def test_gpus_the_cluster_lacks_fail_at_start(env: dict[str, str], cluster: Cluster, tmp_path: Path) -> None:
    result = cli(env, "search", *SMALL, "--out", str(tmp_path / "run"), "--backend", "ray", "--address",
                 cluster.address, "--gpus-per-trial", "1")
    assert result.returncode == 2
    assert result.stderr.startswith("resnas: error: --gpus-per-trial 1: the Ray cluster has 0 GPUs")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "trials.csv").exists()


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_retried_from_its_checkpoint(env: dict[str, str], cluster: Cluster,
                                                                  tmp_path: Path) -> None:
    out, marker = tmp_path / "run", tmp_path / "fault-marker"
    result = cli(env, "search", *TWO_EPOCHS, "--trials", "2", "--out", str(out), "--backend", "ray", "--address",
                 cluster.address, faults=(f"exit_once={marker}",))
    assert result.returncode == 0, result.stderr
    assert marker.is_file()  # the hook did kill a worker
    assert "retrying from its last checkpoint (retry 1 of 2)" in result.stdout
    assert [r["state"] for r in rows(out) if r["state"] != "over_budget"] == ["complete", "complete"]
    assert all(r["epochs"] == "2" for r in trained(out))
    study = optuna.load_study(study_name="resnas", storage=f"sqlite:///{out / 'study.db'}")
    resumed = [t.number for t in study.trials if t.user_attrs.get("resumed_from_epoch") == 1]
    assert len(resumed) == 1
    assert [r["reason"] for r in rows(out) if r["number"] == str(resumed[0])] == \
           ["its worker died; resumed from its epoch 1 checkpoint"]


@pytest.mark.slow
def test_a_killed_driver_is_resumed_by_the_same_command(env: dict[str, str], cluster: Cluster,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["search", *TWO_EPOCHS, "--trials", "3", "--train-samples", "300", "--out", str(out), "--backend", "ray",
            "--address", cluster.address]
    proc = subprocess.Popen([sys.executable, "-m", "resnas.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    before: list[dict[str, str]] = []
    while time.monotonic() < deadline and proc.poll() is None and not before:
        time.sleep(0.2)
        if (out / "trials.csv").is_file():
            before = [r for r in rows(out) if r["state"] == "complete"]
    assert before, "no trial finished in time"
    proc.send_signal(signal.SIGKILL)  # right after a trial finished, with others running
    proc.wait()
    assert (out / "ray" / "tune").is_dir()  # the dead driver's Tune experiment: replaced by the rerun
    rerun = cli(env, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {len(before)} of 3 candidates already trained" in rerun.stdout
    after = rows(out)
    assert len(trained(out)) == 3  # none lost, none counted twice
    assert not [r for r in after if r["state"] in ("running", "failed")]
    by_number = {r["number"]: r for r in after}
    for r in before:  # finished trials are untouched
        assert by_number[r["number"]] == r
    # Trials the dead driver was running were cut off: retried under new numbers and trained, or, where the
    # target was reached first, still queued. A trial cut off while its parameters were being drawn had no
    # architecture yet (its parameters are partial): it is marked interrupted and not retried.
    study = optuna.load_study(study_name="resnas", storage=f"sqlite:///{out / 'study.db'}")
    retried = {t.user_attrs.get("retry_of") for t in study.trials if t.user_attrs.get("state") in ("complete", "pruned")}
    queued = {t.user_attrs.get("retry_of") for t in study.trials if t.state is optuna.trial.TrialState.WAITING}
    cut = {int(r["number"]) for r in after if r["state"] == "interrupted"}
    interrupted = {n for n in cut if by_number[str(n)]["arch"]}
    assert all("before it had an architecture" in by_number[str(n)]["reason"] for n in cut - interrupted)
    assert interrupted <= retried | queued
    assert len(interrupted & retried) == min(len(interrupted), 3 - len(before))  # the retries went first
    assert not (out / "ray").exists()


@pytest.mark.slow
def test_submit_runs_a_search_as_a_ray_job(env: dict[str, str], cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    submitted = cli(env, "submit", "--address", cluster.dashboard, "--follow", "--", "search", *SMALL,
                    "--trials", "2", "--out", str(out))
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr
    job_id = submitted.stdout.splitlines()[0]
    assert job_id.startswith("raysubmit_")
    assert "Ray cluster at auto: 2 node(s)" in submitted.stdout and "leaderboard" in submitted.stdout
    assert len(trained(out)) == 2
    status = cli(env, "jobs", "status", job_id, "--address", cluster.dashboard)
    assert status.returncode == 0 and f"{job_id}: succeeded" in status.stdout
    # The driver held the head's one CPU (the default --driver-cpus 1), so both trials ran on the other node.
    assert "driver: 1 CPU, 0 GPU reserved on the head node" in status.stdout
    assert len({r["node"] for r in trained(out)}) == 1
    logs = cli(env, "jobs", "logs", job_id, "--address", cluster.dashboard)
    assert logs.returncode == 0 and "leaderboard" in logs.stdout
    unknown = cli(env, "jobs", "stop", "raysubmit_nonesuch", "--address", cluster.dashboard)
    assert unknown.returncode == 2 and unknown.stderr.startswith("resnas: error: raysubmit_nonesuch")


def test_trials_get_a_gpu_each_by_default_where_the_cluster_has_gpus() -> None:
    from resnas._config import SearchConfig
    from resnas._errors import ConfigError
    from resnas._ray import trial_resources

    def cfg(**kw: object) -> SearchConfig:
        return SearchConfig(space=SPACE, budget=10**8, out="x", backend="ray", **kw)  # type: ignore[arg-type]

    cpu_only = [{"CPU": 16.0}, {"CPU": 8.0}]
    gpu_nodes = [{"CPU": 16.0, "GPU": 8.0}, {"CPU": 8.0}]  # Ray's per-node resource dicts
    assert trial_resources(cfg(), cpu_only) == (1.0, 0.0, "cpu")
    assert trial_resources(cfg(), gpu_nodes) == (1.0, 1.0, "cuda")
    assert trial_resources(cfg(gpus_per_trial=0.25, cpus_per_trial=2.0), gpu_nodes) == (2.0, 0.25, "cuda")
    assert trial_resources(cfg(gpus_per_trial=0.0), gpu_nodes) == (1.0, 0.0, "cpu")
    assert trial_resources(cfg(device="cpu"), gpu_nodes) == (1.0, 0.0, "cpu")
    assert trial_resources(cfg(device="cuda"), gpu_nodes) == (1.0, 1.0, "cuda")
    for bad, nodes, words in ((cfg(device="cuda"), cpu_only, "a cluster without GPUs"),
                              (cfg(device="cpu", gpus_per_trial=1.0), gpu_nodes, "drop one of them"),
                              (cfg(device="cuda", gpus_per_trial=0.0), gpu_nodes, "0 GPUs per trial")):
        with pytest.raises(ConfigError, match=words):
            trial_resources(bad, nodes)


# Runs in its own interpreter: two Ray actors (two worker processes) each map the search's data from the
# object store and report which file and offset its pixels live at (/proc/self/maps).
_SHARED_SCRIPT = r"""
import json, os, sys
import ray, torch
from resnas._data import load_data

def backing(t):
    ptr = t.data_ptr()
    for line in open("/proc/self/maps"):
        parts = line.split()
        start, end = (int(v, 16) for v in parts[0].split("-"))
        if start <= ptr < end:
            return {"inode": int(parts[4]), "dev": parts[3], "file_offset": ptr - start + int(parts[2], 16),
                    "path": parts[5] if len(parts) > 5 else ""}
    raise LookupError(ptr)

@ray.remote(num_cpus=0)
class Trial:
    def read(self, data):
        return {"pid": os.getpid(), "train": backing(data.train_x), "val": backing(data.val_x),
                "sum": int(data.train_x.sum()), "labels": data.train_y.tolist()}

data = load_data("synthetic", train_samples=600, val_samples=200)
ray.init(address="local", include_dashboard=False, num_cpus=2, object_store_memory=80_000_000)
ref = ray.put(data)  # what tune.with_parameters does with the search's data
seen = ray.get([t.read.remote(ref) for t in (Trial.remote(), Trial.remote())])
print(json.dumps({"seen": seen, "sum": int(data.train_x.sum()), "labels": data.train_y.tolist()}))
"""


def test_trials_on_one_node_share_one_copy_of_the_data(env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-c", _SHARED_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    report = json.loads(result.stdout.strip().splitlines()[-1])
    first, second = report["seen"]
    assert first["pid"] != second["pid"]  # two worker processes
    for split in ("train", "val"):
        # The same page of the same shared-memory file in both, not a private copy each (inode 0: anonymous).
        assert first[split]["inode"] != 0, first[split]
        assert first[split] == second[split]
    for seen in (first, second):
        assert seen["sum"] == report["sum"] and seen["labels"] == report["labels"]


@pytest.mark.slow
def test_a_storage_path_a_node_cannot_see_is_refused_before_any_trial(env: dict[str, str], cluster: Cluster,
                                                                      tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    # A third node in a mount namespace of its own, where a tmpfs hides the storage path: a machine without it.
    hide = f'mount -t tmpfs none "{storage}" && exec "$0" "$@"'
    cmd = ["unshare", "-m", "sh", "-c", hide, str(BIN / "ray"), "start", f"--address={cluster.address}",
           *node_flags()]
    log = tmp_path / "blind.log"
    with open(log, "wb") as f:
        node = subprocess.Popen(cmd, env={**env, "RAY_AUTH_MODE": "token"}, stdout=f, stderr=subprocess.STDOUT)
    try:
        _wait_for(log, "block forever", node, timeout=180)
        out = tmp_path / "run"
        result = cli(env, "search", *SMALL, "--out", str(out), "--backend", "ray", "--address", cluster.address,
                     "--storage-path", str(storage))
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith(f"resnas: error: --storage-path {storage} is not visible from 1 of the "
                                        "cluster's 3 nodes"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not (out / "trials.csv").exists()
        assert not list(storage.iterdir())  # the probe cleaned up after itself
    finally:
        node.terminate()
        node.wait(timeout=90)


@pytest.mark.slow
def test_a_node_without_resnas_runs_trials_with_the_drivers_copy(env: dict[str, str], cluster: Cluster,
                                                                 tmp_path: Path) -> None:
    import resnas

    package = Path(resnas.__file__).resolve().parent
    # A third node, the only one with 2 CPUs, in a mount namespace where an empty tmpfs hides the resnas package
    # this venv's editable install points at: a machine with Python, torch and Ray but no resnas.
    hide = f'mount -t tmpfs none "{package}" && exec "$0" "$@"'
    cmd = ["unshare", "-m", "sh", "-c", hide, str(BIN / "ray"), "start", f"--address={cluster.address}",
           *node_flags()]
    cmd[cmd.index("--num-cpus=1")] = "--num-cpus=2"
    log = tmp_path / "bare.log"
    with open(log, "wb") as f:
        node = subprocess.Popen(cmd, env={**env, "RAY_AUTH_MODE": "token"}, stdout=f, stderr=subprocess.STDOUT)
    try:
        _wait_for(log, "block forever", node, timeout=180)
        probe = subprocess.run(["unshare", "-m", "sh", "-c", hide + " -c 'import resnas._data'",
                                sys.executable], capture_output=True, text=True, check=False)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr  # resnas is really missing there
        out = tmp_path / "run"
        # Two CPUs per trial: only the bare node can run them.
        result = cli(env, "search", *SMALL, "--trials", "2", "--out", str(out), "--backend", "ray",
                     "--address", cluster.address, "--cpus-per-trial", "2")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr
        done = trained(out)
        assert len(done) == 2 and len({r["node"] for r in done}) == 1
    finally:
        node.terminate()
        node.wait(timeout=90)
