"""``index.html``: inputs and outputs side by side, for an artist to open in a browser.

Thumbnails go to a hidden ``.gallery`` folder (hidden, so that using the output folder as an
input later does not pick them up); every thumbnail links to its full-size image.
"""

from __future__ import annotations

import html
import os
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from cyclekit.data.images import ImageDecodeError, decode_image
from cyclekit.errors import CyclekitError
from cyclekit.files import atomic_path
from cyclekit.translate.image_io import MAX_PIXELS

THUMB_SIDE = 320


class GalleryError(CyclekitError):
    """The page cannot be written; ``str()`` is one line naming it."""


GENERATOR_MARK = '<meta name="generator" content="cyclekit translate --gallery">'

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
{mark}
<title>cyclekit: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; background: #f6f6f4; color: #222; }}
h1 {{ font-size: 1.3rem; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(680px, 1fr)); gap: 1rem; }}
figure {{ margin: 0; background: #fff; padding: .6rem; border-radius: 6px;
          box-shadow: 0 1px 3px #0002; }}
.pair {{ display: flex; gap: .5rem; align-items: flex-start; }}
.pair a {{ flex: 1; }}
img {{ width: 100%; height: auto; display: block; }}
figcaption {{ font-size: .85rem; margin-top: .4rem; word-break: break-all; }}
.failed {{ color: #a00; }}
</style></head>
<body data-images-loaded="pending">
<h1>{title}</h1>
<p>{summary} Click an image to open it at full size. <span id="status"></span></p>
<div class="grid">
{figures}
</div>
<script>
// Says on the page (and to automated checks) whether every thumbnail loaded.
window.addEventListener("load", () => {{
  const imgs = Array.from(document.images);
  const ok = imgs.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesLoaded = ok + "/" + imgs.length;
  if (ok < imgs.length) {{
    document.getElementById("status").textContent = (imgs.length - ok) + " images did not load.";
  }}
}});
</script>
</body></html>
"""


def _href(target: Path, page_dir: Path) -> str:
    return urllib.request.pathname2url(os.path.relpath(target, page_dir))


def is_gallery_page(path: Path) -> bool:
    """Whether ``path`` is a page this module wrote (so a new gallery may replace it)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(2048)
    except OSError:
        return False
    # Pages from before the mark had only the title to go by.
    return GENERATOR_MARK in head or "<title>cyclekit: " in head


def _thumbnail(src: Path, dst: Path) -> None:
    # Upright, alpha composited on white; as large as translate accepts (a scan's preview).
    img = decode_image(src, max_pixels=MAX_PIXELS)
    thumb = Image.fromarray(img.pixels[:, :, 0] if img.pixels.shape[2] == 1 else img.pixels)
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    with atomic_path(dst, suffix=".jpg") as tmp:
        thumb.save(tmp, format="JPEG", quality=85)


def _figure(entry: dict[str, Any], out_dir: Path, thumbs: Path) -> str:
    src = Path(entry["input"])
    name = html.escape(str(src))
    if entry["status"] == "failed" or not entry.get("output"):
        reason = html.escape(str(entry.get("reason", "failed")))
        return f'<figure><figcaption class="failed">{name}: {reason}</figcaption></figure>'
    dst = Path(entry["output"])
    rel = Path(os.path.relpath(dst, out_dir))
    cells = []
    for label, full in (("input", src), ("output", dst)):
        thumb = thumbs / rel.parent / f"{rel.name}.{label}.jpg"
        try:
            _thumbnail(full, thumb)
        except (ImageDecodeError, OSError):
            cells.append(f'<a href="{_href(full, out_dir)}">{label} (no preview)</a>')
            continue
        cells.append(
            f'<a href="{_href(full, out_dir)}"><img src="{_href(thumb, out_dir)}" '
            f'alt="{label}: {html.escape(full.name)}" loading="eager"></a>'
        )
    return (
        f'<figure><div class="pair">{"".join(cells)}</div>'
        f"<figcaption>{name} &rarr; {html.escape(str(rel))}</figcaption></figure>"
    )


def write_gallery(out_dir: str | os.PathLike, entries: Sequence[dict[str, Any]]) -> Path:
    """Write ``out_dir/index.html`` for report entries (``input``, ``output``, ``status``)."""
    out_dir = Path(out_dir)
    thumbs = out_dir / ".gallery"
    entries = sorted(entries, key=lambda e: str(e["input"]))
    figures = "\n".join(_figure(e, out_dir, thumbs) for e in entries)
    ok = sum(e["status"] in ("done", "skipped") for e in entries)
    failed = sum(e["status"] == "failed" for e in entries)
    summary = f"{ok} images translated" + (f", {failed} failed." if failed else ".")
    page = _PAGE.format(
        mark=GENERATOR_MARK,
        title=html.escape(out_dir.name or "gallery"),
        summary=summary,
        figures=figures,
    )
    dst = out_dir / "index.html"
    try:
        with atomic_path(dst) as tmp:
            tmp.write_bytes(page.encode("utf-8"))
    except OSError as e:  # disk full, permissions: the images are written, the page is not
        raise GalleryError(f"--gallery: cannot write {dst} ({e.strerror})") from None
    return dst
