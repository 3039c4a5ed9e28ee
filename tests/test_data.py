"""Image listing and decoding, the unpaired dataset, sampling and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cyclekit.data.images import ImageDecodeError, decode_image, list_images
from cyclekit.data.transforms import TrainTransform, eval_transform, needs_upscale
from cyclekit.data.unpaired import DataError, EpochSampler, UnpairedDataset, scan_domain


def _save(path, arr, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def test_listing_is_recursive_case_insensitive_and_sorted(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    for rel in ["b.PNG", "a.jpeg", "sub/c.JpG", "sub/deeper/d.webp", "e.TIFF", "f.bmp"]:
        fmt = {"jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP", "tiff": "TIFF"}.get(
            rel.rsplit(".", 1)[1].lower(), None
        )
        _save(tmp_path / rel, rgb, format=fmt)
    (tmp_path / "notes.txt").write_text("x")
    _save(tmp_path / ".hidden" / "x.png", rgb)
    _save(tmp_path / ".y.png", rgb)
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.jpeg", "b.PNG", "e.TIFF", "f.bmp", "sub/c.JpG", "sub/deeper/d.webp"]


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high
    arr[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(tmp_path / "r.jpg", arr, exif=exif, quality=95)
    d = decode_image(path)
    assert d.size == (20, 40)  # upright: 20 wide, 40 high
    assert d.pixels[:20].mean() > 200 and d.pixels[20:].mean() < 50  # white half now on top
    kept = Image.Exif()
    kept.load(d.exif)
    assert kept.get(0x0112, 1) == 1  # the returned EXIF no longer asks for a rotation


def test_modes_become_rgb_or_gray(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top opaque red, bottom fully transparent
    p = _save(tmp_path / "a.png", rgba)
    d = decode_image(p)
    assert d.pixels.shape == (4, 4, 3)
    assert tuple(d.pixels[0, 0]) == (200, 0, 0) and tuple(d.pixels[3, 3]) == (255, 255, 255)
    kept = decode_image(p, composite_alpha=False)
    assert (
        kept.alpha is not None and kept.alpha[3, 3] == 0 and tuple(kept.pixels[3, 3]) == (200, 0, 0)
    )

    la = Image.new("LA", (3, 3), (50, 0))
    la.save(tmp_path / "la.png")
    assert decode_image(tmp_path / "la.png").pixels.min() == 255  # transparent -> white

    pal = Image.new("P", (3, 3), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.save(tmp_path / "p.png")
    assert tuple(decode_image(tmp_path / "p.png").pixels[1, 1]) == (10, 20, 30)

    Image.new("CMYK", (5, 5), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
    cmyk = decode_image(tmp_path / "c.jpg")
    assert cmyk.pixels.shape == (5, 5, 3) and cmyk.pixels.min() > 240  # no ink = white

    sixteen = np.array([[0, 32896, 65535]], np.uint16)
    _save(tmp_path / "s.png", sixteen)
    assert Image.open(tmp_path / "s.png").mode.startswith("I")
    assert decode_image(tmp_path / "s.png", channels=1).pixels[0, :, 0].tolist() == [0, 128, 255]
    assert decode_image(tmp_path / "s.png").pixels.shape == (1, 3, 3)

    gray = _save(tmp_path / "g.png", np.full((2, 2), 77, np.uint8))
    assert decode_image(gray).pixels.shape == (2, 2, 3)
    assert decode_image(gray, channels=1).pixels.shape == (2, 2, 1)


def test_bad_files_raise_one_line_errors(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    good = _save(
        tmp_path / "cut.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    )
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:200])
    for name, reason in [
        ("empty.jpg", "empty"),
        ("text.jpg", "not an image"),
        ("cut.png", "cannot decode"),
    ]:
        with pytest.raises(ImageDecodeError) as e:
            decode_image(tmp_path / name)
        assert str(e.value).startswith(str(tmp_path / name)) and reason in str(e.value)
        assert "\n" not in str(e.value)


def test_scan_domain_sets_aside_bad_files_and_rejects_empty_domains(tmp_path):
    _save(tmp_path / "A" / "ok.png", np.zeros((30, 30, 3), np.uint8))
    (tmp_path / "A" / "zero.png").write_bytes(b"")
    (tmp_path / "A" / "fake.jpg").write_text("hello")
    d = scan_domain("A", tmp_path / "A")
    assert [p.name for p in d.files] == ["ok.png"] and d.sizes == [(30, 30)]
    assert len(d.bad) == 2 and all(str(tmp_path) in b for b in d.bad)
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "fake.png").write_text("x")
    with pytest.raises(DataError, match="domain B: no readable image"):
        scan_domain("B", tmp_path / "B")
    with pytest.raises(DataError, match="does not exist"):
        scan_domain("B", tmp_path / "missing")


def test_sampler_epoch_plan_is_seeded_and_resumable():
    s = EpochSampler(n_a=3, n_b=7, seed=1)
    s.set_epoch(0)
    full = list(s)
    assert len(full) == 7  # max(|A|, |B|)
    assert sorted(a for a, _, _ in full) == [0, 0, 0, 1, 1, 2, 2]  # perm modulo |A|
    assert all(0 <= b < 7 for _, b, _ in full)
    s.set_epoch(0, start=4)
    assert list(s) == full[4:]
    s.set_epoch(1)
    assert list(s) != full
    assert list(EpochSampler(3, 7, seed=2).__iter__()) != full


@pytest.mark.parametrize(
    "mode,size,expected",
    [
        ("resize_and_crop", (50, 70), (32, 32)),
        ("crop", (50, 70), (32, 32)),
        ("crop", (20, 70), (32, 32)),  # smaller than the crop: upscaled first
        # width -> 36, height int(36 * 70 / 50) = 50 -> round(12.5) * 4 = 48 (as official)
        ("scale_width", (50, 70), (36, 48)),
        ("scale_width_and_crop", (50, 70), (32, 32)),
        ("none", (50, 70), (48, 72)),  # nearest multiples of 4 (round half to even)
    ],
)
def test_preprocess_modes_output_sizes(mode, size, expected):
    t = TrainTransform(mode, load_size=36, crop_size=32, flip=True, multiple=4)
    w, h = size
    x = t(np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8), seed=3)
    assert x.shape == (3, expected[1], expected[0])
    assert x.min() >= -1 and x.max() <= 1


def test_augmentation_is_a_function_of_the_seed():
    t = TrainTransform("resize_and_crop", 40, 32, flip=True)
    img = np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)
    assert torch.equal(t(img, 11), t(img, 11))
    assert len({tuple(t(img, s).flatten()[:50].tolist()) for s in range(8)}) > 1
    assert needs_upscale(20, 70, "crop", 36, 32) and not needs_upscale(50, 70, "crop", 36, 32)
    assert eval_transform(img, 32).shape == (3, 32, 32)


def test_dataset_falls_back_on_undecodable_file(tmp_path):
    for i in range(3):
        _save(tmp_path / "A" / f"{i}.png", np.full((40, 40, 3), 10 * i, np.uint8))
    _save(tmp_path / "B" / "0.png", np.zeros((40, 40, 3), np.uint8))
    a, b = scan_domain("A", tmp_path / "A"), scan_domain("B", tmp_path / "B")
    (tmp_path / "A" / "1.png").write_bytes((tmp_path / "A" / "1.png").read_bytes()[:60])
    ds = UnpairedDataset(a, b, TrainTransform("crop", 32, 32, flip=False), 3, 1)
    with pytest.warns(UserWarning, match="1.png"):
        item = ds[(1, 0, 5)]
    assert item["a"].shape == (3, 32, 32) and item["b"].shape == (1, 32, 32)
    assert item["a"].max().item() == pytest.approx(20 / 127.5 - 1)  # fell back to 2.png


@pytest.mark.parametrize("factor", [1.5, 3])  # Pillow warns over the limit, raises over 2x
def test_images_over_the_decompression_bomb_limit_are_set_aside(tmp_path, monkeypatch, factor):
    import warnings

    _save(tmp_path / "A" / "ok.png", np.zeros((10, 10, 3), np.uint8))
    _save(tmp_path / "A" / "huge.png", np.zeros((40, 40, 3), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(40 * 40 / factor))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw Pillow warning either
        d = scan_domain("A", tmp_path / "A")
    assert [p.name for p in d.files] == ["ok.png"]
    assert len(d.bad) == 1 and "huge.png: image too large to decode safely" in d.bad[0]
    assert "1,600 pixels" in d.bad[0] and "\n" not in d.bad[0]


def test_dataset_skips_an_image_that_became_too_large(tmp_path, monkeypatch):
    for name in ("0.png", "1.png"):
        _save(tmp_path / "A" / name, np.full((40, 40, 3), 50, np.uint8))
    _save(tmp_path / "B" / "0.png", np.zeros((40, 40, 3), np.uint8))
    a, b = scan_domain("A", tmp_path / "A"), scan_domain("B", tmp_path / "B")
    _save(tmp_path / "A" / "0.png", np.zeros((100, 100, 3), np.uint8))  # replaced after the scan
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 40x40 passes, 100x100 is over 2x
    ds = UnpairedDataset(a, b, TrainTransform("crop", 32, 32, flip=False), 3, 3)
    with pytest.warns(UserWarning, match=r"skipping .*0\.png: .*(too large|exceeds limit)"):
        item = ds[(0, 0, 1)]
    assert item["a"].max().item() == pytest.approx(50 / 127.5 - 1)  # fell back to 1.png
