"""The input contract travels with an exported network: raw images of any size against torchvision's preprocessing
done by hand, the switch for normalised input, model.pt2 and model.onnx against model.py, preprocess.json and
weights.safetensors, the verified pick, and end to end: a real run's exported pick scores raw Fashion-MNIST test
images, read without resnas, as its verification did."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch
import torchvision.transforms.v2.functional as tvf
from PIL import Image
from safetensors.torch import load_file
from torchvision import transforms

import resnas
from resnas._arch import Arch
from resnas._commands.export import _folder_name
from resnas._contract import InputContract, Resize
from resnas._export import export, load
from resnas._model_source import shared_source
from resnas._preprocess import Preprocess, centre_offset, resize_bilinear
from resnas._runfolder import RunFolder
from resnas.cli import main
from tests._e2e import SPACE, cli
from tests._marks import FASHION_MNIST, needs_fashion
from tests.test_export import RUN_ARCHS, _assert_standalone_source, _error, _fake_run, _randomised

ARCH = resnas.zoo.get("resnet20").narrowed(0.5)
# Sizes that upsample, downsample, keep the training size, and stretch one side far more than the other.
SIZES = [(3, 28, 28), (2, 45, 37), (1, 20, 64), (2, 32, 32), (2, 33, 90)]


def _contract(resize: Resize) -> InputContract:
    return InputContract(resolution=32, channels=3, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26),
                         class_names=tuple(f"class {i}" for i in range(10)), resize=resize)


def _by_hand(images: torch.Tensor, contract: InputContract) -> torch.Tensor:
    """What a user would do without the contract inside the network: torchvision's antialiased resize (and centre
    crop) of the pixels, then x / 255 and normalisation with the contract's statistics.

    On float pixels: torchvision's uint8 kernel rounds to whole grey levels (PIL's way), where training's own
    resize of Fashion-MNIST, CIFAR and synthetic images works on floats (rounded only when stored);
    `test_raw_inputs_agree_with_the_training_data_to_a_grey_level` measures that difference.
    """
    pixels, r = images.float() * (255 if images.is_floating_point() else 1), contract.resolution
    if contract.resize is Resize.STRETCH:
        x = tvf.resize(pixels, [r, r], antialias=True)
    else:
        x = tvf.center_crop(tvf.resize(pixels, r, antialias=True), [r, r])
    return (x / 255 - torch.tensor(contract.mean).view(1, 3, 1, 1)) / torch.tensor(contract.std).view(1, 3, 1, 1)


@pytest.fixture(scope="module", params=list(Resize))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, torch.nn.Module, InputContract]:
    """A folder exported with a contract of each Resize kind, and the network without preprocessing."""
    contract = _contract(request.param)
    net = _randomised(ARCH, 10, seed=3)
    folder = export(ARCH, net.state_dict(), tmp_path_factory.mktemp("contract") / request.param.value,
                    num_classes=10, contract=contract, card={"title": "raw"})
    return folder, net, contract


def _images(batch: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_raw_images_of_any_size_give_torchvision_preprocessing_then_the_network(
        exported: tuple[Path, torch.nn.Module, InputContract]) -> None:
    folder, net, contract = exported
    model = load(folder)
    assert not model.training
    for i, (batch, h, w) in enumerate(SIZES):
        images = _images(batch, h, w, i)
        with torch.no_grad():
            want = net(_by_hand(images, contract))
            assert (model(images) - want).abs().max().item() < 1e-5, (h, w)
            assert (model(images.float() / 255) - want).abs().max().item() < 1e-5, (h, w)  # float in [0, 1]


def test_normalized_input_skips_the_preprocessing(exported: tuple[Path, torch.nn.Module, InputContract]) -> None:
    folder, net, _ = exported
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = net(x)
        assert (load(folder, normalized_input=True)(x) - want).abs().max().item() < 1e-5
        model = load(folder)
        model.normalized_input = True  # the same switch on a loaded network
        assert (model(x) - want).abs().max().item() < 1e-5
    # model.py's own Model and load() take it too, and the state dict does not depend on it.
    sys.path.insert(0, str(folder))
    try:
        import model as module  # type: ignore[import-not-found]

        fresh = module.Model(normalized_input=True)
        fresh.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
        with torch.no_grad():
            assert (fresh.eval()(x) - want).abs().max().item() < 1e-5
            assert (module.load(normalized_input=True)(x) - want).abs().max().item() < 1e-5
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("model", None)


def test_pt2_and_onnx_take_uint8_images_of_any_batch_and_size(
        exported: tuple[Path, torch.nn.Module, InputContract]) -> None:
    folder, _, _ = exported
    model = load(folder)
    program = torch.export.load(folder / "model.pt2").module()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    (given,), (out,) = session.get_inputs(), session.get_outputs()
    assert (given.name, given.type, out.name) == ("images", "tensor(uint8)", "logits")
    assert given.shape[1] == 3 and all(isinstance(d, str) for d in (given.shape[0], *given.shape[2:]))
    for i, (batch, h, w) in enumerate(SIZES):
        images = _images(batch, h, w, 10 + i)
        with torch.no_grad():
            want = model(images)
            assert (program(images) - want).abs().max().item() < 1e-4, (h, w)
        got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
        assert (got - want).abs().max().item() < 1e-4, (h, w)


def test_preprocess_json_and_the_weights(exported: tuple[Path, torch.nn.Module, InputContract]) -> None:
    folder, net, contract = exported
    record = json.loads((folder / "preprocess.json").read_text())
    assert InputContract.from_dict(record) == contract
    assert record["mean"] == [0.49, 0.48, 0.45] and record["resize"] == contract.resize.value
    assert record["inputs"]["model.onnx"] == {"layout": "NCHW", "shape": ["batch", 3, "height", "width"],
                                              "dtype": "uint8", "range": [0, 255], "input_name": "images",
                                              "output_name": "logits"}
    assert record["inputs"]["model.pt2"]["dtype"] == "uint8"
    assert record["inputs"]["model.py"]["dtype"] == ["uint8", "float32"]
    assert record["normalized_input"]["shape"] == ["batch", 3, 32, 32]
    pt = torch.load(folder / "weights.pt", weights_only=True)
    safe = load_file(str(folder / "weights.safetensors"))
    # The network's keys as resnas names them (public API), then the preprocessing's statistics.
    assert list(pt) == list(net.state_dict()) + ["preprocess.mean", "preprocess.std"]
    assert set(safe) == set(pt) and all(torch.equal(safe[k], pt[k]) for k in pt)
    assert pt["preprocess.std"].flatten().tolist() == pytest.approx([0.25, 0.24, 0.26])
    card = (folder / "card.md").read_text()
    assert "## How to use it on your images" in card and "convert(\"RGB\")" in card
    assert "per-channel means (0.4900, 0.4800, 0.4500) and stds (0.2500, 0.2400, 0.2600)" in card
    assert "0 class 0, 1 class 1" in card and "`load(normalized_input=True)`" in card
    text = (folder / "model.py").read_text()
    assert "RESIZE = " + repr(contract.resize.value) in text and "MEAN = (0.49, 0.48, 0.45)" in text
    # resnas's own source of the preprocessing, as written; still torch only, within 110 columns.
    assert all(shared_source(obj) in text for obj in (Preprocess, resize_bilinear, centre_offset))
    _assert_standalone_source(folder / "model.py")


def test_raw_inputs_agree_with_the_training_data_to_a_grey_level(
        exported: tuple[Path, torch.nn.Module, InputContract]) -> None:
    """Training resized each image once and stored it as uint8: Fashion-MNIST and CIFAR with the float
    interpolation rounded (resnas._data), image folders with PIL's Resize + CenterCrop (resnas._cache)."""
    folder, _, contract = exported
    preprocess = load(folder).preprocess
    std = torch.tensor(contract.std).view(1, 3, 1, 1)
    for i, (batch, h, w) in enumerate(SIZES):
        images = _images(batch, h, w, 20 + i)
        if contract.resize is Resize.STRETCH:
            stored = torch.nn.functional.interpolate(images.float(), size=(32, 32), mode="bilinear",
                                                     antialias=True).round().clamp(0, 255)
        else:
            crop = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32)])
            stored = torch.stack([torch.from_numpy(np.array(crop(Image.fromarray(img.permute(1, 2, 0).numpy()))))
                                  .permute(2, 0, 1) for img in images]).float()
        trained = (stored / 255 - torch.tensor(contract.mean).view(1, 3, 1, 1)) / std
        with torch.no_grad():
            levels = ((preprocess(images) - trained) * std * 255).abs().max().item()
        assert levels <= 1.0 + 1e-3, (h, w, levels)


def test_without_onnx_installed_export_skips_model_onnx_and_says_so(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    folder = export(ARCH, _randomised(ARCH, 10, 0).state_dict(), tmp_path / "n", num_classes=10,
                    contract=_contract(Resize.STRETCH))
    assert not (folder / "model.onnx").exists() and (folder / "model.pt2").is_file()
    card = (folder / "card.md").read_text()
    assert "No model.onnx: onnx was not installed where this folder was exported (`pip install 'resnas[onnx]'`" \
        in card
    assert "model.onnx" not in json.loads((folder / "preprocess.json").read_text())["inputs"]
    assert main(["export", "--arch", "resnet20", "--out", str(tmp_path / "cli"), "--resolution", "32"]) == 0
    assert "note: no model.onnx written: onnx is not installed (pip install 'resnas[onnx]' adds it)" in \
        capsys.readouterr().out
    assert not (tmp_path / "cli" / "model.onnx").exists()


def test_a_verified_network_gets_a_folder_name_without_path_trouble() -> None:
    assert _folder_name("#5") == "trial_0005" and _folder_name("#123") == "trial_0123"
    assert _folder_name("resnet18") == "resnet18" and _folder_name("resnet18@w0.62") == "resnet18_w0.62"
    assert _folder_name("../x/y") == "x_y" and _folder_name("..") == "network"


# -- the verified pick ---------------------------------------------------------------------------------

# The verification's own training data: other images than the search's, so other statistics.
VERIFIED = InputContract(resolution=32, channels=3, mean=(0.5, 0.47, 0.44), std=(0.26, 0.25, 0.27),
                         class_names=tuple(f"class {i}" for i in range(10)))
PICK = "resnet20@w0.5"


def _fake_verification(run: Path, plan: dict[str, Any], summary: dict[str, Any]) -> None:
    """verify/ as `resnas verify` leaves it: its plan, its summary, and seed 0's weights of two networks."""
    verification = RunFolder(run).verification()
    verification.path.mkdir()
    (verification.path / "verify.json").write_text(json.dumps(plan))
    (verification.path / "summary.json").write_text(json.dumps(summary))
    for label, arch in (("#2", RUN_ARCHS[2]), (PICK, RUN_ARCHS[0])):
        path = verification.weights_path(label)
        path.parent.mkdir(exist_ok=True)
        torch.save(_randomised(arch.narrowed(0.5), 10, 7).state_dict(), path)


def _summary() -> dict[str, Any]:
    """summary.json whose pick is the second network, cheaper than the most accurate first."""
    networks = [{"label": "#2", "kind": "searched", "arch": RUN_ARCHS[2].to_dict(), "flops": 3000, "trial": 2},
                {"label": PICK, "kind": "classic", "arch": RUN_ARCHS[0].to_dict(), "flops": 1000, "trial": None}]
    return {"pick": PICK, "networks": networks, "verdict": "the best classic is the pick",
            "pick_reason": f"{PICK} is the cheapest network as accurate as the most accurate, #2",
            "test": {PICK: {"mean": 0.8123, "spread": 0.004, "seeds": {"0": 0.815, "1": 0.8096, "2": 0.8123}},
                     "#2": {"mean": 0.82, "spread": 0.002, "seeds": {"0": 0.82, "1": 0.82, "2": 0.82}}}}


PLAN = {"recipe": {"width": 0.5, "train_samples": 512, "epochs": 2}, "data": "verification data",
        "input": VERIFIED.to_dict()}


def test_the_verified_export_ships_the_pick_with_the_verifications_contract(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _fake_run(tmp_path, RUN_ARCHS, complete={0: 0.6, 2: 0.7}, kept={0, 2})
    _fake_verification(run, PLAN, _summary())
    assert main(["export", str(run)]) == 0
    assert "resnet20@w0.5 (verified pick): test acc 0.8123 (seed 0, these weights: 0.8150)" in capsys.readouterr().out
    folder = run / "export" / "resnet20_w0.5"
    assert [p.name for p in (run / "export").iterdir()] == ["resnet20_w0.5"]
    shipped = torch.load(folder / "weights.pt", weights_only=True)
    kept = torch.load(RunFolder(run).verification().weights_path(PICK), weights_only=True)
    assert all(torch.equal(shipped[k], kept[k]) for k in kept)
    assert Arch.from_dict(json.loads((folder / "searched_arch.json").read_text())) == RUN_ARCHS[0]
    # The statistics the verification trained with, not the search's.
    assert InputContract.from_dict(json.loads((folder / "preprocess.json").read_text())) == VERIFIED
    card = " ".join((folder / "card.md").read_text().split())
    for fact in ("# resnet20@w0.5 of run run, verified",
                 "test accuracy 0.8123 ± 0.0040 over 3 seeds, 0.8150 for seed 0, whose weights these are",
                 "(resnas verify: 512 images, 2 epochs); the pick of 2 networks retrained: resnet20@w0.5 is the "
                 "cheapest network as accurate as the most accurate, #2. the best classic is the pick",
                 "per-channel means (0.5000, 0.4700, 0.4400)"):
        assert fact in card, fact


def test_an_older_verification_is_refused_naming_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _fake_run(tmp_path, RUN_ARCHS, complete={0: 0.6, 2: 0.7}, kept={0, 2})
    _fake_verification(run, {k: v for k, v in PLAN.items() if k != "input"}, _summary())
    line = _error(capsys, ["export", str(run)])
    assert "verify.json does not record how raw images became the networks' inputs" in line
    assert f"verify again with this resnas (move {run / 'verify'} away, then `resnas verify {run}`)" in line
    (run / "verify" / "summary.json").write_text(json.dumps({**_summary(), "pick": None}))
    line = _error(capsys, ["export", str(run)])
    assert "summary.json names no pick among its networks" in line and "rerun `resnas verify" in line
    assert not (run / "export").exists()
    # Trials can still be exported: their contract is the search's.
    assert main(["export", str(run), "--trial", "2"]) == 0


# -- end to end ----------------------------------------------------------------------------------------

# A few hundred real images searched, then a verification long enough to learn (about 58% on the test split);
# one trial, the classic resnet20, so verification trains one network. Width 0.25 keeps it all under a minute.
SEARCH = ["search", "--space", SPACE, "--budget", "50M", "--epochs", "1", "--train-samples", "256",
          "--val-samples", "128", "--proxy-width", "0.25", "--trials", "1"]
VERIFY = ["--top", "1", "--seeds", "1", "--epochs", "3", "--train-samples", "2048", "--batch-size", "32",
          "--select-samples", "500"]

# Run with `python -I` from an empty folder, resnas unimportable: what a user with the export folder alone has.
_SCORE = r"""
import sys
sys.modules["resnas"] = None
import gzip, json
import numpy as np
import onnxruntime
import torch

folder, data = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)


def idx(name):
    with gzip.open(f"{data}/{name}", "rb") as f:
        raw = f.read()
    dims = int.from_bytes(raw[3:4], "big")
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


images = torch.from_numpy(idx("t10k-images-idx3-ubyte.gz").copy())[:, None]  # 10000 x 1 x 28 x 28, uint8
labels = torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))
sys.path.insert(0, folder)
import model

net = model.load()
program = torch.export.load(f"{folder}/model.pt2").module()
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1
session = onnxruntime.InferenceSession(f"{folder}/model.onnx", options, providers=["CPUExecutionProvider"])
plain = model.load(normalized_input=True)
scores = {"model.py": 0, "model.pt2": 0, "model.onnx": 0, "unprocessed": 0}
with torch.no_grad():
    for i in range(0, len(labels), 250):  # larger batches spend more time on page faults than they save
        x, y = images[i : i + 250], labels[i : i + 250]
        scores["model.py"] += int((net(x).argmax(1) == y).sum())
        scores["model.pt2"] += int((program(x).argmax(1) == y).sum())
        logits = session.run(None, {"images": x.numpy()})[0]
        scores["model.onnx"] += int((torch.from_numpy(logits).argmax(1) == y).sum())
        # Without the contract: raw pixels scaled to [0, 1], at their own size, as the network took before.
        scores["unprocessed"] += int((plain(x.float() / 255).argmax(1) == y).sum())
print(json.dumps({k: v / len(labels) for k, v in scores.items()}))
"""


@needs_fashion
@pytest.mark.slow
def test_the_exported_pick_scores_raw_test_images_as_its_verification_did(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for args in (SEARCH + ["--out", str(run)], ["verify", str(run), *VERIFY], ["export", str(run)]):
        done = cli(*args)
        assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "verify" / "summary.json").read_text())
    pick = summary["pick"]
    folder = run / "export" / _folder_name(pick)
    assert (folder / "model.onnx").is_file()
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-I", "-c", _SCORE, str(folder), str(FASHION_MNIST)], cwd=empty,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads(proc.stdout.splitlines()[-1])
    verified = summary["test"][pick]["seeds"]["0"]  # seed 0's weights are the ones exported
    print(f"verified seed 0: {verified:.4f}; exported, on raw 28x28 uint8 images: {scores}")
    for name in ("model.py", "model.pt2", "model.onnx"):
        assert abs(scores[name] - verified) <= 0.005, (name, scores[name], verified)
