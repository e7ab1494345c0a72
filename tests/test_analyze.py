"""`resnas analyze`: EDFs, effects, CIs and importance against hand-computed numbers on a fabricated table; the
refined space; the HTML report in a real headless browser; bad inputs; one real end-to-end run through the CLI."""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resnas._analyze import (
    Exclusion,
    Run,
    analyze,
    bootstrap_difference,
    check_comparable,
    edf,
    quartile_bins,
    refine,
    write,
)
from resnas._commands import analyze as command
from resnas._errors import DataError, ResnasError
from resnas._space import SearchSpace
from resnas._trial import COLUMNS
from tests._e2e import ROOT, cli

SPACE = """input: {resolution: 32, channels: 3, classes: 10}
stem: cifar
stem_width: 16
block: basic
shortcut: [identity, gated]
order: [post, pre]
stages:
  - depth: [1, 2, 3, 4, 5, 6, 7, 8, 9, 12]
    width: 16
    stride: 1
  - depth: 1
    width: 32
    stride: 2
dropout: 0.0
"""
# (shortcut, order, stage-0 depth, accuracy): identity 80..88, gated 70..78 in steps of 2.
TABLE = [("identity", "post", 1, 0.80), ("identity", "pre", 2, 0.82), ("identity", "post", 3, 0.84),
         ("identity", "pre", 4, 0.86), ("identity", "post", 5, 0.88), ("gated", "post", 6, 0.70),
         ("gated", "pre", 7, 0.72), ("gated", "post", 8, 0.74), ("gated", "pre", 9, 0.76),
         ("gated", "post", 12, 0.78)]


def _arch(shortcut: str, order: str, depth: int) -> dict[str, Any]:
    return {"stages": [{"depth": depth, "stride": 1, "width": 16}, {"depth": 1, "stride": 2, "width": 32}],
            "block": "basic", "shortcut": shortcut, "order": order, "stem": "cifar", "stem_width": 16,
            "cardinality": 1, "base_width": 64, "width_multiplier": 1.0, "dropout": 0.0, "growth_rate": None,
            "bottleneck_size": None, "compression": None, "survival": "none", "survival_prob": 1.0}


def _row(number: int, state: str, accuracy: float | None, arch: dict[str, Any], *, name: str = "",
         epochs: int = 2) -> dict[str, Any]:
    row = {c: "" for c in COLUMNS}
    row.update(number=number, state=state, name=name, val_accuracy="" if accuracy is None else accuracy,
               flops=1_000_000 + 10_000 * number, epochs=epochs, arch=json.dumps(arch))
    return row


def _write_run(folder: Path, rows: list[dict[str, Any]], *, space: Path, budget: int = 5_000_000,
               sampler: str = "random", epochs: int = 2) -> Path:
    folder.mkdir(parents=True)
    settings = {"space": str(space), "budget": budget, "sampler": sampler, "classics": True, "epochs": epochs,
                "dataset": "synthetic"}
    (folder / "run.json").write_text(json.dumps({"owner": {"study": "resnas", "storage": None},
                                                 "settings": settings}))
    with open(folder / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return folder


def _fabricated(tmp_path: Path, folder: str = "run", **kw: Any) -> Path:
    """The ten TABLE models plus one trial of each excluded kind, in tmp_path / folder."""
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    rows = [_row(i, "complete", acc, _arch(s, o, d)) for i, (s, o, d, acc) in enumerate(TABLE)]
    rows += [_row(10, "pruned", 0.50, _arch("gated", "pre", 1), epochs=1),
             _row(11, "complete", 0.99, _arch("identity", "post", 3), name="classic_net"),
             _row(12, "over_budget", None, _arch("identity", "post", 12), epochs=0),
             _row(13, "duplicate", 0.80, _arch("identity", "post", 1))]
    return _write_run(tmp_path / folder, rows, space=space, **kw)


def _dim(budget: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in budget["dimensions"] if d["name"] == name)


def _level(dim: dict[str, Any], value: str) -> dict[str, Any]:
    return next(lv for lv in dim["levels"] if lv["value"] == value)


def test_edf_and_bins_by_hand() -> None:
    # Errors 30, 22, 26, 22: fraction with error <= e at each distinct e.
    assert edf([30, 22, 26, 22]) == [(22, 0.5), (26, 0.75), (30, 1.0)]
    # Ten depths: numpy's linear quartiles are 3.25, 5.5 and 7.75.
    assert quartile_bins([1, 2, 3, 4, 5, 6, 7, 8, 9, 12]) == [(1, 3), (4, 5), (6, 7), (8, 12)]
    assert quartile_bins([4, 1, 4, 2, 1]) == [(1, 1), (2, 2), (4, 4)]  # few values: each its own level
    # Four values among five models look continuous: quartiles 0.6, 0.7, 0.8.
    assert quartile_bins([0.5, 0.6, 0.7, 0.8, 0.8]) == [(0.5, 0.6), (0.7, 0.7), (0.8, 0.8)]


def test_bootstrap_matches_numpy_reference_and_t_interval() -> None:
    gated, identity = [70, 72, 74, 76, 78], [80, 82, 84, 86, 88]
    diff, low, high = bootstrap_difference(gated, identity, resamples=2000, seed=7)
    assert diff == pytest.approx(-10.0)
    assert low is not None and high is not None and low < diff < high
    # The documented scheme, rebuilt here with numpy.
    rng = np.random.default_rng(7)
    a, b = np.array(gated, float), np.array(identity, float)
    d = a[rng.integers(0, 5, (2000, 5))].mean(1) - b[rng.integers(0, 5, (2000, 5))].mean(1)
    assert (low, high) == pytest.approx(tuple(np.percentile(d, [2.5, 97.5])))
    assert bootstrap_difference(gated, identity, resamples=2000, seed=7) == (diff, low, high)
    # Welch's standard error is sqrt(10/5 + 10/5) = 2: the percentile bootstrap (narrower at n = 5) sits inside
    # the t-interval (df 8: +/- 2.306 x 2) and is no less than half as wide.
    t_low, t_high = -10 - 2.306 * 2, -10 + 2.306 * 2
    assert t_low < low and high < t_high and (high - low) > 0.5 * (t_high - t_low)
    assert bootstrap_difference([1.0], [2.0, 3.0], resamples=100, seed=0) == (-1.5, None, None)


def test_effects_edfs_importance_and_verdicts_by_hand(tmp_path: Path) -> None:
    run = _fabricated(tmp_path)
    analysis = analyze([run], resamples=2000, seed=0)
    data = analysis.to_dict()
    (budget,) = data["budgets"]
    assert budget["models"] == 10
    assert budget["excluded"] == {Exclusion.PRUNED.value: 1, Exclusion.CLASSIC.value: 1,
                                  Exclusion.OVER_BUDGET.value: 1, Exclusion.DUPLICATE.value: 1}
    assert sorted(u["number"] for u in data["used"]) == list(range(10))
    assert {d["name"] for d in budget["dimensions"]} == {"shortcut", "order", "stages[0].depth"}

    shortcut = _dim(budget, "shortcut")
    assert shortcut["reference"] == "identity"
    gated, identity = _level(shortcut, "gated"), _level(shortcut, "identity")
    assert (gated["n"], gated["mean_accuracy"], identity["mean_accuracy"]) == (5, 74.0, 84.0)
    assert identity["effect"] is None
    assert gated["effect"]["points"] == -10.0 and gated["effect"]["conclusive"]
    assert gated["effect"]["ci_high"] < 0
    assert gated["edf"] == [[22.0, 0.2], [24.0, 0.4], [26.0, 0.6], [28.0, 0.8], [30.0, 1.0]]

    order = _dim(budget, "order")  # post 80 84 88 70 74 78 (mean 79), pre 82 86 72 76 (mean 79)
    pre = _level(order, "pre")
    assert (order["reference"], pre["n"], pre["mean_accuracy"]) == ("post", 4, 79.0)
    assert pre["effect"]["points"] == 0.0 and not pre["effect"]["conclusive"]  # 4 < 5 models

    depth = _dim(budget, "stages[0].depth")  # bins 1..3 (82), 4..5 (87), 6..7 (71), 8..12 (76)
    assert depth["binned"] and [lv["value"] for lv in depth["levels"]] == ["1..3", "4..5", "6..7", "8..12"]
    assert [lv["mean_accuracy"] for lv in depth["levels"]] == [82.0, 87.0, 71.0, 76.0]
    assert depth["reference"] == "1..3"  # most common (3 models, tied with 8..12: the lower wins)
    assert _level(depth, "8..12")["effect"]["points"] == -6.0

    # Variance share: total SS of 70..88 step 2 is 330; between shortcuts 5 x 25 + 5 x 25 = 250.
    imp = budget["importance"]
    assert imp["variance_share"]["shortcut"] == pytest.approx(250 / 330, abs=1e-4)
    assert imp["variance_share"]["order"] == pytest.approx(0.0, abs=1e-9)
    assert imp["method"] == "ped-anova" and sum(imp["values"].values()) == pytest.approx(1.0, abs=1e-3)
    assert imp["values"]["shortcut"] > imp["values"]["order"]

    verdicts = budget["verdicts"]
    assert any(re.fullmatch(r"gated \(Highway\) shortcut costs here: -10\.0 points \[-\d+\.\d, -\d+\.\d\] "
                            r"against identity shortcut \(n = 5 / 5\)", v) for v in verdicts), verdicts
    assert any(v.startswith("pre-activation vs post-activation: too few to conclude") for v in verdicts)
    assert any("queued classics" in w for w in data["warnings"])
    assert any("pruned" in w for w in data["warnings"])
    assert not any("not a random sample" in w for w in data["warnings"])


def test_tpe_runs_are_flagged_biased(tmp_path: Path) -> None:
    analysis = analyze([_fabricated(tmp_path, sampler="tpe")], resamples=200, seed=0)
    assert any("not a random sample of the space" in w for w in analysis.warnings)


def test_refined_space_drops_the_bad_value_and_shrinks_depth(tmp_path: Path) -> None:
    analysis = analyze([_fabricated(tmp_path)], resamples=2000, seed=0)
    out = tmp_path / "analysis"
    out.mkdir()
    path = refine(analysis, out)
    text = path.read_text()
    refined, original = SearchSpace.from_yaml(path), SearchSpace.from_yaml(tmp_path / "space.yaml")
    dims = {d.name: d.domain for d in refined.dimensions()}
    before = {d.name: d.domain for d in original.dimensions()}
    assert set(dims) <= set(before)
    for name, domain in dims.items():
        assert set(domain.options()) <= set(before[name].options()), name
    assert [s.value for s in dims["shortcut"].options()] == ["identity"]  # gated: -10 points, CI below 0
    assert re.search(r"# dropped gated: -10\.0 points \[-\d+\.\d, -\d+\.\d\] vs identity, n=5/5", text)
    # Top quartile: accuracy >= 83.5 (numpy's 0.75 quantile of 70..88) holds depths 3, 4, 5.
    assert list(dims["stages[0].depth"].options()) == [3, 4, 5]
    # Inside 3..5: 84 86 88 (mean 86); outside: 80 82 70 72 74 76 78 (mean 76).
    assert re.search(r"# shrunk to 3\.\.5, .*inside \+10\.0 points \[\+\d+\.\d, \+\d+\.\d\] over outside, n=3/7", text)
    assert [o.value for o in dims["order"].options()] == ["post", "pre"]  # inconclusive: kept



def test_refine_removes_the_keys_dropped_values_leave_without_a_use_each_with_a_note() -> None:
    from resnas._analyze.refine import _drop_inapplicable
    from resnas._space_yaml import load_yaml

    raw = load_yaml(ROOT / "search_spaces" / "resnet_family.yaml")
    no_bottleneck = {**raw, "block": ["basic"]}
    assert list(_drop_inapplicable(no_bottleneck).values()) == [
        "dense_cardinality removed: no dense bottleneck net is left",
        "cardinality removed: no residual bottleneck net is left", "base_width removed: no cardinality above 1 is left"]
    only_dense = {**raw, "shortcut": ["dense"], "stages": [dict(s) for s in raw["stages"]]}
    assert list(_drop_inapplicable(only_dense)) == ["width_multiplier (removed)", "cardinality (removed)",
                                                    "base_width (removed)"]  # the stage widths go silently
    assert not any("width" in stage for stage in only_dense["stages"])
    for refined in (no_bottleneck, only_dense):
        SearchSpace.from_dict(refined)  # a space file again

def test_sweep_folder_gives_the_budget_table(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for budget, name in ((5_000_000, "b5M"), (10_000_000, "b10M")):
        _fabricated(tmp_path, f"sweep/{name}", budget=budget)
    (sweep / "sweep.json").write_text(json.dumps({"space": str(tmp_path / "space.yaml"),
                                                  "budgets": [5_000_000, 10_000_000], "samples": 10,
                                                  "runs": ["b5M", "b10M"]}))
    analysis = analyze([sweep], resamples=500, seed=0)
    cols, rows = analysis.table()
    assert cols == [5_000_000, 10_000_000]
    cells = dict(rows)["gated (Highway) shortcut vs identity shortcut"]
    assert all(c.startswith("-10.0 points [") and c.endswith("(n=5/5)") for c in cells)
    assert dict(rows)["pre-activation vs post-activation"][0].endswith("(n=4/6) (too few)")
    files = write(analysis, tmp_path / "out")
    assert {p.name for p in files} >= {"edf_shortcut.png", "importance.png"}
    text = refine(analysis, tmp_path / "out").read_text()
    assert re.search(r"# dropped gated: .* at 5\.00 MFLOPs; dropped gated: .* at 10\.00 MFLOPs", text)


def test_outputs_and_html_in_headless_chromium(tmp_path: Path) -> None:
    run = _fabricated(tmp_path)
    out = tmp_path / "analysis"
    files = write(analyze([run], resamples=500, seed=0), out)
    names = {p.name for p in files}
    assert {"analysis.json", "index.html", "importance.png", "accuracy_vs_flops_by_shortcut.png",
            "accuracy_vs_flops_by_order.png", "edf_shortcut.png", "edf_order.png", "edf_stage0_depth.png"} <= names
    page = (out / "index.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert "<script" not in page and page.count("data:image/png;base64,") == 6
    browser = shutil.which("chromium")
    assert browser, "chromium is needed: apt-get install -y chromium"
    shot = tmp_path / "shot.png"
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                           "--host-resolver-rules=MAP * ~NOTFOUND", f"--screenshot={shot}", "--window-size=1200,2000",
                           (out / "index.html").as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file(), done.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text and plots, not a blank page


def _main(*argv: str) -> int:
    """`resnas analyze ARGV` in this process, through resnas.cli.main (its one-line errors, exit code 2)."""
    from resnas import cli as resnas_cli

    if "analyze" in resnas_cli._COMMANDS:
        return resnas_cli.main(["analyze", *argv])
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    args = parser.parse_args(["analyze", *argv])
    try:
        return int(args.func(args))
    except ResnasError as e:
        print(f"resnas: error: {resnas_cli.message(e)}", file=sys.stderr)
        return 2


def _cli_analyze(*argv: str) -> subprocess.CompletedProcess[str]:
    """`resnas analyze` in a subprocess through resnas.cli.main (registered here until cli.py lists it)."""
    code = ("import sys; from resnas import cli; "
            "cli._COMMANDS += ('analyze',) * ('analyze' not in cli._COMMANDS); sys.exit(cli.main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, "analyze", *argv], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=300)


def test_bad_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert _main(str(tmp_path / "empty")) == 2
    assert "is not a resnas run folder" in capsys.readouterr().err

    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    few = _write_run(tmp_path / "few", [_row(i, "complete", 0.8, _arch("identity", "post", 1)) for i in range(7)],
                     space=space)
    assert _main(str(few)) == 2
    assert "7 complete sampled trials" in capsys.readouterr().err

    good = _fabricated(tmp_path)
    other = tmp_path / "other.yaml"
    other.write_text(SPACE)
    rows = [_row(i, "complete", 0.8, _arch("identity", "post", 1)) for i in range(9)]
    mixed = _write_run(tmp_path / "mixed", rows, space=other)
    assert _main(str(good), str(mixed), "--out", str(tmp_path / "a")) == 2
    assert "analyze runs of one space at a time" in capsys.readouterr().err
    assert _main(str(good), str(good)) == 2
    assert "several folders need --out" in capsys.readouterr().err
    rows = [_row(i, "complete", 0.8, _arch("identity", "post", 1)) for i in range(9)]
    rows[4]["arch"] = "{"
    damaged = _write_run(tmp_path / "damaged", rows, space=space)
    assert _main(str(damaged)) == 2
    assert "trial 4 is damaged" in capsys.readouterr().err
    assert _main(str(good), "--bootstrap", "5") == 2
    assert "at least 100 resamples" in capsys.readouterr().err
    assert _main(str(good), "--seed", "-1") == 2
    assert "--seed must be at least 0" in capsys.readouterr().err
    # One file name, but the studies recorded different contents; or one space trained differently.
    one, two = Run(good, {"space": "a/s.yaml"}, [], "aaaa", None), Run(few, {"space": "b/s.yaml"}, [], "bbbb", None)
    with pytest.raises(DataError, match="analyze runs of one space at a time"):
        check_comparable([one, two])
    longer = Run(few, {"space": "b/s.yaml", "epochs": 3}, [], None, None)
    with pytest.raises(DataError, match="was trained with epochs 3"):
        check_comparable([Run(good, {"space": "a/s.yaml", "epochs": 2}, [], None, None), longer])


@pytest.mark.slow
def test_cli_end_to_end_on_fashion_mnist(tmp_path: Path) -> None:
    """Two real random searches on a slice of Fashion-MNIST, analysed (and refined) through the CLI."""
    space = tmp_path / "small.yaml"
    space.write_text(SMALL_SPACE)
    flags = ["--space", str(space), "--budget", "20M", "--epochs", "1", "--train-samples", "256", "--val-samples",
             "128", "--batch-size", "64", "--proxy-width", "0.25", "--sampler", "random", "--no-classics",
             "--trials", "5", "--dataset", "fashion-mnist"]
    # Run 1 samples only; run 2 makes its 4th trial a local move (after the 3 openings), not a random sample.
    for seed, moves in (("1", "0"), ("2", "0.5")):
        done = cli("search", *flags, "--seed", seed, "--local-moves", moves, "--out", str(tmp_path / f"run{seed}"))
        assert done.returncode == 0, done.stderr
    analysed = _cli_analyze(str(tmp_path / "run1"), str(tmp_path / "run2"), "--out", str(tmp_path / "a"),
                   "--refine", "--bootstrap", "500")
    assert analysed.returncode == 0, analysed.stderr
    data = json.loads((tmp_path / "a" / "analysis.json").read_text())
    (budget,) = data["budgets"]
    assert "9 models (left out" in analysed.stdout and budget["summary"][:60] in analysed.stdout
    assert budget["models"] == 9 and len(data["used"]) == 9
    assert "1 local moves and half-sized classics (chosen, not random samples) left out" in analysed.stdout
    assert any(d["name"] == "shortcut" for d in budget["dimensions"])
    refined = SearchSpace.from_yaml(tmp_path / "a" / "refined_space.yaml")
    before = {d.name: set(d.domain.options()) for d in SearchSpace.from_yaml(space).dimensions()
              if d.domain.count is not None}
    for d in refined.dimensions():
        if d.domain.count is not None:
            assert set(d.domain.options()) <= before[d.name]
    bad = _cli_analyze(str(tmp_path))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a resnas run folder" in bad.stderr


# Small enough that most random architectures fit 20 MFLOPs at 32x32 and train in a second or two.
SMALL_SPACE = """input: {resolution: 32, channels: 3, classes: 10}
stem: cifar
stem_width: [16, 24]
block: [basic, bottleneck]
shortcut: [identity, gated, dense]
order: [post, pre]
stages:
  - depth: [1, 2]
    width: [16, 32]
    stride: 1
  - depth: [1, 2]
    width: [32, 64]
    stride: 2
width_multiplier: [1.0, 2.0]
cardinality: [1, 2]
base_width: [16]
growth_rate: [12, 16]
bottleneck_size: [2, 4]
compression: [0.5, 1.0]
dense_cardinality: [1]
dropout: [0.0, 0.1]
survival: [none, linear]
survival_prob: {min: 0.5, max: 1.0}
"""


def test_a_verified_run_shows_its_pick_and_the_test_accuracy_of_the_chosen_only() -> None:
    from resnas._analyze import Analysis, Run

    summary = json.loads((ROOT / "results" / "default-cpu" / "verify" / "summary.json").read_text())
    run = Run(Path("r"), {"budget": 4_000_000_000}, [], None, summary)
    (verified,) = Analysis([run], [], [], 0, 0).verified()
    assert verified["pick"] == summary["pick"] and verified["verdict"] == summary["verdict"]
    by_label = {n["label"]: n for n in verified["networks"]}
    assert set(by_label) == {n["label"] for n in summary["networks"]}
    for label, n in by_label.items():
        entry = next(x for x in summary["networks"] if x["label"] == label)
        assert n["select_accuracy_mean"] == entry["select_accuracy_mean"]
        # The test split scored only the networks the verification chose.
        assert n["test_accuracy_mean"] == (summary["test"][label]["mean"] if label in summary["test"] else None)
