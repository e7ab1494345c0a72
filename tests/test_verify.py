"""`resnas verify`: statistics against hand-computed values, the test split kept from the search, the CLI end to end
(files, seeds, verdict), resume after SIGKILL, and export preferring the verified winner."""

from __future__ import annotations

import csv
import json
import math
import signal
import time
from pathlib import Path

import pytest
import torch

import resnas
from resnas._verify import (
    Network,
    NetworkKind,
    UnitResult,
    contenders,
    default_recipe,
    kendall_tau,
    paired_interval,
    remaining,
    summarize,
)
from tests._e2e import SPACE, cli, start
from tests._marks import needs_fashion

# -- statistics --------------------------------------------------------------------------------------


def test_kendall_tau_matches_hand_counted_rankings() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # x ranks a < b < c < d < e, y ranks b < c < a < e < d. Of the 10 pairs, (a,b), (a,c) and (d,e) are
    # discordant, the other 7 concordant: (7 - 3) / 10.
    assert kendall_tau([1, 2, 3, 4, 5], [3, 1, 2, 5, 4]) == pytest.approx(0.4)
    # Ties (tau-b): x = [1, 1, 2, 3], y = [1, 2, 3, 4]. Pairs: (0,1) tied in x only; the other 5 concordant.
    # tau-b = (5 - 0) / sqrt((5 + 0 + 1) * (5 + 0 + 0)) = 5 / sqrt(30).
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))
    with pytest.raises(ValueError):
        kendall_tau([1.0], [1.0])


def test_paired_interval_is_students_t() -> None:
    # diffs 1, 2, 3: mean 2, sample sd 1, t(0.975, 2 df) = 4.303 (any t table): half-width 4.303 / sqrt(3).
    mean, low, high = paired_interval([1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3)
    assert mean == 2.0 and low == pytest.approx(2 - half) and high == pytest.approx(2 + half)
    # Two pairs: t(0.975, 1 df) = 12.706.
    assert paired_interval([0.0, 2.0])[2] == pytest.approx(1 + 12.706 * math.sqrt(2) / math.sqrt(2))
    with pytest.raises(ValueError):
        paired_interval([1.0])


def _net(label: str, kind: NetworkKind, proxy: float | None) -> Network:
    return Network(label, kind, resnas.zoo.get("resnet20"), 41_218_688, None, proxy)


def _units(label: str, kind: NetworkKind, accs: list[float]) -> list[UnitResult]:
    return [UnitResult(label, kind, seed, acc, 1.0, 1000) for seed, acc in enumerate(accs)]


def test_summary_says_plainly_who_won() -> None:
    s, c = NetworkKind.SEARCHED, NetworkKind.CLASSIC
    nets = [_net("#3", s, 0.80), _net("#5", s, 0.78), _net("resnet20", c, 0.79)]
    # The searched best leads by 2 points on every seed: beat.
    won = summarize(nets, _units("#3", s, [0.85, 0.86, 0.87]) + _units("#5", s, [0.80, 0.80, 0.81]) +
                    _units("resnet20", c, [0.83, 0.84, 0.85]))
    assert [x.network.label for x in won.scores] == ["#3", "resnet20", "#5"]
    assert won.verdict.startswith("the search beat the classics") and "#3 vs resnet20" in won.verdict
    assert won.gain is not None and won.gain[0] == pytest.approx(2.0) and won.gain[1] > 0
    # Proxy order #3 > resnet20 > #5 is the verified order: tau 1.
    assert won.tau == pytest.approx(1.0) and not won.warnings
    # Noise either way: no measurable difference; proxy order reversed: tau -1 and a warning.
    nets = [_net("#3", s, 0.70), _net("#5", s, 0.80), _net("resnet20", c, 0.75)]
    tied = summarize(nets, _units("#3", s, [0.85, 0.83, 0.86]) + _units("#5", s, [0.80, 0.80, 0.81]) +
                     _units("resnet20", c, [0.84, 0.85, 0.83]))
    assert tied.verdict.startswith("no measurable difference")
    assert tied.tau == pytest.approx(-1.0) and "Kendall tau -1.00 < 0.5" in tied.warnings[0]
    lost = summarize(nets[1:], _units("#5", s, [0.80, 0.80, 0.81]) + _units("resnet20", c, [0.84, 0.85, 0.85]))
    assert lost.verdict.startswith("the search did not beat the classics")
    one_seed = summarize(nets[1:], _units("#5", s, [0.80]) + _units("resnet20", c, [0.84]))
    assert "one seed cannot tell" in one_seed.verdict and one_seed.gain is None


def test_after_seed_0_only_the_contenders_race_on() -> None:
    s, c = NetworkKind.SEARCHED, NetworkKind.CLASSIC
    a, b, x, y = _net("resnet20", c, 0.8), _net("resnet32", c, 0.8), _net("#3", s, 0.8), _net("#5", s, 0.8)
    nets = [a, b, x, y]
    recipe = default_recipe({"settings": {}, "proxy_width": 0.5})  # 3 seeds, 2 points
    assert (recipe.seeds, recipe.drop_below) == (3, 2.0)
    # Until every network has its seed 0, every later seed may still be needed; seed 0s go first.
    partial = _units("resnet20", c, [0.85]) + _units("resnet32", c, [0.80])
    todo = [(n.label, seed) for n, seed in remaining(nets, partial, recipe)]
    assert todo[:2] == [("#3", 0), ("#5", 0)] and len(todo) == 2 + 4 * 2
    # Seed 0: resnet20 0.85 leads; #3 is 1 point behind (goes on), #5 3 points (dropped), resnet32 5 points
    # (dropped: resnet20 is the better classic). Then seed by seed.
    first = partial + _units("#3", s, [0.84]) + _units("#5", s, [0.82])
    assert contenders(nets, first, 2.0) == [a, x]
    assert [(n.label, seed) for n, seed in remaining(nets, first, recipe)] == \
           [("resnet20", 1), ("#3", 1), ("resnet20", 2), ("#3", 2)]
    # The best of each kind races on however far behind: the verdict compares those two.
    behind = _units("resnet20", c, [0.90]) + _units("resnet32", c, [0.80]) + _units("#3", s, [0.84]) + \
        _units("#5", s, [0.82])
    assert contenders(nets, behind, 2.0) == [a, x]
    assert contenders(nets, behind, 10.0) == nets and contenders(nets, behind, None) == nets
    # The summary ranks full-seed networks first and says who was dropped.
    done = first + _units("resnet20", c, [0.85, 0.84, 0.86])[1:] + _units("#3", s, [0.84, 0.80, 0.81])[1:]
    summary = summarize(nets, done)
    assert [x.network.label for x in summary.scores] == ["resnet20", "#3", "#5", "resnet32"]
    assert "#3 vs resnet20" in summary.verdict  # not #5, whose single seed beats #3's mean
    assert any(w.startswith("#5, resnet32: far behind after the first seed") for w in summary.warnings)
    with pytest.raises(resnas.ConfigError, match="must be positive") as e:
        default_recipe({"settings": {}}, drop_below=0.0)
    assert e.value.field == "drop_below"


def test_default_recipe_buys_fidelity_over_the_proxy() -> None:
    run = {"settings": {"epochs": 2, "train_samples": 2000, "batch_size": 64, "lr": 0.05}, "proxy_width": 0.5}
    r = default_recipe(run)
    assert (r.epochs, r.train_samples, r.width, r.seeds, r.top, r.baselines) == (3, 4000, 0.5, 3, 3, None)
    assert default_recipe({**run, "settings": {**run["settings"], "epochs": 5}}).epochs == 6
    assert default_recipe(run, seeds=5, baselines=["resnet18"]).baselines == ("resnet18",)
    with pytest.raises(resnas.ConfigError, match="at least 1") as e:
        default_recipe(run, seeds=0)
    assert e.value.field == "seeds"


# -- the test split ------------------------------------------------------------------------------------


@needs_fashion
def test_the_search_never_reads_the_test_split_and_verify_scores_on_all_of_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import resnas._data as data_module
    from resnas._config import SearchConfig
    from resnas._data import load_verification, read_idx
    from resnas._lifecycle import load_training_data

    opened: list[str] = []

    def recording(path: str) -> torch.Tensor:
        opened.append(Path(path).name)
        return read_idx(path)

    monkeypatch.setattr(data_module, "read_idx", recording)
    for cached in (data_module._read_fashion,):
        cached.cache_clear()
    search = load_training_data(SearchConfig(space=SPACE, budget=10**8, out="x", train_samples=50_000,
                                             val_samples=10_000))
    assert opened and all(name.startswith("train-") for name in opened)
    assert int(search.train_index.max()) < 60_000 and int(search.val_index.max()) < 60_000
    opened.clear()
    verification = load_verification("fashion-mnist", train_samples=1000, resolution=32)
    assert any(name.startswith("t10k-") for name in opened)
    labels = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").long()
    assert torch.equal(verification.val_y, labels) and len(verification.train_y) == 1000
    data_module._read_fashion.cache_clear()


# -- the command ---------------------------------------------------------------------------------------

# A search of a few hundred real images whose classics under 50M FLOPs are resnet20 alone.
SEARCH = ["search", "--space", SPACE, "--budget", "50M", "--epochs", "1", "--train-samples", "256",
          "--val-samples", "128", "--proxy-width", "0.25", "--trials", "3"]
# --drop-below 100: every network gets every seed (the race itself is tested above).
VERIFY = ["--top", "2", "--seeds", "2", "--drop-below", "100", "--epochs", "1", "--train-samples", "512"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "run"
    done = cli(*SEARCH, "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


@needs_fashion
@pytest.mark.slow
def test_verify_end_to_end_then_export_ships_the_verified_winner(searched: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    import shutil

    shutil.copytree(searched, run)
    done = cli("verify", str(run), *VERIFY)
    assert done.returncode == 0, done.stderr
    folder = run / "verify"
    assert {p.name for p in folder.iterdir()} >= {"verify.json", "verify.csv", "summary.json", "verify.png", "weights"}
    units = _rows(folder / "verify.csv")
    trials = _rows(run / "trials.csv")
    # The study began with the one classic of the space under 50M FLOPs, named (He et al.'s ResNet-20: 41M).
    assert [r["name"] for r in trials if r["name"]] == ["resnet20"] and trials[0]["name"] == "resnet20"
    top2 = sorted((r for r in trials if r["state"] == "complete" and not r["name"]),
                  key=lambda r: -float(r["val_accuracy"]))[:2]
    expected = {f"#{r['number']}" for r in top2} | {"resnet20"}
    assert {(u["label"], u["seed"]) for u in units} == {(label, str(s)) for label in expected for s in (0, 1)}
    assert all(0.0 <= float(u["test_accuracy"]) <= 1.0 for u in units)
    summary = json.loads((folder / "summary.json").read_text())
    plan = json.loads((folder / "verify.json").read_text())
    assert "10000-image test set" in plan["data"] and plan["recipe"]["seeds"] == 2
    means = {n["label"]: n["test_accuracy_mean"] for n in summary["networks"]}
    for label in expected:  # the means are the seeds' means
        accs = [float(u["test_accuracy"]) for u in units if u["label"] == label]
        assert means[label] == pytest.approx(sum(accs) / 2, abs=1e-5)
    assert summary["winner"] == max(means, key=means.get)
    assert "verdict: " in done.stdout and summary["verdict"] in " ".join(done.stdout.split())
    assert "proxy fidelity: Kendall tau" in done.stdout
    # A rerun has nothing left to train; another recipe is refused in one line.
    again = cli("verify", str(run), *VERIFY)
    assert again.returncode == 0 and "unit 1/" not in again.stdout
    other = cli("verify", str(run), *VERIFY[:-1], "1024")
    assert other.returncode == 2 and "train_samples 512 -> 1024" in other.stderr and "Traceback" not in other.stderr
    # export (no --top/--trial) ships the winner with its seed-0 weights.
    exported = cli("export", str(run), "--out", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    winner = summary["winner"]
    name = f"trial_{int(winner[1:]):04d}" if winner.startswith("#") else winner
    shipped = torch.load(tmp_path / "export" / name / "weights.pt", weights_only=True)
    kept = torch.load(folder / "weights" / f"{name}.pt", weights_only=True)
    assert shipped.keys() == kept.keys() and all(torch.equal(shipped[k], kept[k]) for k in kept)
    card = (tmp_path / "export" / name / "card.md").read_text()
    assert "| verified | test accuracy" in card and "seed 0's" in card


@needs_fashion
@pytest.mark.slow
def test_verify_resumes_after_sigkill_losing_at_most_the_running_unit(searched: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(searched, run)
    args = ["verify", str(run), *VERIFY[:-1], "2048"]  # a few seconds per unit
    proc = start(*args)
    units = run / "verify" / "verify.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not (units.is_file() and _rows(units)):
        time.sleep(0.2)
    before = _rows(units)
    assert before, "no unit finished in time"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rerun = cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    after = _rows(units)
    assert after[: len(before)] == before  # finished units untouched
    assert len(after) == 6 and len({(u["label"], u["seed"]) for u in after}) == 6
    assert not list((run / "verify").glob(".*"))  # no temporary file left behind


@needs_fashion
def test_verify_refuses_bad_input_in_one_line(searched: Path, tmp_path: Path) -> None:
    missing = cli("verify", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "not a resnas run folder" in missing.stderr
    for flags, words in ((["--seeds", "0"], "--seeds must be at least 1"),
                         (["--width", "2"], "--width must be in (0, 1]"),
                         (["--baselines", "resnet50"], "--baselines resnet50 needs"),
                         (["--baselines", "nonet"], "unknown zoo network 'nonet'")):
        bad = cli("verify", str(searched), *flags)
        assert bad.returncode == 2 and words in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert not (searched / "verify").exists()  # nothing written by refused runs


def test_a_named_classic_under_the_budget_is_verified_even_if_the_study_did_not_train_it() -> None:
    from resnas._verify import Recipe, choose

    run = {"settings": {"budget": 100_000_000}, "deployment_input": {"resolution": 32, "channels": 3,
                                                                      "classes": 10}}
    arch = json.dumps(resnas.zoo.get("resnet20").to_dict())
    rows = [{"number": "0", "state": "complete", "name": "resnet20", "val_accuracy": "0.5", "flops": "41218688",
             "arch": arch}]
    recipe = Recipe(epochs=1, train_samples=10, batch_size=8, lr=0.1, width=0.5, seeds=1, top=3,
                    baselines=("resnet20", "resnet32"))
    nets = choose(rows, recipe, run)
    assert [(n.label, n.kind, n.trial, n.flops) for n in nets] == [
        ("resnet20", NetworkKind.CLASSIC, 0, 41_218_688), ("resnet32", NetworkKind.CLASSIC, None, 69_759_616)]
    # By default every classic the study trained, a pruned one too (its fewer-epoch accuracy left out of the tau).
    pruned = {"number": "1", "state": "pruned", "name": "resnet32", "val_accuracy": "0.3", "flops": "69759616",
              "arch": json.dumps(resnas.zoo.get("resnet32").to_dict())}
    nets = choose([*rows, pruned], Recipe(epochs=1, train_samples=10, batch_size=8, lr=0.1, width=0.5, seeds=1,
                                          top=3), run)
    assert [(n.label, n.trial, n.proxy_accuracy) for n in nets] == [("resnet20", 0, 0.5), ("resnet32", 1, None)]


@pytest.mark.slow
def test_search_with_verify_verifies_the_run_it_made(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = cli("search", "--space", SPACE, "--budget", "50M", "--dataset", "synthetic", "--epochs", "1",
               "--train-samples", "200", "--val-samples", "100", "--proxy-width", "0.25", "--trials", "2",
               "--out", str(out), "--verify")
    assert done.returncode == 0, done.stderr
    plan = json.loads((out / "verify" / "verify.json").read_text())
    # The defaults: 2x the search's images, one more epoch (at least 3), 3 seeds, its proxy width.
    assert {k: plan["recipe"][k] for k in ("train_samples", "epochs", "seeds", "width")} == \
           {"train_samples": 400, "epochs": 3, "seeds": 3, "width": 0.25}
    assert "2000-image test set" in plan["data"]
    assert len(_rows(out / "verify" / "verify.csv")) == 3 * len(plan["networks"])
    assert "verdict: " in done.stdout
