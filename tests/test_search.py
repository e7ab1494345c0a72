"""`resnas search` end to end through the CLI on a small slice of real Fashion-MNIST, plus its parts."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml

import resnas
from resnas._config import SearchConfig
from resnas._errors import ConfigError
from resnas._lifecycle import check_budget_is_feasible
from resnas._proposals import screen
from resnas._trial import TrialRecord
from tests._e2e import ROOT, SPACE, cli, rows, start, trained

BUDGET = 50_000_000
# A few hundred real images, one epoch, quarter-width proxy: seconds per candidate on 2 cores.
SMALL = ["--space", SPACE, "--budget", "50M", "--epochs", "1", "--train-samples", "256", "--val-samples", "128",
         "--batch-size", "64", "--proxy-width", "0.25"]
Backend = tuple[list[str], dict[str, str]]  # the `backend` fixture: a backend's flags and environment


def test_search_end_to_end_and_resume(tmp_path: Path, backend: Backend) -> None:
    flags, env = backend
    out = tmp_path / "run"
    first = cli("search", *SMALL, *flags, "--trials", "2", "--out", str(out), env=env)
    assert first.returncode == 0, first.stderr
    assert "leaderboard" in first.stdout and "over-budget samples" in first.stdout
    table = rows(out)
    for column in ("number", "state", "val_accuracy", "flops", "params", "macs", "budget_fraction", "duration_s",
                   "arch", "node"):
        assert column in table[0]
    done = trained(out)
    assert len(done) == 2
    for r in done:
        arch = resnas.Arch.from_json(r["arch"])
        cost = resnas.count(arch, resolution=32, num_classes=10, in_channels=3)  # the space's deployment input
        assert int(r["flops"]) == cost.flops <= BUDGET
        assert float(r["budget_fraction"]) == pytest.approx(cost.flops / BUDGET, abs=1e-4)
        assert 0.0 <= float(r["val_accuracy"]) <= 1.0
    # Over-budget samples are listed with their FLOPs but were never trained.
    for r in table:
        if r["state"] == "over_budget":
            assert int(r["flops"]) > BUDGET and r["val_accuracy"] == "" and r["epochs"] == "0"
    # best/ holds the best trained network: its weights load into the network that was trained.
    run = json.loads((out / "run.json").read_text())
    best = json.loads((out / "best" / "trial.json").read_text())
    assert float(best["val_accuracy"]) == max(float(r["val_accuracy"]) for r in done if r["state"] == "complete")
    trained_arch = resnas.Arch.from_dict(json.loads((out / "best" / "trained_arch.json").read_text()))
    assert trained_arch == resnas.Arch.from_dict(json.loads((out / "best" / "arch.json").read_text())).narrowed(0.25)
    model = resnas.build(trained_arch, num_classes=run["training_input"]["classes"],
                         in_channels=run["training_input"]["channels"])
    model.load_state_dict(torch.load(out / "best" / "weights.pt", weights_only=True), strict=True)
    assert (out / "accuracy_vs_flops.png").stat().st_size > 10_000
    assert run["training_input"] == {"resolution": 32, "channels": 1, "classes": 10}
    assert run["proxy_width"] == 0.25 and run["settings"]["epochs"] == 1

    # The same command with a larger --trials continues the study: no trial repeated, none lost.
    again = cli("search", *SMALL, *flags, "--trials", "4", "--out", str(out), env=env)
    assert again.returncode == 0, again.stderr
    assert "resuming: 2 of 4" in again.stdout
    after = rows(out)
    assert len(trained(out)) == 4
    numbers = [int(r["number"]) for r in after]
    assert len(numbers) == len(set(numbers))
    # A new study starts with one fitting architecture per shortcut kind (the third waited in the queue).
    first_three = sorted(after, key=lambda r: int(r["number"]))[:3]
    assert [resnas.Arch.from_json(r["arch"]).shortcut.value for r in first_three] == ["identity", "gated", "dense"]
    assert all(r["state"] in ("complete", "pruned") for r in first_three)
    # Then the cheapest classic at about half its FLOPs (He et al.'s ResNet-20 with a third of its depth).
    fourth = sorted(trained(out), key=lambda r: int(r["number"]))[3]
    assert fourth["origin"] == "scaled resnet20@d0.33" and fourth["name"] == ""
    assert int(fourth["flops"]) <= 0.6 * int(first_three[0]["flops"]) and first_three[0]["name"] == "resnet20"
    assert [s.depth for s in resnas.Arch.from_json(fourth["arch"]).stages] == [1, 1, 1]
    before = {r["number"]: r for r in table}
    for r in after:
        if r["number"] in before:
            assert r == before[r["number"]]  # finished trials are untouched
    # Resuming with other settings would mix incomparable trials: refused.
    other = cli("search", *SMALL[:-2], "--proxy-width", "0.5", *flags, "--trials", "3", "--out", str(out), env=env)
    assert other.returncode == 2 and "other settings" in other.stderr and "proxy_width" in other.stderr


def _training(proc: subprocess.Popen[str], db: Path) -> bool:
    """Wait (up to 5 minutes) until a trial of the search `proc` is training; False if none did."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if db.is_file():
            try:
                with sqlite3.connect(db) as con:
                    if con.execute("select count(*) from trials t join trial_user_attributes a "
                                   "on t.trial_id = a.trial_id where t.state = 'RUNNING' "
                                   "and a.key = 'worker'").fetchone()[0]:
                        return True
            except sqlite3.OperationalError:  # Optuna is still creating the schema
                pass
    return False


def test_sigkill_mid_trial_then_rerun_completes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["search", *SMALL, "--trials", "2", "--out", str(out), "--train-samples", "2048"]
    proc = start(*args)
    assert _training(proc, out / "study.db"), "no trial started training in time"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "cut off by a dead process" in rerun.stdout
    table = rows(out)
    interrupted = [r for r in table if r["state"] == "interrupted"]
    assert len(interrupted) == 1 and "died" in interrupted[0]["reason"]
    assert len(trained(out)) == 2
    # The cut-off architecture was retried, not dropped.
    retried = json.loads(interrupted[0]["arch"])
    assert any(json.loads(r["arch"]) == retried for r in trained(out))


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["search", *SMALL, "--trials", "1", "--out", str(out), "--train-samples", "4096"]
    proc = start(*args)
    assert _training(proc, out / "study.db"), "no trial started training in time"
    time.sleep(1)  # into its first epoch
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "rerun the same command to continue" in output and "Traceback" not in output
    interrupted = [r for r in rows(out) if r["state"] == "interrupted"]
    assert len(interrupted) == 1 and "Ctrl-C" in interrupted[0]["reason"]
    rerun = cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert [json.loads(r["arch"]) for r in trained(out)] == [json.loads(interrupted[0]["arch"])]  # retried


def test_nan_candidates_are_recorded_and_the_search_goes_on(tmp_path: Path, backend: Backend) -> None:
    flags, env = backend
    out = tmp_path / "run"
    failing = cli("search", *SMALL, *flags, "--trials", "2", "--out", str(out), env=env, faults=("loss=nan",))
    # Every candidate diverges under the fault hook: the search tries several, then stops with the reason.
    assert failing.returncode == 2
    assert "3 candidates in a row failed" in failing.stderr and "non-finite loss" in failing.stderr
    assert "Traceback" not in failing.stderr
    failed = [r for r in rows(out) if r["state"] == "failed"]
    assert len(failed) == 3 and all("non-finite loss" in r["reason"] for r in failed)
    healthy = cli("search", *SMALL, *flags, "--trials", "2", "--out", str(out), env=env)
    assert healthy.returncode == 0, healthy.stderr
    assert len(trained(out)) == 2 and len([r for r in rows(out) if r["state"] == "failed"]) == 3


def test_accuracy_plus_flops_returns_a_pareto_front(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = cli("search", *SMALL, "--trials", "3", "--out", str(out), "--objectives", "accuracy+flops",
              "--sampler", "nsga2")
    assert res.returncode == 0, res.stderr
    done = [r for r in rows(out) if r["state"] == "complete"]
    assert len(done) == 3
    kept = {int(p.stem.split("_")[1]) for p in (out / "weights").glob("trial_*.pt")}
    front = [r for r in done if not any(
        float(o["val_accuracy"]) >= float(r["val_accuracy"]) and int(o["flops"]) <= int(r["flops"])
        and (float(o["val_accuracy"]), int(o["flops"])) != (float(r["val_accuracy"]), int(r["flops"]))
        for o in done)]
    assert {int(r["number"]) for r in front} <= kept


@pytest.mark.parametrize("args, message", [
    (["--budget", "4potatoes"], "invalid FLOP budget '4potatoes'"),
    (["--budget", "1K"], "no architecture in the space fits the budget"),
    (["--budget", "4G", "--space", "missing.yaml"], "missing.yaml"),
    (["--budget", "4G", "--dataset", "mnist-ish"], "invalid choice: 'mnist-ish'"),
    (["--budget", "4G", "--trials", "0"], "--trials must be at least 1"),
    (["--budget", "4G", "--local-moves", "1.5"], "--local-moves must be in [0, 1], got 1.5"),
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    res = cli("search", "--out", str(tmp_path / "run"), *args)
    assert res.returncode == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_malformed_space_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("input:\n  resolution: 32\n  channels: [3\n")
    res = cli("search", "--space", str(bad), "--budget", "4G", "--out", str(tmp_path / "run"))
    assert res.returncode == 2 and "bad.yaml" in res.stderr and "line" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_unwritable_out_and_missing_dataset(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = cli("search", *SMALL, "--out", str(blocker / "run"))
    assert res.returncode == 2 and "cannot write to the run folder" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli("search", *SMALL, "--dataset", "cifar10", "--data-root", str(empty), "--out", str(tmp_path / "r"))
    assert res.returncode == 2 and "cifar10" in res.stderr.lower() and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_screen_counts_at_the_deployment_input() -> None:
    space = resnas.SearchSpace.from_yaml(ROOT / "search_spaces" / "resnet_family.yaml")
    screened = screen(resnas.zoo.get("resnet50"), space, 4_000_000_000)
    assert screened.cost.flops == 4_111_512_576 and not screened.fits  # fvcore's ResNet-50 at 224: over 4 G
    screened = screen(resnas.zoo.get("resnet50"), space, 4_200_000_000)
    assert screened.fits and screened.cost.params == 25_557_032


def test_infeasible_budget_is_refused_before_training() -> None:
    space = resnas.SearchSpace.from_yaml(SPACE)
    with pytest.raises(ConfigError, match="no architecture in the space fits"):
        check_budget_is_feasible(space, space.min_flops() - 1)
    assert check_budget_is_feasible(space, space.min_flops()) >= 0.0
    assert check_budget_is_feasible(space, space.max_flops()) == 1.0


@pytest.mark.parametrize("kinds", [["identity", "gated", "dense"], ["gated", "identity"], ["identity"]])
def test_a_new_study_is_queued_one_fitting_arch_per_shortcut_kind(kinds: list[str]) -> None:
    import yaml

    from resnas._proposals import Openings
    from resnas._study import Study

    raw = yaml.safe_load(Path(SPACE).read_text())
    raw["shortcut"] = kinds
    if "dense" not in kinds:
        for key in ("growth_rate", "bottleneck_size", "compression", "dense_cardinality"):
            del raw[key]
    space = resnas.SearchSpace.from_dict(raw)
    budget = 20_000_000  # under 1 in 4 identity or gated samples of this space fit
    study = optuna.create_study()
    first = Openings(Study(study), space, budget, seed=0, with_classics=False)
    assert first.classics == [] and first.scaled == []
    assert first.kinds == (kinds if len(kinds) > 1 else [])
    # A trial queued for a retry goes before them.
    study.enqueue_trial({"shortcut": kinds[0]}, user_attrs={"retry_of": 99})
    first.queue_next(Study(study))
    assert study.ask().user_attrs == {"retry_of": 99}
    for kind in first.kinds:
        first.queue_next(Study(study))
        trial = study.ask()
        arch = space.suggest(trial)
        assert arch.shortcut.value == kind and trial.user_attrs == {"stratified_start": kind}
        assert resnas.count(arch, resolution=32, num_classes=10, in_channels=3).flops <= budget
    first.queue_next(Study(study))
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    # A resumed study goes on with the kinds it has not started.
    if len(kinds) > 1:
        resumed = optuna.create_study()
        resumed.enqueue_trial({"shortcut": kinds[0]}, user_attrs={"stratified_start": kinds[0]})
        assert Openings(Study(resumed), space, budget, seed=0, with_classics=False).kinds == kinds[1:]


def test_where_no_classic_fits_each_family_s_cheapest_is_scaled_down_to_fit() -> None:
    from resnas._proposals import Openings
    from resnas._study import Study

    space = resnas.SearchSpace.from_yaml(SPACE)
    budget = 20_000_000  # ResNet-20, the cheapest classic of cifar_family.yaml, needs 41M FLOPs at 32x32
    openings = Openings(Study(optuna.create_study()), space, budget, seed=0, with_classics=True)
    assert openings.scaled == []  # half-sized classics only where a real one fits
    by_label = {o.classic: o for o in openings._plan if o.classic}
    assert list(by_label) == openings.classics and "resnet20@d0.33" in by_label
    for label, opening in by_label.items():
        name, scale = label.split("@")
        classic, arch = resnas.zoo.get(name), space.suggest(optuna.trial.FixedTrial(opening.params))
        assert resnas.count(arch, resolution=32, num_classes=10, in_channels=3).flops <= budget
        assert arch.shortcut == classic.shortcut and arch.block == classic.block and arch.order == classic.order
        # Scaled uniformly: every stage's depth by about the factor the label names (widths kept when "d" only).
        if "w" not in scale:
            assert [s.width for s in arch.stages] == [s.width for s in classic.stages]
        share = sum(s.depth for s in arch.stages) / sum(s.depth for s in classic.stages)
        assert f"d{share:.2g}" in scale or share == 1
    # ResNet-20 with one block per stage, each of its widths: the largest uniform depth scale under 20M.
    twenty = space.suggest(optuna.trial.FixedTrial(by_label["resnet20@d0.33"].params))
    assert [(s.depth, s.width) for s in twenty.stages] == [(1, 16), (1, 32), (1, 64)]


def test_a_new_study_trains_the_classics_that_fit_first_then_the_kinds_they_leave_out() -> None:
    from resnas._proposals import Openings
    from resnas._study import Study

    space = resnas.SearchSpace.from_yaml(SPACE)
    # He et al. 2015 (Table 6 family) at 32x32: ResNet-20 41M, -32 70M, -44 98M, -56 127M FLOPs; the Highway
    # version of ResNet-32 adds its gates' 1x1 convolutions. Under 100M: the first three and the Highway net.
    budget = 100_000_000
    study = optuna.create_study()
    openings = Openings(Study(study), space, budget, seed=0, with_classics=True)
    assert openings.classics == ["resnet20", "resnet32", "resnet44", "highway_resnet32"]
    assert openings.kinds == ["dense"]  # identity and gated are covered by classics
    for name in openings.classics:
        openings.queue_next(Study(study))
        trial = study.ask()
        assert space.suggest(trial) == resnas.zoo.get(name) and trial.user_attrs == {"classic": name}
    openings.queue_next(Study(study))
    assert space.suggest(study.ask()).shortcut.value == "dense"
    # Resumed: only what was not started; turned off: only the kinds.
    assert Openings(Study(study), space, budget, seed=0, with_classics=True).classics == []
    off = Openings(Study(optuna.create_study()), space, budget, seed=0, with_classics=False)
    assert off.classics == [] and off.kinds == ["identity", "gated", "dense"]
    # A study that began without openings is left as it is.
    old = optuna.create_study()
    old.enqueue_trial({"shortcut": "identity"})
    old.ask()
    assert Openings(Study(old), space, budget, seed=0, with_classics=True).classics == []


SMALL_FAMILY = """
input: {resolution: 32, channels: 3, classes: 10}
stem: cifar
stem_width: [8, 16]
block: basic
shortcut: [identity, gated]
order: [post, pre]
stages:
  - {depth: [1, 2], width: [8, 16], stride: 1}
  - {depth: [1, 2], width: [16, 32], stride: 2}
dropout: [0.0, 0.1]
"""


class _Quiet:
    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: None


def _tiny_search(tmp_path: Path, **settings: object) -> list[TrialRecord]:
    """A search of SMALL_FAMILY on synthetic data in this process (a second or so per trial); its records."""
    from resnas._lifecycle import Faults, SearchCore
    from resnas._local import LocalBackend

    tmp_path.mkdir(exist_ok=True)
    space = tmp_path / "small.yaml"
    space.write_text(SMALL_FAMILY)
    cfg = SearchConfig(space=str(space), budget=10**9, out=str(tmp_path / "run"), dataset="synthetic", epochs=1,
                       train_samples=64, val_samples=64, **settings)  # type: ignore[arg-type]
    core = SearchCore.prepare(cfg, _Quiet())  # type: ignore[arg-type]
    LocalBackend().run(core, Faults())
    return sorted(core.study.records(cfg.budget), key=lambda r: r.number)


def test_local_moves_step_from_the_best_trial_so_far_between_the_samplers_picks(tmp_path: Path) -> None:
    space = resnas.SearchSpace.from_dict(yaml.safe_load(SMALL_FAMILY))
    records = _tiny_search(tmp_path, trials=8, pruner="none", sampler="random")
    trained = [r for r in records if r.state.trained]
    # The openings (one per shortcut kind: no classic is in this space), then moves and picks in turn.
    assert [r.origin.split(" ")[0] for r in trained] == ["first", "first"] + ["move", "sampler"] * 3
    moves = [r for r in trained if r.origin.startswith("move")]
    for k, r in enumerate(moves):
        before = [b for b in trained if b.number < r.number and b.state.value == "complete"]
        best = max(before, key=lambda b: (b.val_accuracy, -b.flops))
        # Cheapest of those within 2 points of the best (the proxy cannot tell them apart).
        near = min((b for b in before if b.val_accuracy >= best.val_accuracy - 0.02),
                   key=lambda b: (b.flops, -b.val_accuracy))
        of, label = r.origin.removeprefix("move of #").split(": ")
        base = next(b for b in before if b.number == int(of))
        # In turn: a move of the best (any direction), then a cheaper move of the cheapest near-best (or of
        # the best, when nothing cheaper is left to try).
        if k % 2 == 0:
            assert base is best
        else:
            assert base is near or base is best
            if base is near:
                assert r.flops < near.flops
        # ... by one step of the named dimension, nothing else.
        dimension, old, new = label.replace(" -> ", " ").split(" ")
        a, b = (space.params(resnas.Arch.from_dict(x.arch)) for x in (base, r))
        assert {k for k in a if a[k] != b[k]} == {dimension} and (str(a[dimension]), str(b[dimension])) == (old, new)
    assert len({json.dumps(r.arch, sort_keys=True) for r in trained}) == len(trained)
    # Turned off: only the sampler after the openings.
    off = _tiny_search(tmp_path / "off", trials=4, pruner="none", sampler="random", local_moves=0.0)
    assert [r.origin for r in off if r.state.trained][2:] == ["sampler", "sampler"]


def test_constraints_reach_the_sampler(tmp_path: Path) -> None:
    from resnas._lifecycle import Faults, SearchCore
    from resnas._local import LocalBackend

    # No local moves: the trials after the openings (4 here) are the sampler's, which proposes over the budget too.
    cfg = SearchConfig(space=SPACE, budget=BUDGET, out=str(tmp_path), sampler="random", epochs=1,  # type: ignore[arg-type]
                       trials=7, dataset="synthetic", train_samples=64, val_samples=32, proxy_width=0.25,
                       local_moves=0.0)
    core = SearchCore.prepare(cfg, _Quiet())  # type: ignore[arg-type]
    LocalBackend().run(core, Faults())
    states = [r.state.value for r in core.study.records(BUDGET)]
    assert "over_budget" in states and core.study.trained_count() == states.count("complete") + states.count("pruned")
    for t in core.study.optuna.get_trials():
        violation = t.constraints["flops_over_budget"]
        assert (violation > 0) == (t.user_attrs["state"] == "over_budget")
        assert violation == pytest.approx(t.user_attrs["flops"] / BUDGET - 1)
        if violation > 0:
            assert t.state is optuna.trial.TrialState.PRUNED and "epochs" not in t.user_attrs


TWO_ARCHS = """
input: {resolution: 32, channels: 3, classes: 10}
stem: cifar
stem_width: 16
block: basic
shortcut: identity
order: [post, pre]
stages:
  - {depth: 1, width: 16, stride: 1}
  - {depth: 1, width: 32, stride: 2}
  - {depth: 1, width: 64, stride: 2}
"""


def test_no_architecture_is_trained_twice(tmp_path: Path, backend: Backend) -> None:
    flags, env = backend
    space = tmp_path / "two.yaml"
    space.write_text(TWO_ARCHS)
    out = tmp_path / "run"
    args = ["search", "--space", str(space), "--budget", "100M", "--dataset", "synthetic", "--epochs", "1",
            "--train-samples", "200", "--val-samples", "100", "--sampler", "random", "--trials", "3",
            "--out", str(out), *flags]
    first = cli(*args, env=env)
    # Two architectures in the space: both trained once, then the random sampler only repeats them.
    assert first.returncode == 0, first.stderr
    assert "stopped after 2 trained candidates" in first.stdout and "all trained before" in first.stdout
    done = trained(out)
    assert len(done) == 2 and done[0]["arch"] != done[1]["arch"]
    duplicates = [r for r in rows(out) if r["state"] == "duplicate"]
    assert len(duplicates) == 50
    by_arch = {r["arch"]: r["number"] for r in done}
    for r in duplicates:  # each points at the trial that trained its arch, and none trained
        assert f"the same architecture as trial {by_arch[r['arch']]} " in r["reason"] and r["epochs"] == "0"
    # The sampler learnt the repeated result (Optuna holds the twin's value), counted once.
    study = optuna.load_study(study_name="resnas", storage=f"sqlite:///{out / 'study.db'}")
    values = {t.number: t.value for t in study.trials}
    assert all(values[int(r["number"])] == values[int(by_arch[r["arch"]])] for r in duplicates)
    # Resumed: nothing new to train, nothing trained again.
    again = cli(*args, env=env)
    assert again.returncode == 0, again.stderr
    assert len(trained(out)) == 2 and len([r for r in rows(out) if r["state"] == "duplicate"]) == 100


def test_a_proposal_equal_to_a_trained_or_started_trial_has_a_twin() -> None:
    from resnas._proposals import screen
    from resnas._study import Study, record_screen, record_start

    space = resnas.SearchSpace.from_yaml(SPACE)
    arch = resnas.zoo.get("resnet20")
    other = resnas.zoo.get("resnet32")
    study = optuna.create_study(direction="maximize")
    first, second, third = study.ask(), study.ask(), study.ask()
    for trial, a in ((first, arch), (second, arch), (third, other)):
        record_screen(trial, screen(a, space, 10**9), 10**9)
    adapter = Study(study)
    # Proposed, not started: no twin yet (processes propose in turns, so a started one is always seen).
    assert adapter.twin_of(arch, second.number) is None
    record_start(first, arch, 1)  # this live process trains it
    assert adapter.twin_of(arch, second.number).number == first.number
    assert adapter.twin_of(arch, first.number) is None  # not its own twin
    # Started by a process that died: its architecture is retried, so it is nobody's twin.
    record_start(third, other, 1)
    third.set_user_attr("worker", f"{socket.gethostname()}:{_dead_pid()}")
    assert adapter.twin_of(other, 99) is None
    first.set_user_attr("state", "complete")
    study.tell(first, 0.5)
    twin = adapter.twin_of(arch, 99)
    assert (twin.number, twin.state.value, twin.values) == (first.number, "complete", (0.5,))
    # A failed trial's arch may be tried again.
    third.set_user_attr("state", "failed")
    study.tell(third, state=optuna.trial.TrialState.FAIL)
    assert adapter.twin_of(other, 99) is None


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_trials_of_other_processes_count_and_only_this_machines_are_awaited() -> None:
    from resnas._study import Study, record_start

    study = optuna.create_study(direction="maximize")
    arch = resnas.zoo.get("resnet20")
    here = socket.gethostname()
    workers = {"mine": None, "other host": "elsewhere.example:123", "dead here": f"{here}:{_dead_pid()}",
               "live here": f"{here}:1"}  # pid 1 is always alive
    for worker in workers.values():
        trial = study.ask()
        record_start(trial, arch, 1)
        if worker is not None:
            trial.set_user_attr("worker", worker)
    adapter = Study(study)
    # This process's own trial is not "elsewhere"; a dead process's trial is nobody's.
    assert adapter.training_elsewhere() == 2 and adapter.training_elsewhere(here_only=True) == 1


def test_workers_go_one_per_gpu_by_default() -> None:
    from resnas._local import worker_devices

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert worker_devices(None, cpu, 0) == [cpu]
    assert worker_devices(3, cpu, 0) == [cpu] * 3
    assert worker_devices(None, cuda, 4) == [torch.device("cuda", i) for i in range(4)]
    assert worker_devices(2, cuda, 4) == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert worker_devices(3, cuda, 2) == [torch.device("cuda", i) for i in (0, 1, 0)]  # two share cuda:0


def test_workers_train_at_once_against_the_one_study(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # Trials of a few seconds each, so the second worker (a spawned process: seconds to start) gets some.
    longer = [*SMALL[:SMALL.index("--train-samples")], "--train-samples", "1024", "--val-samples", "128",
              "--batch-size", "64", "--proxy-width", "0.25"]
    result = cli("search", *longer, "--epochs", "2", "--pruner", "none", "--trials", "6", "--workers", "2",
                 "--out", str(out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "2 workers: cpu, cpu" in result.stdout and "worker 2 (cpu): started" in result.stdout
    assert result.stdout.count("leaderboard") == 1  # the first process sums up, once every worker ended
    done = trained(out)
    assert len(done) == 6 and len({r["arch"] for r in done}) == 6  # none trained twice, none too many
    study = optuna.load_study(study_name="resnas", storage=f"sqlite:///{out / 'study.db'}")
    ran = [t for t in study.trials if t.user_attrs.get("state") == "complete"]  # not duplicates: never trained
    by_worker: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t in ran:
        by_worker.setdefault(t.user_attrs["worker"], []).append(t)
    assert len(by_worker) == 2  # two processes trained
    first, second = by_worker.values()
    # ... at the same time: some trial of one overlaps some trial of the other.
    assert any(a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
               for a in first for b in second)


def test_workers_are_for_the_optuna_backend(tmp_path: Path) -> None:
    for flags, words in ((["--workers", "0"], "--workers must be"), (["--workers", "2", "--backend", "ray"],
                                                                      "--workers is for the optuna backend")):
        result = cli("search", *SMALL, *flags, "--out", str(tmp_path / "run"))
        assert result.returncode == 2 and result.stderr.startswith(f"resnas: error: {words}"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def _running_workers(db: Path) -> set[str]:
    """The processes (host:pid) with a trial in training in the study at `db`."""
    try:
        with sqlite3.connect(db) as con:
            return {json.loads(v) for (v,) in con.execute(
                "select a.value_json from trials t join trial_user_attributes a on t.trial_id = a.trial_id "
                "where t.state = 'RUNNING' and a.key = 'worker'")}
    except sqlite3.OperationalError:  # not created yet
        return set()


def test_a_killed_search_stops_its_workers_and_the_rerun_completes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["search", *SMALL, "--trials", "2", "--workers", "2", "--out", str(out), "--train-samples", "4096"]
    proc = start(*args)
    deadline = time.monotonic() + 300
    while len(running := _running_workers(out / "study.db")) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.5)
    assert len(running) == 2, "the two workers did not both start training"
    worker = next(int(w.rpartition(":")[2]) for w in running if int(w.rpartition(":")[2]) != proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 120
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(worker), "the worker outlived the search that started it"
    # The worker settled its own trial as interrupted; only the killed process's is left running.
    assert _running_workers(out / "study.db") == {w for w in running if int(w.rpartition(":")[2]) == proc.pid}
    assert [r["state"] for r in rows(out) if r["state"] == "interrupted"] == ["interrupted"], rows(out)
    rerun = cli(*args)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr
    assert "cut off by a dead process" in rerun.stdout
    assert len(trained(out)) == 2 and len([r for r in rows(out) if r["state"] == "interrupted"]) == 2


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_a_stop_signal_lost_in_a_finaliser_still_stops_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    import weakref

    from resnas import _local

    class Owner:
        pass

    lost: list[BaseException] = []
    monkeypatch.setattr("sys.unraisablehook", lambda u: lost.append(u.exc_value))
    monkeypatch.setattr(_local, "_STOP", threading.Event())
    owner = Owner()
    # A signal handled while a weakref callback runs raises there, and Python drops the exception.
    ref = weakref.ref(owner, lambda _: _local._interrupt(signal.SIGTERM, None))
    del owner
    assert ref() is None and len(lost) == 1 and isinstance(lost[0], KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        _local._check_stop()  # what the worker runs before each trial and after each epoch


def test_a_ctrl_c_lost_in_a_finaliser_still_stops_the_search(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import weakref

    from resnas import _local

    class Owner:
        pass

    lost: list[BaseException] = []
    monkeypatch.setattr("sys.unraisablehook", lambda u: lost.append(u.exc_value))
    # Python's own Ctrl-C handler, as a search started from a shell has (whatever this test process has).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with _local._ctrl_c_is_remembered():
            owner = Owner()
            # A real SIGINT, handled inside a weakref callback: its KeyboardInterrupt is dropped there.
            ref = weakref.ref(owner, lambda _: os.kill(os.getpid(), signal.SIGINT))
            del owner
            assert ref() is None and len(lost) == 1 and isinstance(lost[0], KeyboardInterrupt)
            with pytest.raises(KeyboardInterrupt):
                _local._check_stop()  # what the search runs before each trial and after each epoch
        # Nothing left changed: Python's own Ctrl-C handler, and no stop pending for the next search here.
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and not _local._STOP.is_set()
    finally:
        signal.signal(signal.SIGINT, before)
