"""--gallery: a grid of every input beside its output, usable in a real browser at 10,000 images.

The page is checked in headless Chromium (skipped without it): what it renders and requests is
counted by the page itself on <body> (data-figures, data-thumbs-requested, ...). Interactions
(the failed filter, the viewer) are driven by a probe script added to a copy of the page.
"""

from __future__ import annotations

import os
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import cyclekit.translate.gallery as gallery
from cyclekit.translate.gallery import THUMB_SIDE, GalleryError, thumbnail_path, write_gallery
from tests.helpers import body_data, chromium_page_dom, chromium_page_stats
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


def _links(dom: str) -> list[str]:
    """href and src attributes of the rendered grid (the page's own script text excluded)."""
    grid = dom[dom.index('<main id="grid">') : dom.index("</main>")]
    return re.findall(r'\s(?:href|src)="([^"]+)"', grid)


def _target(page: Path, link: str) -> Path:
    rel = os.fsdecode(urllib.parse.unquote_to_bytes(link.replace("&amp;", "&")))
    return (page.parent / rel).resolve()


def _probe(page: Path, script: str) -> Path:
    """A copy of ``page`` beside it (same relative links) running ``script`` after its own."""
    helper = (
        "function when(ok, then) {"
        " const t = setInterval(() => { if (ok()) { clearInterval(t); then(); } }, 10); }"
    )
    probe = page.with_name("probe.html")
    text = page.read_text(encoding="utf-8")
    probe.write_text(text.replace("</body>", f"<script>{helper}\n{script}</script></body>"))
    return probe


def _images(folder: Path, n: int, size: tuple[int, int] = (40, 30), ext: str = "png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [save_photo(folder / f"{i}.{ext}", *size, seed=i) for i in range(n)]


def _entries(
    inputs: list[Path], outputs: list[Path], n: int, failed_every: int = 0
) -> Iterator[dict[str, Any]]:
    """``n`` report entries cycling over a few real files; every ``failed_every``-th failed."""
    for i in range(n):
        src = str(inputs[i % len(inputs)])
        if failed_every and i % failed_every == failed_every - 1:
            yield {"input": src, "output": None, "status": "failed", "reason": f"reason {i}"}
        else:
            yield {"input": src, "output": str(outputs[i % len(outputs)]), "status": "done"}


def test_gallery_page_links_every_image(tmp_path: Path) -> None:
    page = _make_gallery(tmp_path)
    assert gallery.is_gallery_page(page)
    dom, _ = chromium_page_dom(page, tmp_path / "profile")
    assert body_data(dom)["entries"] == 4
    links = _links(dom)
    assert len([x for x in links if x.endswith((".jpg", ".png"))]) >= 7  # 3 pairs + broken
    for link in links:
        assert _target(page, link).is_file(), link
    assert any("b%20%26%20c.png" in x for x in links)
    # The failed input: its name, its reason, no preview; never a broken page.
    assert "broken.jpg" in dom and "not an image" in dom and "input: no preview" in dom


def test_gallery_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = _make_gallery(tmp_path)
    stats = chromium_page_stats(page, tmp_path / "profile")
    # The page counts thumbnails it asked for and those that arrived (naturalWidth > 0).
    assert stats["thumbs_requested"] == stats["thumbs_loaded"] == 6, stats
    assert stats["thumbs_failed"] == 0 and stats["figures"] == 4
    assert stats["first_screen_ms"] > 0


def test_many_entries_request_only_the_visible_thumbnails(tmp_path: Path) -> None:
    inputs = _images(tmp_path / "in", 4)
    outputs = _images(tmp_path / "out", 4, size=(300, 200))  # real thumbnails too
    # A name that is not UTF-8 (possible on Linux) still gets a working link.
    odd = tmp_path / "in" / os.fsdecode(b"caf\xe9.png")
    inputs.append(save_photo(odd, 40, 30))
    page = write_gallery(tmp_path / "out", _entries(inputs, outputs, 3000))
    stats = chromium_page_stats(page, tmp_path / "profile", window="1280,900")
    assert stats["entries"] == 3000
    # A screen or two of figures, and only the thumbnails near the window requested.
    assert 0 < stats["figures"] <= 200, stats
    assert 0 < stats["thumbs_requested"] <= 150, stats
    assert stats["thumbs_loaded"] == stats["thumbs_requested"], stats
    assert stats["first_screen_ms"] > 0
    # The data is split: the first screen reads one file of CHUNK entries, not all of them.
    data = sorted((tmp_path / "out" / ".gallery").glob("entries-*-a*.js"))
    assert len(data) == -(-3000 // gallery.CHUNK)


def test_scrolling_adds_figures_and_reads_the_next_data_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gallery, "CHUNK", 50)  # a few scrolls go through several data files
    inputs = _images(tmp_path / "in", 3)
    outputs = _images(tmp_path / "out", 3)
    page = write_gallery(tmp_path / "out", _entries(inputs, outputs, 3000))
    probe = _probe(
        page,
        """const d = document.body.dataset;
        function down() {
          const before = document.querySelectorAll("figure").length;
          if (!d.firstFigures) d.firstFigures = before;
          if (before >= 200) { d.probe = "done"; return; }
          window.scrollTo(0, document.body.scrollHeight);
          // Now, not at the next frame: under virtual time frames come at no set pace.
          window.dispatchEvent(new Event("scroll"));
          when(() => document.querySelectorAll("figure").length > before, down);
        }
        when(() => document.querySelector("figure"), down);""",
    )
    dom, _ = chromium_page_dom(probe, tmp_path / "profile")
    data = body_data(dom)
    assert data.get("probe") == "done", data
    assert data["first_figures"] < 200 <= data["figures"] < 3000, data
    # In the order given, each entry once, across the data files.
    order = [int(i) for i in re.findall(r'<figure class="done" data-i="(\d+)"', dom)]
    assert order == list(range(data["figures"]))
    assert re.findall(r"<figcaption[^>]*>([^<]*)<", dom)[:6] == ["0.png", "1.png", "2.png"] * 2
    assert 0 < data["thumbs_requested"] <= 2 * data["figures"], data
    assert data["thumbs_loaded"] == data["thumbs_requested"]


def test_failed_filter_shows_only_failed_entries_with_their_reasons(tmp_path: Path) -> None:
    inputs = _images(tmp_path / "in", 3)
    outputs = _images(tmp_path / "out", 3)
    page = write_gallery(tmp_path / "out", _entries(inputs, outputs, 2000, failed_every=100))
    text = page.read_text()
    assert "2000 images: 1980 translated, 20 failed." in text
    assert "show only the 20" in text
    probe = _probe(
        page,
        """when(() => document.querySelector("figure"), () => {
          document.getElementById("only-failed").click();
          when(() => document.querySelectorAll("figure.failed").length === 20,
               () => { document.body.dataset.probe = "done"; });
        });""",
    )
    dom, _ = chromium_page_dom(probe, tmp_path / "profile")
    data = body_data(dom)
    assert data["probe"] == "done" and data["figures"] == 20, data
    assert dom.count("<figure") == dom.count('<figure class="failed"') == 20
    # Each shows its reason and "no output" in place of the missing output.
    for i in range(99, 2000, 100):
        assert f'<p class="reason">reason {i}</p>' in dom
    assert dom.count("no output") == 20


def test_a_pair_opens_full_size_and_escape_closes(tmp_path: Path) -> None:
    inputs = _images(tmp_path / "in", 3)
    outputs = _images(tmp_path / "out", 3, size=(300, 200))
    page = write_gallery(tmp_path / "out", _entries(inputs, outputs, 3))
    probe = _probe(
        page,
        """when(() => document.querySelector("figure img"), () => {
          const d = document.body.dataset, $ = (id) => document.getElementById(id);
          document.querySelectorAll("figure")[1].querySelector("img").click();
          d.open = String(!$("viewer").hidden);
          d.fullIn = $("full-in").getAttribute("src");
          d.fullOut = $("full-out").getAttribute("src");
          d.linkOut = $("open-out").getAttribute("href");
          document.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowRight" }));
          d.next = $("full-in").getAttribute("src");
          document.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape" }));
          d.closed = String($("viewer").hidden);
        });""",
    )
    data = body_data(chromium_page_dom(probe, tmp_path / "profile")[0])
    # The click did not follow the thumbnail's link: the viewer opened on the page.
    assert data["open"] == "true", data
    assert _target(page, data["full_in"]) == inputs[1]
    assert _target(page, data["full_out"]) == _target(page, data["link_out"]) == outputs[1]
    assert _target(page, data["next"]) == inputs[2]
    assert data["closed"] == "true"


def test_thumbnails_are_made_once_and_again_when_the_image_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = _images(tmp_path / "in", 2, size=(600, 400), ext="jpg")
    outputs = _images(tmp_path / "out", 2, size=(600, 400))
    small = _images(tmp_path / "small", 2)  # shown as they are: no thumbnail file
    decoded: list[str] = []
    real = gallery._reduced

    def counting(src: Path, size: int) -> Image.Image | None:
        decoded.append(src.name)
        return real(src, size)

    monkeypatch.setattr(gallery, "_reduced", counting)
    thumbs = tmp_path / "out" / ".gallery" / "thumbs"

    def write() -> dict[Path, int]:
        decoded.clear()
        write_gallery(tmp_path / "out", _entries(inputs + small, outputs + small, 4))
        made = [thumbnail_path(thumbs, p) for p in inputs + outputs]
        return {t: t.stat().st_mtime_ns for t in made}

    first = write()
    assert len(decoded) == 6  # 4 thumbnails made, 2 small files looked at once
    for thumb in first:
        assert max(Image.open(thumb).size) == THUMB_SIDE
    assert not any(thumbnail_path(thumbs, p).exists() for p in small)

    assert write() == first and decoded == []  # a rerun opens no image at all

    # An image edited (a newer mtime than its thumbnail's): only its thumbnail is remade.
    time.sleep(0.05)  # past the file system clock's tick
    os.utime(inputs[0])
    again = write()
    assert decoded == [inputs[0].name]
    assert again[thumbnail_path(thumbs, inputs[0])] != first[thumbnail_path(thumbs, inputs[0])]
    assert {k: v for k, v in again.items() if k != thumbnail_path(thumbs, inputs[0])} == {
        k: v for k, v in first.items() if k != thumbnail_path(thumbs, inputs[0])
    }

    # A different photo moved over an input keeps its own older mtime: remade all the same.
    other = save_photo(tmp_path / "other.jpg", 400, 600, seed=9)
    os.utime(other, ns=(10**18, 10**18))  # 2001, long before the thumbnail
    os.replace(other, inputs[1])
    write()
    assert decoded == [inputs[1].name]
    w, h = Image.open(thumbnail_path(thumbs, inputs[1])).size
    assert w < h == THUMB_SIDE  # the portrait photo now


def test_entries_are_read_once_as_they_come(tmp_path: Path) -> None:
    inputs = _images(tmp_path / "in", 2)
    outputs = _images(tmp_path / "out", 2)
    folder = tmp_path / "out" / ".gallery"
    seen = {"yielded": 0, "data_before_the_end": False}

    def stream() -> Iterator[dict[str, Any]]:
        for i, entry in enumerate(_entries(inputs, outputs, 1200)):
            if i == 1100:  # the first data file is written before the last entry is read
                seen["data_before_the_end"] = any(folder.glob("entries-*-a0000.js"))
            seen["yielded"] += 1
            yield entry

    page = write_gallery(tmp_path / "out", stream())
    assert seen == {"yielded": 1200, "data_before_the_end": True}
    assert 'data-entries="1200"' in page.read_text()


def test_page_and_its_data_are_replaced_only_whole(tmp_path: Path) -> None:
    inputs = _images(tmp_path / "in", 2)
    outputs = _images(tmp_path / "out", 2)
    out = tmp_path / "out"
    folder = out / ".gallery"
    page = write_gallery(out, _entries(inputs, outputs, 1200, failed_every=7))
    mine = [folder / "notes.txt", folder / "entries-mine.js"]  # not our naming: never touched
    for p in mine:
        p.write_text("keep")
    before = page.read_bytes()
    data = sorted(p.name for p in folder.glob("entries-*.js") if p not in mine)
    assert len(data) == 4  # 3 of all entries, 1 of the failed ones

    def broken() -> Iterator[dict[str, Any]]:
        yield from _entries(inputs, outputs, 700)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_gallery(out, broken())
    # The old page still works on its own data; nothing of the interrupted run is left.
    assert page.read_bytes() == before
    assert sorted(p.name for p in folder.glob("entries-*.js") if p not in mine) == data
    assert not list(out.glob(".index.html*"))

    write_gallery(out, _entries(inputs, outputs, 10))
    left = sorted(p.name for p in folder.glob("entries-*.js") if p not in mine)
    assert len(left) == 1 and left[0].split("-")[1] in page.read_text()
    assert all(p.read_text() == "keep" for p in mine)
    assert chromium_page_stats(page, tmp_path / "profile")["figures"] == 10


def test_unwritable_gallery_folder_is_one_line_error(tmp_path: Path) -> None:
    inputs = _images(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".gallery").write_text("a file where the folder goes")
    with pytest.raises(GalleryError) as e:
        write_gallery(out, _entries(inputs, inputs, 3))
    assert "\n" not in str(e.value) and str(out / ".gallery") in str(e.value)
    assert not (out / "index.html").exists()
