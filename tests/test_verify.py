"""`resnas verify`: statistics and the pick against hand-computed values, the selection split held out of every
training and the test split kept from the search, the CLI end to end (files, seeds, pick, verdict), resume after
SIGKILL, and export shipping the verified pick."""

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
from resnas._runfolder import RunFolder
from resnas._trial import TrialRecord
from resnas._verdict import Network, NetworkKind, Pick, UnitResult, kendall_tau, paired_interval, summarize
from resnas._verify import contenders, default_recipe, remaining
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


def _net(label: str, kind: NetworkKind, proxy: float | None, flops: int = 41_218_688) -> Network:
    return Network(label, kind, resnas.zoo.get("resnet20"), flops, None, proxy)


def _units(label: str, kind: NetworkKind, accs: list[float]) -> list[UnitResult]:
    return [UnitResult(label, kind, seed, acc, 1.0, 1000) for seed, acc in enumerate(accs)]


def test_a_network_ahead_on_every_seed_is_the_pick_and_beats_the_classic() -> None:
    s, c = NetworkKind.SEARCHED, NetworkKind.CLASSIC
    nets = [_net("#3", s, 0.80), _net("#5", s, 0.78), _net("resnet20", c, 0.79)]
    # #3 leads resnet20 by exactly 2 points on every seed: the interval is [+2, +2].
    won = summarize(nets, _units("#3", s, [0.85, 0.86, 0.87]) + _units("#5", s, [0.80, 0.80, 0.81]) +
                    _units("resnet20", c, [0.83, 0.84, 0.85]))
    assert [x.network.label for x in won.scores] == ["#3", "resnet20", "#5"]
    assert won.pick.network.label == "#3" and won.reference is not None and won.reference.network.label == "resnet20"
    assert won.verdict.startswith("#3 is more accurate than the best classic, resnet20: +2.00 points [+2.00, +2.00]")
    assert won.gain is not None and won.gain.mean == pytest.approx(2.0) and won.gain.low > 0
    assert won.classics == ["resnet20: beaten: #3 is +2.00 points [+2.00, +2.00] more accurate, at 1.00x its FLOPs"]
    # Proxy order #3 > resnet20 > #5 is the verified order: tau 1.
    assert won.tau == pytest.approx(1.0) and not won.warnings
    # Proxy order reversed: tau -1 and a warning.
    nets = [_net("#3", s, 0.70), _net("#5", s, 0.80), _net("resnet20", c, 0.75)]
    tied = summarize(nets, _units("#3", s, [0.85, 0.83, 0.86]) + _units("#5", s, [0.80, 0.80, 0.81]) +
                     _units("resnet20", c, [0.84, 0.85, 0.83]))
    assert tied.tau == pytest.approx(-1.0) and "Kendall tau -1.00 < 0.5" in tied.warnings[0]
    # A classic ahead on one seed only: nothing to tell; with one seed each, the more accurate is the pick.
    one_seed = summarize(nets[1:], _units("#5", s, [0.80]) + _units("resnet20", c, [0.84]))
    assert one_seed.pick.network.label == "resnet20" and "is the pick" in one_seed.verdict
    ahead = summarize(nets[1:], _units("#5", s, [0.85]) + _units("resnet20", c, [0.84]))
    assert "one seed cannot tell" in ahead.verdict and ahead.gain is None


def test_the_pick_is_the_cheapest_network_as_accurate_as_the_most_accurate() -> None:
    s, c = NetworkKind.SEARCHED, NetworkKind.CLASSIC
    classic = _units("resnet20", c, [0.84, 0.85, 0.86])
    # Half resnet20's FLOPs, 0, 0.5 and 0.5 points behind: mean -1/3, sample sd 0.2887, t(2 df) 4.303, so the
    # interval is -0.333 +/- 4.303 * 0.2887 / sqrt(3) = [-1.05, +0.38]: not measurably below, within 0.5.
    cheap = _units("#7", s, [0.84, 0.845, 0.855])
    # A quarter of its FLOPs, 2, 0 and 0.5 points behind: mean -0.83 (sd 1.04, interval [-3.42, +1.76]):
    # not measurably below either, but more than the 0.5-point margin behind on average.
    cheaper = _units("#8", s, [0.82, 0.85, 0.855])
    nets = [_net("resnet20", c, None, 40_000_000), _net("#7", s, None, 20_000_000), _net("#8", s, None, 10_000_000)]
    summary = summarize(nets, classic + cheap + cheaper)
    assert summary.best.network.label == "resnet20" and summary.pick.network.label == "#7"
    d7, d8 = summary.vs_best["#7"], summary.vs_best["#8"]
    assert d7 is not None and (d7.mean, d7.low, d7.high) == pytest.approx((-1 / 3, -1.050, 0.384), abs=1e-3)
    assert d8 is not None and d8.mean == pytest.approx(-5 / 6) and d8.high > 0
    assert summary.verdict.startswith("#7 is as accurate as the best classic, resnet20 (-0.33 points [-1.05, +0.38]")
    assert summary.verdict.endswith("at 0.50x its FLOPs (half or less)")
    assert summary.classics == ["resnet20: dominated: #7 is as accurate, -0.33 points [-1.05, +0.38], at 0.50x its "
                                "FLOPs"]
    assert "cheapest network as accurate as the most accurate, resnet20" in summary.pick_reason
    # A wider margin admits #8; --pick accurate hands over the most accurate whatever it costs.
    assert summarize(nets, classic + cheap + cheaper, margin=1.0).pick.network.label == "#8"
    accurate = summarize(nets, classic + cheap + cheaper, rule=Pick.ACCURATE)
    assert accurate.pick.network.label == "resnet20" and "is the pick" in accurate.verdict
    # Measurably below (1 point on every seed) is never as accurate, however cheap.
    worse = summarize(nets[:2], classic + _units("#7", s, [0.83, 0.84, 0.85]))
    assert worse.pick.network.label == "resnet20"
    assert worse.classics == []  # the pick is the only classic
    d = summarize(nets[:2], classic + _units("#7", s, [0.83, 0.84, 0.85]), margin=5.0)
    assert d.pick.network.label == "resnet20"  # the interval, not the margin, rules it out
    payload = summary.to_dict()
    assert payload["pick"] == "#7" and payload["best"] == "resnet20" and payload["pick_rule"] == "cheapest"
    assert [n["flops_vs_best"] for n in payload["networks"]] == [1.0, 0.5, 0.25]


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
    # #3 is 1, 4 and 5 points behind: measurably below; #5, whose single seed beats #3's mean, cannot be picked.
    assert summary.pick.network.label == "resnet20" and "#5" not in summary.verdict
    assert "resnet32: dropped after seed 0, where resnet20 was +5.00 points ahead, at 1.00x its FLOPs" in \
        summary.classics
    assert any(w.startswith("#5, resnet32: far behind after the first seed") for w in summary.warnings)
    with pytest.raises(resnas.ConfigError, match="must be positive") as e:
        default_recipe({"settings": {}}, drop_below=0.0)
    assert e.value.field == "drop_below"


def test_default_recipe_buys_fidelity_over_the_proxy() -> None:
    run = {"settings": {"epochs": 2, "train_samples": 2000, "batch_size": 64, "lr": 0.05}, "proxy_width": 0.5}
    r = default_recipe(run)
    assert (r.epochs, r.train_samples, r.width, r.seeds, r.top, r.baselines, r.select_samples) == \
           (3, 4000, 0.5, 3, 3, None, None)
    assert default_recipe({**run, "settings": {**run["settings"], "epochs": 5}}).epochs == 6
    assert default_recipe(run, seeds=5, baselines=["resnet18"]).baselines == ("resnet18",)
    with pytest.raises(resnas.ConfigError, match="at least 1") as e:
        default_recipe(run, seeds=0)
    assert e.value.field == "seeds"


# -- the splits ----------------------------------------------------------------------------------------


@needs_fashion
def test_the_search_never_reads_the_test_split_and_verify_chooses_on_images_no_training_saw(monkeypatch: pytest.MonkeyPatch) -> None:
    import resnas._datasets as data_module
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
    assert verification.test_y is not None and torch.equal(verification.test_y, labels)
    assert verification.test_x is not None and verification.test_x.shape == (10_000, 1, 32, 32)
    # The selection split: 10000 more of the training set, none of them trained on.
    train_labels = read_idx("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz").long()
    assert len(verification.train_y) == 1000 and len(verification.val_y) == 10_000
    assert not set(verification.train_index.tolist()) & set(verification.val_index.tolist())
    assert torch.equal(verification.val_y, train_labels[verification.val_index])
    # Normalised as training normalises: statistics of the 1000 training images only (resized as they are).
    import torch.nn.functional as F

    raw = read_idx("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")[verification.train_index]
    resized = F.interpolate(raw.unsqueeze(1).float(), size=(32, 32), mode="bilinear", antialias=True)
    pixels = resized.round().clamp(0, 255) / 255
    assert verification.mean[0] == pytest.approx(pixels.mean().item(), abs=1e-5)
    assert verification.std[0] == pytest.approx(pixels.std(unbiased=False).item(), abs=1e-5)
    assert verification.contract.class_names[0] == "T-shirt/top" and verification.contract.resolution == 32
    data_module._read_fashion.cache_clear()


# -- the command ---------------------------------------------------------------------------------------

# A search of a few hundred real images whose classics under 50M FLOPs are resnet20 alone.
SEARCH = ["search", "--space", SPACE, "--budget", "50M", "--epochs", "1", "--train-samples", "256",
          "--val-samples", "128", "--proxy-width", "0.25", "--trials", "3"]
# --drop-below 100: every network gets every seed (the race itself is tested above).
VERIFY = ["--top", "2", "--seeds", "2", "--drop-below", "100", "--epochs", "1", "--train-samples", "512"]


def _records(rows: list[dict[str, str]]) -> list[TrialRecord]:
    """trials.csv rows as RunFolder.read_trials gives them."""
    return [TrialRecord.from_row(r) for r in rows]


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
    assert all(0.0 <= float(u["select_accuracy"]) <= 1.0 for u in units)
    summary = json.loads((folder / "summary.json").read_text())
    plan = json.loads((folder / "verify.json").read_text())
    assert "10000-image test set" in plan["data"] and plan["recipe"]["seeds"] == 2
    assert plan["input"]["input_size"] == [1, 32, 32] and plan["input"]["class_names"][9] == "Ankle boot"
    means = {n["label"]: n["select_accuracy_mean"] for n in summary["networks"]}
    for label in expected:  # the means are the seeds' means
        accs = [float(u["select_accuracy"]) for u in units if u["label"] == label]
        assert means[label] == pytest.approx(sum(accs) / 2, abs=1e-5)
    assert summary["best"] == max(means, key=means.get)
    flops = {n["label"]: n["flops"] for n in summary["networks"]}
    assert flops[summary["pick"]] <= flops[summary["best"]]
    # Only the chosen networks are scored on the test split, each seed from its kept weights.
    assert set(summary["test"]) == {summary["pick"], summary["best"], summary["reference"]}
    assert all(set(t["seeds"]) == {"0", "1"} for t in summary["test"].values())
    assert "verdict: " in done.stdout and summary["verdict"] in " ".join(done.stdout.split())
    assert "test split (scored only for the pick" in done.stdout
    # A rerun has nothing left to train; another recipe is refused in one line; another rule only re-summarises.
    again = cli("verify", str(run), *VERIFY)
    assert again.returncode == 0 and "unit 1/" not in again.stdout
    other = cli("verify", str(run), *VERIFY[:-1], "1024")
    assert other.returncode == 2 and "train_samples 512 -> 1024" in other.stderr and "Traceback" not in other.stderr
    # Units chosen on another number of held-out images (an earlier default) are not mixed with these.
    plan_file = folder / "verify.json"
    plan_text = plan_file.read_text()
    plan_file.write_text(json.dumps({**json.loads(plan_text), "select_images": 5000}))
    resized = cli("verify", str(run), *VERIFY)
    assert resized.returncode == 2 and "chose on 5000 held-out images, this run would on 10000" in resized.stderr
    plan_file.write_text(plan_text)
    # The test split is scored from the kept weights: a damaged one is named, in one line.
    weights = RunFolder(run).verification().weights_path(summary["pick"], 1)
    saved = weights.read_bytes()
    weights.write_bytes(b"not a state dict")
    damaged = cli("verify", str(run), *VERIFY)
    assert damaged.returncode == 2 and f"cannot read {weights}" in damaged.stderr and "Traceback" not in damaged.stderr
    weights.write_bytes(saved)
    accurate = cli("verify", str(run), *VERIFY, "--pick", "accurate")
    assert accurate.returncode == 0 and "unit 1/" not in accurate.stdout
    assert json.loads((folder / "summary.json").read_text())["pick"] == summary["best"]
    cli("verify", str(run), *VERIFY)  # back to the default pick
    # export (no --top/--trial) ships the pick with its seed-0 weights.
    exported = cli("export", str(run), "--out", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    pick = summary["pick"]
    from resnas._commands.export import _folder_name

    name = _folder_name(pick)
    shipped = torch.load(tmp_path / "export" / name / "weights.pt", weights_only=True)
    kept = torch.load(RunFolder(run).verification().weights_path(pick), weights_only=True)
    assert all(torch.equal(shipped[k], kept[k]) for k in kept)
    assert "verified" in (tmp_path / "export" / name / "card.md").read_text()


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
                         (["--baselines", "nonet"], "unknown zoo network 'nonet'"),
                         (["--margin", "-1"], "--margin must be at least 0"),
                         (["--select-samples", "0"], "--select-samples must be at least 1"),
                         (["--select-samples", "59900"], "--select-samples must be in [1, 59488]")):
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
    nets = choose(_records(rows), recipe, run)
    assert [(n.label, n.kind, n.trial, n.flops) for n in nets] == [
        ("resnet20", NetworkKind.CLASSIC, 0, 41_218_688), ("resnet32", NetworkKind.CLASSIC, None, 69_759_616)]
    # By default every classic the study trained, a pruned one too (its fewer-epoch accuracy left out of the tau).
    pruned = {"number": "1", "state": "pruned", "name": "resnet32", "val_accuracy": "0.3", "flops": "69759616",
              "arch": json.dumps(resnas.zoo.get("resnet32").to_dict())}
    nets = choose(_records([*rows, pruned]), Recipe(epochs=1, train_samples=10, batch_size=8, lr=0.1, width=0.5, seeds=1,
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


def test_verify_takes_the_proxy_best_then_the_cheapest_near_it_and_the_half_sized_classics() -> None:
    from resnas._verify import Recipe, choose

    run = {"settings": {"budget": 100_000_000}}
    arch = json.dumps(resnas.zoo.get("resnet20").to_dict())

    def row(number: int, acc: str, flops: int, name: str = "", state: str = "complete", origin: str = "") -> dict:
        return {"number": str(number), "state": state, "name": name, "val_accuracy": acc, "flops": str(flops),
                "arch": arch, "origin": origin or ("classic" if name else "sampler")}

    rows = [row(0, "0.80", 41_000_000, "resnet20"),
            row(1, "0.81", 60_000_000),  # the proxy's best
            row(2, "0.795", 20_000_000),  # 1.5 points behind: near; the cheapest of those
            row(3, "0.80", 30_000_000),  # near, dearer than #2 but more accurate: on the front
            row(4, "0.79", 35_000_000),  # near, but dearer than #3 and less accurate: off the front
            row(5, "0.70", 10_000_000),  # cheapest of all but 11 points behind: not near
            row(6, "0.40", 14_000_000, state="pruned", origin="scaled resnet20@d0.33")]
    recipe = Recipe(epochs=1, train_samples=10, batch_size=8, lr=0.1, width=0.5, seeds=1, top=3)
    labels = [n.label for n in choose(_records(rows), recipe, run)]
    assert labels == ["#1", "#2", "#3", "#6", "resnet20"]
    two = Recipe(epochs=1, train_samples=10, batch_size=8, lr=0.1, width=0.5, seeds=1, top=2)
    assert [n.label for n in choose(_records(rows), two, run)] == ["#1", "#2", "#6", "resnet20"]
    # Beyond the front, the next most accurate fill --top.
    five = Recipe(epochs=1, train_samples=10, batch_size=8, lr=0.1, width=0.5, seeds=1, top=5)
    assert [n.label for n in choose(_records(rows), five, run)] == ["#1", "#2", "#3", "#4", "#5", "#6", "resnet20"]
    assert next(n for n in choose(_records(rows), recipe, run) if n.label == "#6").origin == "scaled resnet20@d0.33"
