"""--gallery with videos: a poster frame before/after, linking the videos, in headless Chromium."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from cyclekit.translate.gallery import thumbnail_path
from tests.helpers import body_data, chromium_page_dom, chromium_page_stats
from tests.test_translate_common import save_photo, translate_with
from tests.test_video_common import make_clip

pytest.importorskip("av")


def test_gallery_shows_posters_and_links_the_videos(tmp_path: Path, gen: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    clip = make_clip(inp / "clip.mp4", n=30, rotation=90)  # 1.2 s: the poster is at 1 s
    save_photo(inp / "a.jpg", 40, 30)
    r = translate_with(inp / "a.jpg", out, gen, str(clip), "--gallery")
    assert r.exit_code == 0, r.output
    thumbs = out / ".gallery" / "thumbs"
    for video in (clip, out / "clip.mp4"):
        poster = Image.open(thumbnail_path(thumbs, video))
        assert poster.size == (24, 32)  # upright: the clip is stored 32x24, rotated 90
    page = out / "index.html"
    stats = chromium_page_stats(page, tmp_path / "profile")
    assert stats["figures"] == 2, stats
    assert stats["thumbs_requested"] == stats["thumbs_loaded"] == 4, stats
    assert stats["thumbs_failed"] == 0
    dom, _ = chromium_page_dom(page, tmp_path / "profile")
    grid = dom[dom.index('<main id="grid">') : dom.index("</main>")]
    hrefs = re.findall(r'href="([^"]+)"', grid)
    assert "clip.mp4" in hrefs  # the output video, beside the page
    assert any(h.endswith("in/clip.mp4") for h in hrefs)

    # A rerun that skips the video makes its posters again from the files.
    shutil.rmtree(thumbs)
    r = translate_with(inp / "a.jpg", out, gen, str(clip), "--gallery", "--skip-existing")
    assert r.exit_code == 0 and "skipped 2" in r.output, r.output
    assert thumbnail_path(thumbs, out / "clip.mp4").is_file()
    assert thumbnail_path(thumbs, clip).is_file()


def test_the_viewer_shows_a_videos_posters_and_links_it(tmp_path: Path, gen: Path) -> None:
    clip = make_clip(tmp_path / "in" / "clip.mp4", n=5, audio=None)
    out = tmp_path / "out"
    assert translate_with(clip, out, gen, "--gallery").exit_code == 0
    page = out / "index.html"
    probe = page.with_name("probe.html")
    script = """
      const t = setInterval(() => {
        const img = document.querySelector("figure img");
        if (!img) return;
        clearInterval(t);
        img.click();
        const d = document.body.dataset, $ = (id) => document.getElementById(id);
        d.fullOut = $("full-out").getAttribute("src");
        d.linkOut = $("open-out").getAttribute("href");
      }, 10);"""
    text = page.read_text(encoding="utf-8")
    probe.write_text(text.replace("</body>", f"<script>{script}</script></body>"))
    data = body_data(chromium_page_dom(probe, tmp_path / "profile")[0])
    assert data["full_out"].startswith(".gallery/thumbs/") and data["full_out"].endswith(".jpg")
    assert data["link_out"] == "clip.mp4"
