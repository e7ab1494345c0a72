"""A run folder belongs to one study: nothing a user does mixes two studies, loses a finished result or
overwrites a file resnas did not write (issue 12's cases, end to end through the CLI)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import torch

from tests._e2e import ROOT, cli, rows, start, trained

# A space of four networks on synthetic data: a candidate trains in about a second.
FOUR_ARCHS = """
input: {resolution: 32, channels: 3, classes: 10}
stem: cifar
stem_width: 16
block: basic
shortcut: identity
order: [post, pre]
stages:
  - {depth: [1, 2], width: 16, stride: 1}
  - {depth: 1, width: 32, stride: 2}
  - {depth: 1, width: 64, stride: 2}
"""


def _args(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    space = tmp_path / "four.yaml"
    if not space.is_file():
        space.write_text(FOUR_ARCHS)
    return ["search", "--space", str(space), "--budget", "100M", "--dataset", "synthetic", "--epochs", "1",
            "--train-samples", "256", "--val-samples", "64", "--sampler", "random", "--trials", "1",
            "--out", str(out), *extra]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (but the study's lock) by its content hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def _one_line_exit_2(res: object, *needles: str) -> None:
    assert res.returncode == 2, res.stdout + res.stderr  # type: ignore[attr-defined]
    err = res.stderr.strip()  # type: ignore[attr-defined]
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_a_second_study_cannot_take_over_a_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = cli(*_args(tmp_path, out))
    assert first.returncode == 0, first.stderr
    before = _snapshot(out)
    # What the refusal of changed settings suggests ("use a new run folder or study name"), in the same folder.
    other = cli(*_args(tmp_path, out, "--epochs", "2", "--study", "other"))
    _one_line_exit_2(other, "--out", "study 'resnas'", "pass a new folder for study 'other'")
    assert _snapshot(out) == before
    again = cli(*_args(tmp_path, out, "--trials", "2"))
    assert again.returncode == 0, again.stderr
    assert len(trained(out)) == 2
    # The export ships the first study's own best trial and its weights.
    best = max(trained(out), key=lambda r: float(r["val_accuracy"]))
    exported = cli("export", str(out), "--out", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    folder = tmp_path / "export" / f"trial_{int(best['number']):04d}"
    kept = torch.load(out / "weights" / f"trial_{int(best['number']):04d}.pt", weights_only=True)
    shipped = torch.load(folder / "weights.pt", weights_only=True)
    # The network's keys, then the input contract's statistics (preprocess.mean, preprocess.std).
    assert set(shipped) == set(kept) | {"preprocess.mean", "preprocess.std"}
    assert all(torch.equal(kept[k], shipped[k]) for k in kept)


def test_a_vanished_or_corrupt_study_is_refused_not_restarted(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli(*_args(tmp_path, out)).returncode == 0
    saved = (out / "study.db").read_bytes()
    before = {k: v for k, v in _snapshot(out).items() if k != "study.db"}
    (out / "study.db").write_bytes(b"")  # `: > study.db`
    emptied = cli(*_args(tmp_path, out))
    _one_line_exit_2(emptied, "study 'resnas'", "is gone", "1 finished trial", "restore the study")
    (out / "study.db").unlink()
    _one_line_exit_2(cli(*_args(tmp_path, out)), "is gone")
    (out / "study.db").write_bytes(saved[:4096] + os.urandom(len(saved) - 4096))  # partly overwritten
    _one_line_exit_2(cli(*_args(tmp_path, out)), "study's storage", "restore it")
    assert {k: v for k, v in _snapshot(out).items() if k != "study.db"} == before
    (out / "study.db").write_bytes(saved)  # restored from the backup: the run goes on
    resumed = cli(*_args(tmp_path, out, "--trials", "2"))
    assert resumed.returncode == 0, resumed.stderr
    assert len(trained(out)) == 2


def test_a_study_replaced_by_another_one_is_refused(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert cli(*_args(tmp_path, first)).returncode == 0
    assert cli(*_args(tmp_path, second, "--seed", "1")).returncode == 0
    before = _snapshot(first)
    (first / "study.db").write_bytes((second / "study.db").read_bytes())
    _one_line_exit_2(cli(*_args(tmp_path, first, "--seed", "1")), "not the study this folder was made by")
    assert {k: v for k, v in _snapshot(first).items() if k != "study.db"} == \
        {k: v for k, v in before.items() if k != "study.db"}


def test_files_a_user_put_in_the_out_folder_are_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    (out / "weights").mkdir(parents=True)
    (out / "trials.csv").write_text("my,own\n1,2\n")
    (out / "weights" / "trial_0000.pt").write_bytes(b"my weights")
    before = _snapshot(out)
    _one_line_exit_2(cli(*_args(tmp_path, out)), "holds trials.csv, weights but no run.json", "new or empty")
    assert _snapshot(out) == before and not (out / "study.db").exists() and not (out / "run.json").exists()
    # Someone else's run.json: refused before any study is created.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "run.json").write_text(json.dumps({"name": "my experiment", "lr": 0.1}))
    _one_line_exit_2(cli(*_args(tmp_path, foreign)), "run.json was not written by resnas")
    assert sorted(p.name for p in foreign.iterdir()) == ["run.json"]
    # --out naming a file.
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    _one_line_exit_2(cli(*_args(tmp_path, blocker)), "is a file")
    assert blocker.read_text() == "mine"


def test_export_never_overwrites_a_users_files_and_replaces_its_own(tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.py").write_text("# my model\n")
    (out / "card.md").write_text("my notes\n")
    refused = cli("export", "--arch", "resnet20", "--out", str(out))
    _one_line_exit_2(refused, "holds model.py, card.md", "will not overwrite")
    assert (out / "model.py").read_text() == "# my model\n" and (out / "card.md").read_text() == "my notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["card.md", "model.py"]
    ours = tmp_path / "ours"
    for name in ("resnet20", "resnet32"):  # an earlier export of resnas's own is replaced
        res = cli("export", "--arch", name, "--out", str(ours))
        assert res.returncode == 0, res.stderr
    assert json.loads((ours / "arch.json").read_text())["stages"][0]["depth"] == 5  # resnet32: 5 blocks a stage
    assert not list(tmp_path.glob(".ours.*"))  # no staging folder left behind


def test_resuming_with_a_lower_keep_top_deletes_no_kept_weights(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = cli(*_args(tmp_path, out, "--trials", "3", "--keep-top", "3"))
    assert res.returncode == 0, res.stderr
    kept = sorted(p.name for p in (out / "weights").glob("*.pt"))
    assert len(kept) == 3
    lower = cli(*_args(tmp_path, out, "--trials", "4", "--keep-top", "1"))
    if lower.returncode == 0:  # nothing to delete: the three are the accuracy/FLOPs Pareto front
        assert sorted(p.name for p in (out / "weights").glob("*.pt"))[:3] == kept
    else:
        _one_line_exit_2(lower, "--keep-top 1 would delete the kept weights of trials", "larger --keep-top")
        assert sorted(p.name for p in (out / "weights").glob("*.pt")) == kept


def test_two_processes_on_one_run_folder_share_the_target_and_never_train_an_arch_twice(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = _args(tmp_path, out, "--trials", "3", "--train-samples", "1024")
    procs = [start(*args), start(*args)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    done = trained(out)
    assert len(done) == 3, rows(out)
    assert len({r["arch"] for r in done}) == 3
    # Both summaries are the study's: the same leaderboard and counts (wall times aside).
    summaries = [_summary(text) for text in outputs]
    assert summaries[0] == summaries[1] and "3 complete" in summaries[0][-1], outputs


def _summary(output: str) -> list[str]:
    """The leaderboard and the counts line of a search's output, without the wall time."""
    lines = output.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("leaderboard"))
    counts = next(line for line in lines if " complete, " in line)
    return [line.rstrip() for line in lines[first:] if line.strip().startswith(("┃", "│"))] + \
        [counts.split("; wall time")[0]]


def test_run_files_are_readable_like_weights_and_a_failed_start_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli(*_args(tmp_path, out)).returncode == 0
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    umask = os.umask(0)
    os.umask(umask)
    assert modes["run.json"] == modes["trials.csv"] == modes["trial_0000.pt"] == 0o666 & ~umask, modes
    assert not [p for p in out.rglob("*.tmp")]
    missing = cli(*_args(tmp_path, tmp_path / "never", "--dataset", "cifar10", "--data-root", str(tmp_path)))
    assert missing.returncode == 2 and not (tmp_path / "never").exists()


def test_the_default_run_folder_does_not_depend_on_how_the_budget_is_spelt(tmp_path: Path) -> None:
    from resnas._commands.search import budget_slug

    assert {budget_slug(4_000_000_000)} == {"4g"} and budget_slug(1_500_000_000) == "1p5g"
    assert budget_slug(600_000_000) == "600m" and budget_slug(12_345) == "12p345k"
    import argparse

    from resnas._commands.search import config_from_args
    from resnas.cli import _parser

    outs = set()
    for spelling in ("4G", "4GFLOPs", "4e9", "4000M", "4 G", "4000000000"):
        ns: argparse.Namespace = _parser().parse_args(["search", "--budget", spelling])
        outs.add(config_from_args(ns).out)
    assert outs == {str(Path("results/runs/resnet_family-4g-fashion-mnist-seed0"))}
    assert (ROOT / "search_spaces" / "resnet_family.yaml").is_file()


def test_what_a_killed_process_left_half_written_is_swept_and_nothing_else(tmp_path: Path) -> None:
    from resnas._runfolder import sweep_temporaries

    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "weights").mkdir()
    stale = [tmp_path / f".trials.csv.{dead.pid}.0a1b2c3d.tmp",
             tmp_path / "weights" / f".trial_0001.pt.{dead.pid}.ffff0000.tmp"]
    live = tmp_path / f".run.json.{os.getpid()}.0a1b2c3d.tmp"  # this process is still writing it
    users = [tmp_path / "notes.tmp", tmp_path / ".my.file.tmp"]
    for p in [*stale, live, *users]:
        p.write_text("x")
    sweep_temporaries(tmp_path)
    assert not any(p.exists() for p in stale) and live.exists() and all(p.exists() for p in users)


def test_export_refuses_when_the_best_trials_weights_are_gone(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli(*_args(tmp_path, out, "--trials", "2")).returncode == 0
    best = max(trained(out), key=lambda r: (float(r["val_accuracy"]), -int(r["flops"])))
    (out / "weights" / f"trial_{int(best['number']):04d}.pt").unlink()
    res = cli("export", str(out), "--out", str(tmp_path / "export"))
    _one_line_exit_2(res, f"the best trial, {best['number']}, has no weights file", "--trial N")
    assert not list((tmp_path / "export").glob("trial_*"))


def test_trials_csv_reads_back_as_the_records_written_and_a_damaged_row_is_named(tmp_path: Path) -> None:
    import pytest

    import resnas
    from resnas._errors import StorageError
    from resnas._runfolder import RunFolder
    from resnas._trial import TrialRecord, TrialState

    arch = resnas.zoo.get("resnet20").to_dict()
    wanted = [
        TrialRecord(0, TrialState.COMPLETE, "resnet20", 0.8125, 41_218_688, 272_474, 40_000_000, 0.4122, 12.5, 2,
                    10_000_000, 1234.5, "host", "", "classic", json.loads(json.dumps(arch)), None),
        TrialRecord(1, TrialState.OVER_BUDGET, "", None, 900_000_000, None, None, 9.0, None, 0, None, None, "",
                    "", "sampler", None),
    ]
    folder = RunFolder(tmp_path)
    folder.write_trials(wanted)
    assert folder.read_trials() == wanted  # every column typed as written (floats at trials.csv's rounding)
    text = (tmp_path / "trials.csv").read_text()
    (tmp_path / "trials.csv").write_text(text.replace("41218688", "41.2M"))
    with pytest.raises(StorageError, match="trial 0 is damaged"):
        folder.read_trials()
    assert folder.finished_trials() == 1  # still counted: a damaged file must not be overwritten as empty
