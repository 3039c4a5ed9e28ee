"""Where generators come from: official files (parity with the official outputs), training
checkpoints, and official pretrained models downloaded by name (from a local test server)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclekit.data.images import decode_image
from cyclekit.generator_io import load_generator
from cyclekit.translate.batching import pad_image, padded_size
from cyclekit.translate.tiling import make_runner, to_model_input
from tests.test_translate_common import (
    assert_user_error,
    cli,
    make_official,
    make_train_checkpoint,
    save_photo,
    serve_models,
)

OFFICIAL = ["resnet9_ngf16_nodropout", "resnet6_ngf16_dropout"]
# Generators saved by the official CUT code: anti-aliased down (and up) sampling.
OFFICIAL_CUT = ["cut_resnet9_ngf16_antialias", "cut_resnet6_ngf16_antialias_down_only"]


@pytest.mark.parametrize(
    "folder, name",
    [("official", n) for n in OFFICIAL] + [("official_cut", n) for n in OFFICIAL_CUT],
)
def test_parity_with_official_outputs(
    shared_dir: Path, folder: str, name: str, tmp_path: Path
) -> None:
    # The one test of parity with the official codes' outputs (no copies elsewhere).
    fixtures = shared_dir / "fixtures" / folder
    official_fixtures = shared_dir / "fixtures" / "official"  # the input image lives here
    model, info = load_generator(fixtures / f"{name}.pth")
    assert info["format"] == "official"
    assert info["spec"]["use_dropout"] == name.endswith("_dropout")  # read off the keys
    if folder == "official_cut":  # the sampling layers are read off the keys too
        assert info["spec"]["downsample"] == "antialias"
        assert info["spec"].get("upsample", "transpose") == (
            "transpose" if name.endswith("down_only") else "antialias"
        )
    img = decode_image(official_fixtures / "input_n02381460_1000.jpg")
    x = to_model_input(pad_image(img.pixels, padded_size(256, 256, info["spec"]))[None])
    y = make_runner(model, torch.device("cpu"), "fp32")(x)[0].numpy()
    expected = np.load(fixtures / f"{name}_output.npy")
    np.testing.assert_allclose(y, expected, atol=1e-5, rtol=0)
    # End to end through the CLI (fp32): the PNG differs from the official one only by our
    # rounding where the official code truncates.
    r = cli(
        "translate",
        str(official_fixtures / "input_n02381460_1000.jpg"),
        "-o",
        str(tmp_path),
        "--checkpoint",
        str(fixtures / f"{name}.pth"),
        "--precision",
        "fp32",
        "--format",
        "png",
        "--no-progress",
    )
    assert r.exit_code == 0, r.output
    ours = np.asarray(Image.open(tmp_path / "input_n02381460_1000.jpg.png"), np.int16)
    theirs = np.asarray(Image.open(fixtures / f"{name}_output.png"), np.int16)
    assert ours.shape == theirs.shape == (256, 256, 3)
    assert 0 <= (ours - theirs).min() and (ours - theirs).max() <= 1


def test_real_photos(horse2zebra: Path, official_fixtures: Path, tmp_path: Path) -> None:
    photos = sorted((horse2zebra / "testA").glob("*.jpg"))[:6]
    inp = tmp_path / "horses"
    inp.mkdir()
    for p in photos:
        (inp / p.name).symlink_to(p)
    ckpt = official_fixtures / "resnet9_ngf16_nodropout.pth"
    report = tmp_path / "r.jsonl"
    r = cli(
        "translate",
        str(inp),
        "-o",
        str(tmp_path / "zebras"),
        "--checkpoint",
        str(ckpt),
        "--report",
        str(report),
        "--no-progress",
    )
    assert r.exit_code == 0, r.output
    assert "done 6, skipped 0, failed 0" in r.output
    for p in photos:
        out = Image.open(tmp_path / "zebras" / p.name)
        assert out.format == "JPEG" and out.size == Image.open(p).size
    assert len(report.read_text().splitlines()) == 6


def test_training_checkpoint_needs_direction(tmp_path: Path) -> None:
    ckpt = make_train_checkpoint(tmp_path / "last.pt")
    save_photo(tmp_path / "in" / "a.png", 20, 20)
    r = cli("translate", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--checkpoint", str(ckpt))
    assert r.exit_code != 0 and "--direction a2b or b2a" in r.output
    outs = []
    for d in ("a2b", "b2a"):
        r = cli(
            "translate",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / d),
            "--checkpoint",
            str(ckpt),
            "--direction",
            d,
            "--no-progress",
        )
        assert r.exit_code == 0, r.output
        outs.append(np.asarray(Image.open(tmp_path / d / "a.png")))
    assert not np.array_equal(*outs)  # the two generators really differ


def test_unreadable_checkpoint_is_one_clear_line(tmp_path: Path) -> None:
    save_photo(tmp_path / "in" / "a.png", 20, 20)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    r = cli(
        "translate",
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "o"),
        "--checkpoint",
        str(tmp_path / "junk.pth"),
    )
    line = assert_user_error(r, f"{tmp_path / 'junk.pth'}: ")
    assert "PyTorch checkpoint" in line and "weights_only" not in line
    r = cli("translate", str(tmp_path / "in"), "-o", str(tmp_path / "o"))
    assert_user_error(r, "exactly one of --checkpoint PATH or --model NAME")


# -- pretrained models by name, from a server on 127.0.0.1 --------------------------------------


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """Serves horse2zebra.pth (a tiny official-format file) and a cut-short zebra2horse.pth."""
    served = tmp_path / "served"
    (served / "models").mkdir(parents=True)
    make_official(served / "models" / "horse2zebra.pth")
    with serve_models(served) as (base, log):
        yield f"{base}/models", log


def test_pretrained_is_downloaded_once_then_reused(tmp_path: Path, model_server, monkeypatch):
    url, log = model_server
    monkeypatch.setenv("CYCLEKIT_PRETRAINED_URL", url)
    monkeypatch.setenv("CYCLEKIT_CACHE", str(tmp_path / "cache"))
    save_photo(tmp_path / "in" / "a.jpg", 40, 30)
    for out, name in (("o1", "horse2zebra"), ("o2", "Horse2Zebra")):  # any letter case
        r = cli(
            "translate",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / out),
            "--model",
            name,
            "--no-progress",
        )
        assert r.exit_code == 0, r.output
        assert Image.open(tmp_path / out / "a.jpg").size == (40, 30)
    assert log == ["/models/horse2zebra.pth"]
    cached = tmp_path / "cache" / "pretrained" / "horse2zebra.pth"
    assert cached.read_bytes() == (tmp_path / "served" / "models" / "horse2zebra.pth").read_bytes()
    # A download cut short leaves nothing behind that could pass for a model.
    r = cli("translate", str(tmp_path / "in"), "-o", str(tmp_path / "o3"), "--model", "zebra2horse")
    assert r.exit_code != 0 and "100 of 5000 bytes" in r.output
    (tmp_path / "served" / "models" / "style_monet.pth").write_text("<html>login first</html>")
    r = cli("translate", str(tmp_path / "in"), "-o", str(tmp_path / "o3"), "--model", "style_monet")
    assert r.exit_code != 0 and "not a PyTorch checkpoint" in r.output
    assert sorted(p.name for p in cached.parent.iterdir()) == ["horse2zebra.pth"]


def test_offline_pretrained_says_what_to_download(tmp_path: Path, monkeypatch) -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CYCLEKIT_PRETRAINED_URL", f"http://127.0.0.1:{port}/m")
    monkeypatch.setenv("CYCLEKIT_CACHE", str(tmp_path / "cache"))
    save_photo(tmp_path / "in" / "a.jpg", 20, 20)
    r = cli("translate", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--model", "style_monet")
    assert r.exit_code != 0
    msg = " ".join(r.output.split())  # the message may wrap
    assert f"http://127.0.0.1:{port}/m/style_monet.pth" in msg
    assert str(tmp_path / "cache" / "pretrained" / "style_monet.pth") in msg
    r = cli("translate", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--model", "horse2cat")
    assert r.exit_code != 0 and "unknown pretrained model 'horse2cat'" in r.output
    assert "style_vangogh" in r.output
