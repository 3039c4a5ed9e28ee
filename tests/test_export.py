"""cyclekit export: TorchScript and ONNX generators with dynamic height/width, in parity; any
size for every architecture; never over its own checkpoint or another file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cyclekit.generator_io import load_generator, save_generator
from cyclekit.models import build_generator
from cyclekit.translate.batching import padded_size
from cyclekit.translate.export import any_size
from tests.test_translate_common import (
    assert_user_error,
    cli,
    make_generator,
    make_train_checkpoint,
    save_photo,
    tiny_spec,
    tree_hashes,
)


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


def _translate_reference(model: torch.nn.Module, spec: dict, x: torch.Tensor) -> torch.Tensor:
    """cyclekit translate's padding (numpy reflect, repeated as needed) around the model."""
    h, w = x.shape[-2:]
    ph, pw = padded_size(h, w, spec)
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (0, ph - h), (0, pw - w)), mode="reflect")
    with torch.inference_mode():
        return model(torch.from_numpy(xp))[:, :, :h, :w]


ANY_SIZES = [(1, 3, 1, 1), (1, 3, 3, 5), (2, 3, 7, 100)]


@pytest.mark.parametrize("arch", ["resnet_6blocks", "resnet_9blocks", "unet_128", "unet_256"])
def test_every_architecture_takes_any_size_in_every_format(tmp_path: Path, arch: str) -> None:
    torch.manual_seed(0)
    spec = tiny_spec(arch, ngf=2)
    model = build_generator(**spec).eval()
    ckpt = save_generator(tmp_path / "G.pt", model, spec, "a2b")
    runners = {}
    for fmt in ("torchscript", "onnx", "official"):
        out = tmp_path / f"g.{fmt}"
        r = cli("export", "--checkpoint", str(ckpt), "--format", fmt, "-o", str(out))
        if fmt == "onnx" and "onnx extra" in r.output:
            continue  # the optional [onnx] extra is not installed
        assert r.exit_code == 0, r.output
        if fmt == "torchscript":
            runners[fmt] = torch.jit.load(str(out))
        elif fmt == "official":  # for the official code; cyclekit reads it back too
            runners[fmt] = any_size(load_generator(out)[0], spec)
        else:
            ort = pytest.importorskip("onnxruntime")
            session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            runners[fmt] = lambda x, s=session: torch.from_numpy(
                s.run(None, {"image": x.numpy()})[0]
            )
    for shape in ANY_SIZES:
        x = torch.rand(shape) * 2 - 1
        ref = _translate_reference(model, spec, x)
        for fmt, run in runners.items():
            # Without the JIT's profiling runs (seconds each on a first call; not the point).
            with torch.inference_mode(), torch.jit.optimized_execution(False):
                y = run(x)
            assert y.shape == (shape[0], 3, *shape[2:]) and torch.isfinite(y).all(), (fmt, shape)
            if fmt == "onnx" and shape[-2:] == (1, 1):
                # One pixel pads to a constant image: instance norm then divides rounding noise
                # by ~0 and runtimes legitimately disagree; only the shape is meaningful.
                continue
            torch.testing.assert_close(y, ref, atol=1e-4, rtol=0, msg=f"{fmt} {shape}")


def test_export_never_replaces_its_checkpoint_or_other_files(tmp_path: Path) -> None:
    run = tmp_path / "RUN"
    last = make_train_checkpoint(run / "last.pt")
    gen = make_generator(run / "G_ab.pt")
    photo = save_photo(tmp_path / "photo.jpg", 8, 8)
    before = tree_hashes(tmp_path)
    cases = [
        (last, "official", last, "is also an input"),  # its own input
        (gen, "official", last, "is not an official-format generator file"),  # training state
        (gen, "torchscript", photo, "is not a cyclekit TorchScript export"),
        (gen, "official", run, "is a folder"),
    ]
    for ckpt, fmt, out, why in cases:
        args = ["export", "--checkpoint", str(ckpt), "--format", fmt, "-o", str(out)]
        r = cli(*args, "--direction", "a2b")
        if out == run:  # click refuses a folder for a file option itself (exit 2)
            assert r.exit_code == 2 and "is a directory" in r.output
            continue
        assert_user_error(r, f"-o {out}", why)
    assert tree_hashes(tmp_path) == before
    # An earlier export in the same format is replaced; one in another format is not.
    ts, official = tmp_path / "g.ts", tmp_path / "latest_net_G_A.pth"
    for _ in range(2):
        for fmt, out in (("torchscript", ts), ("official", official)):
            r = cli("export", "--checkpoint", str(gen), "--format", fmt, "-o", str(out))
            assert r.exit_code == 0, r.output
    r = cli("export", "--checkpoint", str(gen), "--format", "official", "-o", str(ts))
    assert_user_error(r, f"-o {ts}", "not an official-format generator file")
