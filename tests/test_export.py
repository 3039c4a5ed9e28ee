"""cyclekit export: TorchScript and ONNX generators with dynamic height/width, in parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cyclekit.generator_io import load_generator
from tests.test_translate_common import cli, make_generator, make_train_checkpoint


def _reference(ckpt: Path, x: torch.Tensor, direction: str | None = None) -> torch.Tensor:
    """What cyclekit translate computes: reflect-pad to a multiple of 4, run, crop."""
    model, _ = load_generator(ckpt, direction)
    h, w = x.shape[-2:]
    xp = torch.nn.functional.pad(x, (0, -w % 4, 0, -h % 4), mode="reflect")
    with torch.inference_mode():
        return model(xp)[:, :, :h, :w]


pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
INPUTS = [(1, 3, 68, 100), (2, 3, 37, 61)]  # non-square; the second not a multiple of 4


def test_torchscript_parity(tmp_path: Path) -> None:
    ckpt = make_train_checkpoint(tmp_path / "last.pt")
    out = tmp_path / "g.ts"
    r = cli("export", "--checkpoint", str(ckpt), "--format", "torchscript", "-o", str(out))
    assert r.exit_code != 0 and "--direction" in r.output
    r = cli(
        "export",
        "--checkpoint",
        str(ckpt),
        "--direction",
        "b2a",
        "--format",
        "torchscript",
        "-o",
        str(out),
    )
    assert r.exit_code == 0, r.output
    extra = {"cyclekit.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["cyclekit.json"])["direction"] == "b2a"
    torch.manual_seed(0)
    for shape in INPUTS:
        x = torch.rand(shape) * 2 - 1
        with torch.inference_mode():
            y = scripted(x)
        assert y.shape == x.shape
        torch.testing.assert_close(y, _reference(ckpt, x, "b2a"), atol=1e-4, rtol=0)
    assert not list(tmp_path.glob(".*partial"))


def test_onnx_parity(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="ONNX export is the optional [onnx] extra")
    pytest.importorskip("onnx")
    ckpt = make_generator(tmp_path / "G_ab.pt")
    out = tmp_path / "g.onnx"
    r = cli("export", "--checkpoint", str(ckpt), "--format", "onnx", "-o", str(out))
    assert r.exit_code == 0, r.output
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    torch.manual_seed(0)
    for shape in INPUTS:
        x = torch.rand(shape) * 2 - 1
        (y,) = session.run(None, {"image": x.numpy()})
        assert y.shape == shape
        np.testing.assert_allclose(y, _reference(ckpt, x).numpy(), atol=1e-4, rtol=0)


def test_export_bad_checkpoint_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.pt").write_bytes(b"")
    r = cli(
        "export",
        "--checkpoint",
        str(tmp_path / "x.pt"),
        "--format",
        "onnx",
        "-o",
        str(tmp_path / "x.onnx"),
    )
    assert r.exit_code != 0 and "x.pt: file is empty" in r.output
    assert not (tmp_path / "x.onnx").exists()


def test_official_format_round_trip(tmp_path: Path, official_fixtures: Path) -> None:
    ckpt = make_train_checkpoint(tmp_path / "last.pt")
    out = tmp_path / "latest_net_G_A.pth"
    r = cli(
        "export",
        "--checkpoint",
        str(ckpt),
        "--direction",
        "a2b",
        "--format",
        "official",
        "-o",
        str(out),
    )
    assert r.exit_code == 0, r.output
    state = torch.load(out, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # a bare state_dict
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state)
    model, info = load_generator(out)
    assert info["format"] == "official"
    x = torch.rand(1, 3, 36, 44) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(model(x), _reference(ckpt, x, "a2b"), atol=0, rtol=0)
    # An official file exported again is byte-for-byte the same weights.
    again = tmp_path / "again.pth"
    src = official_fixtures / "resnet6_ngf16_dropout.pth"
    assert (
        cli("export", "--checkpoint", str(src), "--format", "official", "-o", str(again)).exit_code
        == 0
    )
    a, b = torch.load(src, weights_only=True), torch.load(again, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
