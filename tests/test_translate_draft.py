"""--max-size / --resize decode a big JPEG at a reduced scale: faster, and the model sees
what it would have seen from a full decode (within 1/255 on average)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclekit.data.images import decode_image
from cyclekit.translate import image_io
from cyclekit.translate.image_io import Job, prepare
from tests.test_translate_common import photo, tiny_spec, translate_with


def big_jpeg(path: Path, w: int = 1600, h: int = 1200, orientation: int | None = None) -> Path:
    """Detail at full resolution everywhere (a mosaic of 64x48 noisy photos): where a reduced
    decode differs most from a full one."""
    rows = [
        np.concatenate([photo(64, 48, seed=r * 100 + c) for c in range(w // 64)], 1)
        for r in range(h // 48)
    ]
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(np.concatenate(rows, 0)).save(path, quality=92, exif=exif)
    return path


def test_a_jpeg_decodes_at_the_smallest_scale_that_keeps_twice_the_size(tmp_path) -> None:
    src = big_jpeg(tmp_path / "a.jpg")
    img = decode_image(src, shrink=lambda h, w: (h // 8, w // 8))  # 3 x 150 x 200 fits 1/2
    assert img.file_hw == (1200, 1600) and img.pixels.shape == (600, 800, 3)
    img = decode_image(src, shrink=lambda h, w: (h // 30, w // 30))  # 1/8 keeps 3 x 40 x 53
    assert img.file_hw == (1200, 1600) and img.pixels.shape == (150, 200, 3)
    img = decode_image(src, shrink=lambda h, w: (h // 2, w // 2))  # no scale keeps 3 times
    assert img.file_hw is None and img.pixels.shape == (1200, 1600, 3)
    png = tmp_path / "a.png"
    Image.open(src).save(png)
    assert decode_image(png, shrink=lambda h, w: (h // 20, w // 20)).file_hw is None


def test_a_turned_jpeg_keeps_its_upright_size(tmp_path) -> None:
    src = big_jpeg(tmp_path / "turned.jpg", orientation=6)  # stored 1600 x 1200, shown 1200 x 1600
    seen = []
    img = decode_image(src, shrink=lambda h, w: seen.append((h, w)) or (h // 30, w // 30))
    assert seen == [(1600, 1200)] and img.file_hw == (1600, 1200)
    assert img.pixels.shape == (200, 150, 3)


@pytest.mark.parametrize("orientation", [None, 6])
def test_the_model_sees_the_same_picture_within_a_255th(
    tmp_path, monkeypatch: pytest.MonkeyPatch, orientation: int | None
) -> None:
    src = big_jpeg(tmp_path / "in.jpg", orientation=orientation)
    job, spec = Job(src, tmp_path / "out.jpg"), tiny_spec()
    preps, decoded = {}, []
    real = image_io.decode_image

    def spy(*args, **kw):
        decoded.append(real(*args, **kw).pixels.shape[:2])
        return real(*args, **kw)

    monkeypatch.setattr(image_io, "decode_image", spy)
    for draft in (True, False):
        monkeypatch.setattr(image_io, "JPEG_DRAFT", draft)
        preps[draft] = prepare(job, spec, max_size=256)
    # A reduced decode (1/2: 800 x 600 keeps 3 x 256 x 192; 1/4 would not), then the full one.
    assert sorted(decoded[0]) == [600, 800] and sorted(decoded[1]) == [1200, 1600]
    fast, full = preps[True], preps[False]
    assert fast.size == full.size == ((1600, 1200) if orientation else (1200, 1600))
    assert fast.work == full.work and fast.pixels.shape == full.pixels.shape
    diff = np.abs(fast.pixels.astype(int) - full.pixels.astype(int))
    assert diff.mean() <= 1.0 and np.percentile(diff, 95) <= 2, (diff.mean(), diff.max())


def test_cli_writes_the_full_size_from_a_reduced_decode(tmp_path, gen) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    big_jpeg(inp / "photo.jpg", orientation=8)
    r = translate_with(inp, tmp_path / "out", gen, "--max-size", "200")
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "out" / "photo.jpg").size == (1200, 1600)  # upright
