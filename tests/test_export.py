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
