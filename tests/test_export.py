"""`resnas export`: model.py against resnas's modules in a fresh interpreter, model.pt2 and model.onnx, the card,
the CLI. (The input contract, raw images and the verified pick: tests/test_export_contract.py.)"""

from __future__ import annotations

import ast
import inspect
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnxruntime
import pytest
import torch
from torch import nn

import resnas
from resnas import _blocks
from resnas._arch import Arch, Block, Order, Shortcut, Stem, Survival
from resnas._contract import InputContract
from resnas._export import export, load
from resnas._model_source import model_source, shared_source
from resnas._runfolder import RUN_FILE, RunFolder
from resnas._trial import TrialRecord, TrialState
from resnas.cli import main

ROOT = Path(__file__).resolve().parent.parent
SPACES = ("cifar_family", "resnet_family")

# Runs in `python -I` (no PYTHONPATH, no user site, no cwd on the path), where resnas and torchvision are
# refused outright: each export folder is imported the way a person would, `cd folder; import model`.
_CHILD = r"""
import json, os, sys

class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("resnas", "torchvision"):
            raise ImportError(f"model.py imported {name}")
        return None

sys.meta_path.insert(0, _Refuse())
import torch
from torch import nn

torch.set_num_threads(1)
results = {}
for case in json.loads(sys.argv[1]):
    os.chdir(case["folder"])
    sys.path.insert(0, os.getcwd())
    sys.modules.pop("model", None)
    import model
    net = model.load()
    sys.path.pop(0)
    check = torch.load(case["check"], weights_only=True)
    out = {
        "eval_mode": not net.training,
        "classes": sorted({v.__name__ for v in vars(model).values()
                           if isinstance(v, type) and v.__module__ == "model"}),
        "modules": sorted({type(m).__name__ for m in net.modules() if type(m).__module__ == "model"}),
        "survival": [m.survival_prob for m in net.modules() if type(m).__name__ == "DropPath"],
        "dropout": [m.p for m in net.modules() if isinstance(m, nn.Dropout)],
    }
    with torch.no_grad():
        out["eval"] = (net(check["x"]) - check["eval"]).abs().max().item()
        if "train" in check:
            net.train()
            torch.manual_seed(0)
            out["train"] = (net(check["x"]) - check["train"]).abs().max().item()
    results[case["name"]] = out
print(json.dumps(results))
"""


def _randomised(arch: Arch, num_classes: int, seed: int) -> nn.Module:
    """`build(arch)` with every parameter and BN statistic random (He-normal convs are random already).

    The BN statistics are those of one random batch, as training would leave them: arbitrary ones make a
    deep net's logits overflow, and infinities compare equal however wrong the network.
    """
    torch.manual_seed(seed)
    net = resnas.build(arch, num_classes=num_classes)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.momentum = None  # running statistics = this batch's
            elif isinstance(m, _blocks.HighwayGate):
                nn.init.normal_(m.weight, 0, 0.1)
                nn.init.normal_(m.bias, 0, 1.0)  # type: ignore[arg-type]  # a gate always has a bias
        net.train()(torch.randn(4, 3, 32, 32))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return net.eval()


def _expected_classes(net: nn.Module, arch: Arch) -> list[str]:
    """The classes model.py should define: resnas's of the network's modules and their bases, `Model`, and
    the projection or transition that a residual block's or dense stage's code names where none is built."""
    used = {c.__name__ for m in net.modules() for c in type(m).__mro__ if c.__module__ == _blocks.__name__}
    used.add("Transition" if arch.shortcut is Shortcut.DENSE else "Projection")
    return sorted(used | {"Model"})


def _check_in_fresh_interpreter(cases: list[tuple[str, Arch, int]], root: Path, batch: int) -> dict[str, Any]:
    """Export every case, run each folder's model.py in one isolated interpreter, compare with resnas."""
    payload, expected = [], {}
    (root / "checks").mkdir()
    for i, (name, arch, classes) in enumerate(cases):
        net = _randomised(arch, classes, seed=i)
        folder = export(arch, net.state_dict(), root / name, num_classes=classes, resolution=32, pt2=False,
                        onnx=False, card={"title": name})
        x = torch.randn(batch, 3, 32, 32)
        check = {"x": x}
        with torch.no_grad():
            check["eval"] = net(x)
            if arch.dropout > 0 or arch.survival is not Survival.NONE:
                net.train()
                torch.manual_seed(0)
                check["train"] = net(x)
        torch.save(check, root / "checks" / f"{name}.pt")
        payload.append({"name": name, "folder": str(folder), "check": str(root / "checks" / f"{name}.pt")})
        expected[name] = {
            "classes": _expected_classes(net, arch),
            # Model is a Network: its modules are resnas's, but that its own class is model.py's.
            "modules": sorted({type(m).__name__ for m in net.modules()
                               if type(m).__module__ == _blocks.__name__} - {"Network"} | {"Model"}),
            "survival": [m.survival_prob for m in net.modules() if isinstance(m, _blocks.DropPath)],
            "dropout": [m.p for m in net.modules() if isinstance(m, nn.Dropout)],
            "train": "train" in check,
        }
        _assert_standalone_source(folder / "model.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", _CHILD, json.dumps(payload)], cwd=payload[0]["folder"],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    for name, want in expected.items():
        got = results[name]
        assert got["eval"] < 1e-5, (name, got["eval"])  # NaN fails too
        assert got["eval_mode"], name
        assert got["classes"] == want["classes"], name
        assert got["modules"] == want["modules"], name
        assert got["survival"] == want["survival"] and got["dropout"] == want["dropout"], name
        # Same random draws in the same order: stochastic depth and dropout act exactly as resnas's.
        assert ("train" in got) == want["train"] and got.get("train", 0.0) < 1e-5, (name, got.get("train"))
    return results


def _assert_standalone_source(path: Path) -> None:
    """model.py imports torch only (and the standard library's pathlib) and keeps to 110 columns."""
    text = path.read_text()
    assert max(len(line) for line in text.splitlines()) <= 110, path
    tree = ast.parse(text)
    modules = {alias.name.partition(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {(node.module or "").partition(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom)}
    assert modules <= {"__future__", "pathlib", "torch"}, modules


def test_every_zoo_member(tmp_path: Path) -> None:
    cases = [(name, resnas.zoo.get(name), resnas.zoo.entry(name).num_classes) for name in resnas.zoo.names()]
    try:
        _check_in_fresh_interpreter(cases, tmp_path, batch=2)
        for name, _, _ in cases:
            text = (tmp_path / name / "model.py").read_text()
            assert str(tmp_path) not in text and "/work" not in text
            # A row per stage, not a line per block (preact_resnet1001 has 333 blocks).
            assert len(text.splitlines()) < 300, name
    finally:
        for name, _, _ in cases:  # 2.6 GB of weights: do not leave them to pytest's kept temporary folders
            (tmp_path / name / "weights.pt").unlink(missing_ok=True)


def _features(arch: Arch) -> set[str]:
    kind = "dense" if arch.shortcut is Shortcut.DENSE else "residual"
    found = {arch.shortcut.value, arch.order.value, arch.block.value, f"stem {arch.stem.value}",
             f"survival {arch.survival.value}", f"{arch.shortcut.value} {arch.order.value}",
             f"{arch.shortcut.value} {arch.block.value}"}
    if arch.cardinality > 1:
        found.add(f"{kind} cardinality")
    if arch.width_multiplier != 1.0:
        found.add("width multiplier")
    if arch.dropout > 0:
        found.add("dropout")
        if arch.survival is not Survival.NONE:
            found.add("stochastic depth and dropout")
    return found


REQUIRED = (
    {s.value for s in Shortcut} | {o.value for o in Order} | {b.value for b in Block}
    | {f"stem {s.value}" for s in Stem} | {f"survival {s.value}" for s in Survival}
    | {f"{s.value} {o.value}" for s in Shortcut for o in Order}
    | {f"{s.value} {b.value}" for s in Shortcut for b in Block}
    | {"residual cardinality", "dense cardinality", "width multiplier", "dropout",
       "stochastic depth and dropout"}
)

# Shapes no space samples: no projection at all, a projection in every block, a single dense stage,
# a stride-1 dense transition, and a survival schedule that keeps every block.
HANDMADE = {name: Arch.from_dict(spec) for name, spec in {
    "no_projection": dict(stages=[dict(depth=2, stride=1, width=16)], block="basic", stem="cifar",
                          stem_width=16),
    "all_projections": dict(stages=[dict(depth=1, stride=1, width=8), dict(depth=1, stride=2, width=16)],
                            block="bottleneck", shortcut="gated", order="pre", stem="cifar", stem_width=16,
                            cardinality=2, base_width=16),
    "one_dense_stage": dict(stages=[dict(depth=3)], block="basic", shortcut="dense", order="post",
                            stem="cifar", stem_width=8, growth_rate=4, bottleneck_size=2, compression=0.5,
                            dropout=0.2, survival="uniform", survival_prob=0.7),
    "stride1_transition": dict(stages=[dict(depth=2), dict(depth=2, stride=1), dict(depth=2, stride=2)],
                               block="bottleneck", shortcut="dense", order="pre", stem="cifar", stem_width=8,
                               growth_rate=4, bottleneck_size=2, compression=0.75, cardinality=2),
    "survival_one": dict(stages=[dict(depth=2, stride=1, width=8)], block="basic", stem="cifar", stem_width=8,
                         survival="linear", survival_prob=1.0),
}.items()}


def _random_architectures() -> list[tuple[str, Arch, int]]:
    """Samples of both spaces, small enough to run quickly, until every feature in REQUIRED is covered."""
    spaces = {name: resnas.SearchSpace.from_yaml(ROOT / "search_spaces" / f"{name}.yaml") for name in SPACES}
    chosen: list[tuple[str, Arch, int]] = []
    covered: set[str] = set()
    for seed in range(3000):
        for name, space in spaces.items():
            arch = space.sample(random.Random(seed))
            new = _features(arch) - covered
            small = arch.num_blocks <= 40 and resnas.count(arch, resolution=32, num_classes=10).params < 4e6
            if new and small:
                chosen.append((f"{name}_{seed}", arch, 10))
                covered |= new
        if covered >= REQUIRED:
            break
    assert covered >= REQUIRED, f"the samples miss {sorted(REQUIRED - covered)}"
    return chosen


def test_random_architectures_of_both_spaces(tmp_path: Path) -> None:
    cases = _random_architectures() + [(name, arch, 10) for name, arch in HANDMADE.items()]
    assert {name.rsplit("_", 1)[0] for name, _, _ in cases} >= set(SPACES)
    results = _check_in_fresh_interpreter(cases, tmp_path, batch=4)
    # Every module class of resnas._blocks was copied into a model.py and built there by these cases.
    kinds = {n for n, c in vars(_blocks).items() if isinstance(c, type) and issubclass(c, nn.Module)
             and c.__module__ == _blocks.__name__}
    built = set().union(*(r["modules"] for r in results.values()))
    assert kinds - {"Network", "Branch", "ResidualBlock"} <= built, kinds - built  # Model is the Network
    assert kinds <= set().union(*(r["classes"] for r in results.values()))
    assert any("train" in r for r in results.values())
    assert results["survival_one"]["survival"] == [1.0, 1.0]
    assert "Projection" not in results["no_projection"]["modules"]
    assert "Transition" not in results["one_dense_stage"]["modules"]
    assert "HighwayGate" not in results["no_projection"]["classes"]  # only the gate the blocks use


@pytest.mark.parametrize("name", ["no_projection", "all_projections", "stride1_transition"])
def test_fresh_model_is_initialised_like_resnas(tmp_path: Path, name: str) -> None:
    arch = HANDMADE[name]
    folder = export(arch, _randomised(arch, 10, 0).state_dict(), tmp_path / name, num_classes=10, pt2=False,
                    onnx=False)
    model_cls = type(load(folder))
    torch.manual_seed(1)
    ours = resnas.build(arch, num_classes=10).state_dict()
    torch.manual_seed(1)
    theirs = model_cls().state_dict()
    assert list(theirs) == list(ours)
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)


# How the fake run's trials saw their images: CIFAR-like statistics, ten named classes.
CONTRACT = InputContract(resolution=32, channels=3, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26),
                         class_names=tuple(f"class {i}" for i in range(10)))


def _fake_run(root: Path, archs: dict[int, Arch], complete: dict[int, float], kept: set[int],
              contract: InputContract | None = CONTRACT) -> Path:
    """A run folder as `resnas search` leaves it (run.json, trials.csv, weights/), without the training; without
    `contract`, as an older resnas left it."""
    run = root / "run"
    (run / "weights").mkdir(parents=True)
    settings = {"space": "search_spaces/cifar_family.yaml", "budget": 10**8, "dataset": "synthetic",
                "epochs": 1, "train_samples": 200, "val_samples": 100, "batch_size": 64, "lr": 0.05,
                "command": f"resnas search --budget 100M --out {run} --data-root={root}/data"}
    (run / RUN_FILE).write_text(json.dumps({
        "settings": settings, "proxy_width": 0.5, "data": f"Fashion-MNIST from {root}/data: 3x32x32",
        "deployment_input": {"resolution": 64, "channels": 3, "classes": 10},
        "training_input": {"resolution": 32, "channels": 3, "classes": 10},
        **({"input_contract": contract.to_dict()} if contract is not None else {})}))
    records = []
    for number, arch in archs.items():
        trained = arch.narrowed(0.5)
        state = TrialState.COMPLETE if number in complete else TrialState.OVER_BUDGET
        records.append(TrialRecord(
            number=number, state=state, name="", val_accuracy=complete.get(number), flops=1000 + number, params=None,
            macs=None, budget_fraction=None, duration_s=None, epochs=1, train_flops=None, images_per_s=None,
            node="", reason="", origin="sampler", arch=arch.to_dict(),
            trained_arch=trained.to_dict() if number in complete else None))
        if number in kept:
            torch.save(_randomised(trained, 10, number).state_dict(), RunFolder(run).weights_path(number))
    RunFolder(run).write_trials(records)
    return run


RUN_ARCHS = {
    0: HANDMADE["no_projection"],
    1: HANDMADE["stride1_transition"],
    2: Arch.from_dict(dict(stages=[dict(depth=2, stride=1, width=16), dict(depth=2, stride=2, width=32)],
                           block="basic", shortcut="gated", order="pre", stem="cifar", stem_width=16,
                           dropout=0.1, survival="linear", survival_prob=0.6)),
    3: HANDMADE["all_projections"],
}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return _fake_run(tmp_path, RUN_ARCHS, complete={1: 0.5, 2: 0.7, 3: 0.6}, kept={1, 2})


def test_export_top_trials_of_a_run(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(run_dir), "--top", "3"]) == 0
    out = run_dir / "export"
    assert sorted(p.name for p in out.iterdir()) == ["trial_0001", "trial_0002"]  # trial 3's weights are gone
    assert "only 2 complete trial(s) have kept weights" in capsys.readouterr().out
    for number in (1, 2):
        folder = out / f"trial_{number:04d}"
        trained = Arch.from_dict(json.loads((folder / "arch.json").read_text()))
        searched = Arch.from_dict(json.loads((folder / "searched_arch.json").read_text()))
        assert searched == RUN_ARCHS[number] and trained == searched.narrowed(0.5)
        assert sorted(p.name for p in folder.iterdir()) == [
            "arch.json", "card.md", "model.onnx", "model.pt2", "model.py", "preprocess.json", "searched_arch.json",
            "weights.pt", "weights.safetensors"]
        # model.py, the weights, model.pt2 and model.onnx are all the trained (narrowed) network.
        net = resnas.build(trained, num_classes=10).eval()
        weights = RunFolder(run_dir).weights_path(number)
        net.load_state_dict(torch.load(weights, weights_only=True), strict=True)
        mine = load(folder, normalized_input=True)
        # resnas's keys in resnas's order, then the preprocessing's statistics.
        assert not mine.training and list(mine.state_dict()) == list(net.state_dict()) + ["preprocess.mean",
                                                                                           "preprocess.std"]
        raw = load(folder)
        program = torch.export.load(folder / "model.pt2").module()
        session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        for batch in (1, 3):  # neither is the batch of 2 it was exported with
            x = torch.randn(batch, 3, 32, 32)
            images = torch.randint(0, 256, (batch, 3, 40, 29), dtype=torch.uint8)
            with torch.no_grad():
                assert (mine(x) - net(x)).abs().max().item() < 1e-5
                want = raw(images)
                assert (program(images) - want).abs().max().item() < 1e-5
            onnx = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
            assert (onnx - want).abs().max().item() < 1e-4
        for path in folder.iterdir():  # nothing of this machine: not the run's path, not the checkout's
            data = path.read_bytes()
            assert str(run_dir.parent).encode() not in data, path
            assert b"/work" not in data and b"/tmp" not in data, path

    card = (out / "trial_0002" / "card.md").read_text()
    cost = resnas.count(RUN_ARCHS[2].narrowed(0.5), resolution=32, num_classes=10)
    full = resnas.count(RUN_ARCHS[2], resolution=64, num_classes=10)
    for fact in ("# Trial 2 of run run", "0.7000 (trial 2)", "synthetic", f"{cost.flops:,}",
                 f"{full.flops:,}", f"{cost.params / 1e6:.3f} M",
                 "epochs 1, train samples 200, val samples 100",
                 "training input 3x32x32", "proxy width 0.5", "weights.pt only fits it",
                 "--out .../run --data-root=.../data", "Fashion-MNIST from .../data",
                 "from model import load; model = load()", 'resnas.load("trial_0002")',
                 'torch.export.load("trial_0002/model.pt2").module()', 'ort.InferenceSession("trial_0002/model.onnx")',
                 "## How to use it on your images", "0 class 0, 1 class 1", 'load_file("weights.safetensors")'):
        assert fact in card, fact


def test_export_best_trial_by_default_and_one_trial(run_dir: Path, tmp_path: Path) -> None:
    assert main(["export", str(run_dir)]) == 0
    assert [p.name for p in (run_dir / "export").iterdir()] == ["trial_0002"]
    assert main(["export", str(run_dir), "--trial", "1", "--out", str(tmp_path / "one")]) == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["trial_0001"]


def test_export_untrained_zoo_network(tmp_path: Path) -> None:
    folder = tmp_path / "r18"
    assert main(["export", "--arch", "resnet18", "--out", str(folder), "--resolution", "64"]) == 0
    # No training data, so no input contract: no preprocess.json, and every file takes normalised tensors.
    assert sorted(p.name for p in folder.iterdir()) == ["arch.json", "card.md", "model.onnx", "model.pt2", "model.py"]
    assert Arch.from_dict(json.loads((folder / "arch.json").read_text())) == resnas.zoo.get("resnet18")
    card = (folder / "card.md").read_text()
    assert "none: an untrained export" in card and "torchvision" in card and "3x64x64, 1000 classes" in card
    assert "No preprocessing: this network is untrained" in card and "Preprocess" not in card
    assert "class Preprocess" not in (folder / "model.py").read_text()
    with pytest.raises(FileNotFoundError, match="no weights here"):
        load(folder)
    program = torch.export.load(folder / "model.pt2").module()
    x = torch.randn(3, 3, 64, 64)
    assert program(x).shape == (3, 1000)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "input" and session.get_inputs()[0].type == "tensor(float)"
    assert session.run(None, {"input": x.numpy()})[0].shape == (3, 1000)


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnas: error: ")
    return lines[0]


def test_errors(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _error(capsys, ["export", str(run_dir), "--trial", "3"])
    assert "trial 3 (complete) has no kept weights" in line and "trials with weights: 2, 1" in line
    line = _error(capsys, ["export", str(run_dir), "--trial", "0"])
    assert "trial 0 (over_budget) has no kept weights" in line
    assert "has no trial 7" in _error(capsys, ["export", str(run_dir), "--trial", "7"])
    assert "not a resnas run folder" in _error(capsys, ["export", str(tmp_path)])
    both = ["export", str(run_dir), "--arch", "resnet20", "--out", str(tmp_path)]
    assert "not both" in _error(capsys, both)
    assert "not both" in _error(capsys, ["export", str(run_dir), "--top", "2", "--trial", "1"])
    assert "nothing to export" in _error(capsys, ["export"])
    assert "--arch needs --out" in _error(capsys, ["export", "--arch", "resnet20"])
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert "cannot write to --out" in _error(capsys, ["export", str(run_dir), "--out", str(blocked / "x")])
    assert "--classes applies to --arch" in _error(capsys, ["export", str(run_dir), "--classes", "5"])
    unfinished = _fake_run(tmp_path / "unfinished", {0: RUN_ARCHS[0]}, complete={}, kept=set())
    assert "has no complete trial yet" in _error(capsys, ["export", str(unfinished)])
    # An older resnas recorded no input contract: refused, naming the file and the fix (rerun the search).
    older = _fake_run(tmp_path / "older", RUN_ARCHS, complete={2: 0.7}, kept={2}, contract=None)
    line = _error(capsys, ["export", str(older)])
    assert "run.json does not record how raw images became the networks' inputs" in line
    assert "rerun the search's command (`resnas search --budget 100M" in line
    assert not (older / "export").exists()


def test_api_errors(tmp_path: Path) -> None:
    arch = HANDMADE["no_projection"]
    with pytest.raises(ValueError, match="state_dict does not fit the arch"):
        export(arch, resnas.build(HANDMADE["survival_one"]).state_dict(), tmp_path, num_classes=1000)
    with pytest.raises(ValueError, match="card: unknown key 'accuracy'"):
        export(arch, None, tmp_path, num_classes=10, card={"accuracy": 0.5})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resolution: 16 must be an integer >= 32"):
        export(arch, None, tmp_path, num_classes=10, resolution=16)
    with pytest.raises(ValueError, match="contract: 3x32x32 images and 10 classes, the export 3x64x64 and 10"):
        export(arch, None, tmp_path, num_classes=10, resolution=64, contract=CONTRACT)
    with pytest.raises(ValueError, match="contract: 3x32x32 images and 10 classes, the export 3x32x32 and 5"):
        export(arch, None, tmp_path, num_classes=5, contract=CONTRACT)


@pytest.mark.parametrize("name", ["all_projections", "stride1_transition"])
def test_model_py_holds_resnas_own_source_of_exactly_what_it_uses(name: str) -> None:
    text = model_source(HANDMADE[name], num_classes=10, in_channels=3, title="t")
    tree = ast.parse(text)
    defined = {n.name: ast.get_source_segment(text, n) for n in tree.body
               if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    assert defined.pop("Model") and defined.pop("load")  # model.py's own
    b = _blocks
    if name == "all_projections":  # gated pre-activation bottleneck blocks
        used = {b.PreActBlock, b.ResidualBlock, b.HighwayGate, b.Projection, b.ResidualStage, b.residual_convs}
    else:
        used = {b.DenseLayer, b.DenseStage, b.Transition, b.dense_convs}
    used |= {b.conv, b.DropPath, b.Stem, b.add_convs, b.Branch, b.Head, b.init_weights, b.Network}
    assert set(defined) == {obj.__name__ for obj in used}
    for obj in used:
        source = shared_source(obj)
        assert defined[obj.__name__] + "\n" == source, obj  # resnas's own definition, as written
        original = iter(inspect.getsource(obj).splitlines())
        assert all(line in original for line in source.splitlines()), obj  # resnas's lines, in order
    assert "def cost" not in text and "@staticmethod" not in text  # the costs, which need resnas
    if name == "all_projections":
        assert f"GATE_BIAS_INIT = {_blocks.GATE_BIAS_INIT!r}" in text


def test_a_title_cannot_break_model_py(tmp_path: Path) -> None:
    title = 'run "x"""\\\n y'
    folder = export(HANDMADE["no_projection"], None, tmp_path, num_classes=10, pt2=False, onnx=False,
                    card={"title": title})
    assert (folder / "model.py").read_text().startswith('"""run "x' + "'''/ y\n")
