"""`resnas sweep`: an unbiased sample per budget (random, unpruned, no classics or openings), resumable."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from tests._e2e import SPACE, cli, rows

TINY = ["--space", SPACE, "--dataset", "synthetic", "--epochs", "2", "--train-samples", "64", "--val-samples", "32",
        "--batch-size", "32", "--proxy-width", "0.25"]


def test_a_sweep_trains_n_random_fitting_architectures_per_budget_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    res = cli("sweep", *TINY, "--budget", "400M,200M,400000000", "--samples", "2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["runs"] == ["200m", "400m"] and sweep["budgets"] == [200_000_000, 400_000_000]
    assert sweep["samples"] == 2 and "resnas analyze" in res.stdout
    for name, budget in zip(sweep["runs"], sweep["budgets"]):
        run = out / name
        settings = json.loads((run / "run.json").read_text())["settings"]
        assert (settings["sampler"], settings["pruner"], settings["classics"]) == ("random", "none", False)
        table = rows(run)
        done = [r for r in table if r["state"] == "complete"]
        # Trained to the end (no pruning), none queued first: every trained one is a sampler's draw.
        assert len(done) == 2 and all(r["epochs"] == "2" and not r["name"] for r in done)
        assert all(int(r["flops"]) <= budget for r in done)
        assert {r["state"] for r in table} <= {"complete", "over_budget", "duplicate"}
        study = optuna.load_study(study_name="resnas", storage=f"sqlite:///{run / 'study.db'}")
        assert not [t for t in study.trials if {"classic", "stratified_start"} & t.user_attrs.keys()]
    more = cli("sweep", *TINY, "--budget", "200M,400M", "--samples", "3", "--out", str(out))
    assert more.returncode == 0, more.stderr
    assert [len([r for r in rows(out / n) if r["state"] == "complete"]) for n in ("200m", "400m")] == [3, 3]


@pytest.mark.parametrize("args, message", [
    (["--budget", "4potatoes,1G"], "invalid FLOP budget '4potatoes'"),
    (["--budget", ","], "--budget names no budget"),
    (["--budget", "400M,1K"], "no architecture in the space fits the budget"),
    (["--budget", "400M", "--samples", "0"], "--samples must be at least 1"),
])
def test_bad_sweeps_are_one_line_and_leave_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "sweep"
    res = cli("sweep", *TINY, "--out", str(out), *args)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_sweep_folder_is_not_mixed_with_another_space_or_a_users_files(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    res = cli("sweep", *TINY, "--budget", "400M", "--samples", "1", "--out", str(mine))
    assert res.returncode == 2 and "holds no sweep.json" in res.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    out = tmp_path / "sweep"
    assert cli("sweep", *TINY, "--budget", "400M", "--samples", "1", "--out", str(out)).returncode == 0
    other = tmp_path / "resnet_family.yaml"
    other.write_text(Path(SPACE).read_text())
    res = cli("sweep", *TINY, "--space", str(other), "--budget", "400M", "--samples", "1", "--out", str(out))
    assert res.returncode == 2 and "is a sweep of" in res.stderr


def test_a_runs_study_opens_in_optuna_dashboard_with_its_costs_and_kinds(tmp_path: Path) -> None:
    import io
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    out = tmp_path / "sweep"
    assert cli("sweep", *TINY, "--budget", "400M", "--samples", "1", "--out", str(out)).returncode == 0
    app = wsgi(f"sqlite:///{out / '400m' / 'study.db'}")  # what `optuna-dashboard sqlite:///...` serves

    def get(path: str) -> dict:
        environ: dict = {"PATH_INFO": path, "wsgi.input": io.BytesIO()}
        setup_testing_defaults(environ)
        status: list[str] = []
        body = b"".join(app(environ, lambda s, headers, exc=None: status.append(s)))
        assert status[0].startswith("200"), (path, status)
        return json.loads(body)

    studies = get("/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["resnas"]
    trials = get(f"/api/studies/{studies[0]['study_id']}")["trials"]
    complete = [t for t in trials if t["state"] == "Complete"]
    assert len(complete) == 1
    attrs = {a["key"]: a["value"] for a in complete[0]["user_attrs"]}
    row = next(r for r in rows(out / "400m") if r["state"] == "complete")
    assert attrs["flops"] == row["flops"] and attrs["params"] == row["params"]
    assert attrs["shortcut"] == json.loads(row["arch"])["shortcut"] and attrs["order"] in ("pre", "post")
