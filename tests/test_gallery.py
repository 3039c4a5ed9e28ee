"""--gallery: index.html shows every input beside its output, and renders in a real browser."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import chromium_dom
from tests.test_translate_common import cli, make_generator, photo, save_photo


def _make_gallery(tmp_path: Path) -> Path:
    gen = make_generator(tmp_path / "g.pt")
    inp = tmp_path / "my photos"  # a space: links must be URL-encoded
    save_photo(inp / "a.jpg", 64, 48)
    save_photo(inp / "sub" / "b & c.png", 40, 60)
    rgba = np.dstack([photo(30, 30), np.full((30, 30), 100, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(inp / "cut.png")
    (inp / "broken.jpg").write_text("nope")
    r = cli(
        "translate",
        str(inp),
        "-o",
        str(tmp_path / "out"),
        "--checkpoint",
        str(gen),
        "--gallery",
        "--no-progress",
    )
    assert r.exit_code == 1  # broken.jpg
    assert "gallery:" in r.output
    return tmp_path / "out" / "index.html"


def test_gallery_page_links_every_image(tmp_path: Path) -> None:
    page = _make_gallery(tmp_path)
    text = page.read_text()
    assert text.count("<img ") == 6  # 3 inputs + 3 outputs
    assert "broken.jpg" in text and "not an image" in text
    for href in re.findall(r'href="([^"]+)"', text):
        target = (page.parent / Path(href.replace("%20", " ").replace("%26", "&"))).resolve()
        assert target.is_file(), href
    assert "b%20%26%20c.png" in text


def test_gallery_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = _make_gallery(tmp_path)
    dom = chromium_dom(page, tmp_path / "profile")
    # The page's own script counts images that loaded (complete and naturalWidth > 0).
    assert 'data-images-loaded="6/6"' in dom, dom[:2000]
