"""``index.html``: a grid of every input beside its output, usable with 100,000 images.

What the gallery writes in the output folder, all of it ours:

- ``index.html``: summary counts, the filter, the viewer and the script. Written last and
  atomically, so a browser (or a killed run) only ever sees a complete page.
- ``.gallery/entries-RUN-aNNNN.js``: the entries, :data:`CHUNK` per file, in the order given;
  ``.gallery/entries-RUN-fNNNN.js``: the failed ones again, for the "only failed" filter. They
  are scripts, not JSON, because Chromium refuses ``fetch()`` of ``file://`` URLs but runs a
  ``<script src>`` from the same folder. ``RUN`` is new on every write, so the old page keeps
  working on its own files until the new page replaces it; then every other run's files go.
- ``.gallery/thumbs/XX/KEY.jpg``: thumbnails at most :data:`THUMB_SIDE` pixels on a side, KEY a
  hash of the image's absolute path, made again only when the image changed since. A small
  JPEG/PNG/WebP is shown as it is; an empty ``KEY.same`` file records that.

The folder is hidden so that using the output folder as an input later does not pick up the
thumbnails. Entries are read once, as they come (a generator streaming a report file is fine):
memory does not grow with their number.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import itertools
import json
import os
import re
import secrets
import threading
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from cyclekit.data.images import ImageDecodeError, decode_image, pillow_warnings
from cyclekit.errors import CyclekitError
from cyclekit.files import atomic_write
from cyclekit.translate.image_io import MAX_PIXELS

THUMB_SIDE = 256  # px; twice a grid cell's width, so sharp on a high-density screen too
CHUNK = 500  # entries per data file: the first screen needs only the first one
# A browser shows a small JPEG/PNG/WebP as fast as a thumbnail of it: it is linked, not copied.
_SHOWN_AS_IS = frozenset({"JPEG", "PNG", "WEBP"})
_SMALL_FILE = 256 * 1024  # bytes; a small image with a bigger file is odd: make a thumbnail
_BATCH = 32  # entries per thread-pool task (fewer tasks than entries: less overhead)
_WORKERS = min(4, os.cpu_count() or 1)  # each decodes one image at a time: memory is bounded
_STATUS = {"done": 0, "skipped": 1, "failed": 2}
_DATA_NAME = re.compile(r"entries-[0-9a-f]{12}-[af][0-9]{4,}\.js")
# Pillow's ways of saying an image cannot be read (decode_image turns them into the first).
_UNREADABLE = (ImageDecodeError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class GalleryError(CyclekitError):
    """The page cannot be written; ``str()`` is one line naming it."""


GENERATOR_MARK = '<meta name="generator" content="cyclekit translate --gallery">'


def is_gallery_page(path: Path) -> bool:
    """Whether ``path`` is a page this module wrote (so a new gallery may replace it)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(2048)
    except OSError:
        return False
    # Pages from before the mark had only the title to go by.
    return GENERATOR_MARK in head or "<title>cyclekit: " in head


def _href(target: str, page_dir: str) -> str:
    """A link from the page to ``target`` (absolute paths), URL-encoded."""
    try:
        rel = os.path.relpath(target, page_dir)
    except ValueError:  # on another drive (Windows): no relative path exists
        return Path(target).as_uri()
    if os.name == "nt":
        return urllib.request.pathname2url(rel)
    # Quoting the bytes: a name that is not valid UTF-8 still links to its file.
    return urllib.parse.quote(os.fsencode(rel))


def thumbnail_path(thumbs: Path, image: str | os.PathLike) -> Path:
    """Where the thumbnail of ``image`` is kept (keyed by its absolute path)."""
    key = _key(os.path.abspath(image))
    return thumbs / key[:2] / f"{key}.jpg"


def _key(abs_path: str) -> str:
    raw = os.fsencode(abs_path)
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def _reduced(src: Path, size: int) -> Image.Image | None:
    """``src`` upright, RGB on white, fitting in THUMB_SIDE; None when the browser can show the
    file itself. Raises one of :data:`_UNREADABLE` when it cannot be decoded."""
    try:
        with pillow_warnings():  # damaged metadata: Pillow warns; a preview does not care
            img = Image.open(src)  # the header only
    except Image.DecompressionBombError:  # above Pillow's limit, maybe not above translate's
        img = None
    if img is not None:
        with img:
            if img.format in _SHOWN_AS_IS and max(img.size) <= THUMB_SIDE and size <= _SMALL_FILE:
                return None
            if img.format == "JPEG":
                # Decoding at 1/2 to 1/8 scale: a 24-megapixel photo in a few ms, little memory.
                # The scale is picked so both sides stay at least this: the fitted size.
                w, h = img.size
                fit = THUMB_SIDE / max(w, h)
                img.draft("RGB", (max(1, round(w * fit)), max(1, round(h * fit))))
                img.load()
                with pillow_warnings():
                    upright = ImageOps.exif_transpose(img).convert("RGB")  # also CMYK, L
                upright.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
                return upright
    # Every other format the way translate reads it (alpha on white, 16-bit scaled, upright).
    pixels = decode_image(src, max_pixels=MAX_PIXELS).pixels
    thumb = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    return thumb


def _save(img: Image.Image, dst: Path) -> None:
    # Temporary name and rename, so that a killed run cannot leave a half-written thumbnail that
    # looks up to date; not atomic_path, whose fsync per file would cost minutes for 20,000
    # thumbnails on a slow disk, for a cache that is remade from its sources.
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        img.save(tmp, format="JPEG", quality=80)
        os.replace(tmp, dst)
    except OSError as e:  # the output folder's disk, not the image: the page cannot work
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise GalleryError(f"--gallery: cannot write thumbnail {dst} ({e.strerror})") from None


def _thumbnail(image: str, thumbs: Path) -> str:
    """For a row: "" (no preview), "=" (the file is its own thumbnail) or the thumbnail's key.

    Beside ``KEY.jpg``, an empty ``KEY.same`` records "=", so that a rerun decides from two
    stat calls, without opening the image again."""
    key = _key(image)
    base = os.path.join(thumbs, key[:2], key)  # strings: this runs twice per entry
    dst, same = base + ".jpg", base + ".same"
    try:
        st = os.stat(image)
    except OSError:  # gone since: the page says "no preview"
        return ""
    # Up to date when written after the image's last change; the change time (ctime) counts
    # too: a file copied or moved over the image keeps its own, possibly older, mtime.
    changed = max(st.st_mtime_ns, st.st_ctime_ns)
    for done, answer in ((dst, key), (same, "=")):
        with contextlib.suppress(OSError):
            if os.stat(done).st_mtime_ns >= changed:
                return answer
    try:
        img = _reduced(Path(image), st.st_size)
    except _UNREADABLE:
        return ""
    if img is None:
        try:
            os.makedirs(os.path.dirname(same), exist_ok=True)
            Path(same).touch()  # also the time of an existing, out-of-date one
        except OSError as e:
            raise GalleryError(f"--gallery: cannot write {same} ({e.strerror})") from None
        return "="
    _save(img, Path(dst))
    return key


def _text(value: object) -> str:
    """``value`` as text a browser can hold: a file name that is not valid UTF-8 (on Linux,
    Python keeps its bytes as lone surrogates, which can crash Chromium's serialiser) gets
    replacement characters; its link keeps the exact bytes (:func:`_href`)."""
    return os.fsencode(str(value)).decode("utf-8", "replace")


def _row(entry: Mapping[str, Any], page_dir: str, thumbs: Path) -> list[Any]:
    """One entry as the page reads it: [status, input as given, input link, output link,
    reason, input thumb, output thumb, 1 for a video (its thumbs are poster frames) else 0]."""
    src = str(entry["input"])
    src_abs = os.path.abspath(src)
    out = entry.get("output")
    out_abs = os.path.abspath(out) if out else None
    return [
        _STATUS.get(entry["status"], 2),
        _text(src),
        _href(src_abs, page_dir),
        _href(out_abs, page_dir) if out_abs else "",
        _text(entry.get("reason") or "") if entry["status"] == "failed" else "",  # shown then
        # A failed input may still decode (the model failed, or its output name was taken).
        _thumbnail(src_abs, thumbs),
        _thumbnail(out_abs, thumbs) if out_abs else "",
        1 if entry.get("kind") == "video" else 0,
    ]


def _rows(entries: Iterable[Mapping[str, Any]], page_dir: str, thumbs: Path) -> Iterator[list[Any]]:
    """Rows in the order of ``entries``; thumbnails made in a thread pool (Pillow decodes
    without the GIL), a bounded number of batches ahead, so memory stays flat."""

    def work(batch: list[Mapping[str, Any]]) -> list[list[Any]]:
        return [_row(e, page_dir, thumbs) for e in batch]

    it = iter(entries)
    ahead: deque[Future[list[list[Any]]]] = deque()
    with ThreadPoolExecutor(_WORKERS, thread_name_prefix="gallery") as pool:
        try:
            while True:
                while len(ahead) < 2 * _WORKERS and (batch := list(itertools.islice(it, _BATCH))):
                    ahead.append(pool.submit(work, batch))
                if not ahead:
                    return
                yield from ahead.popleft().result()
        finally:  # an error or Ctrl-C: queued batches are dropped, running ones finish
            for f in ahead:
                f.cancel()


class _DataFiles:
    """``.gallery/entries-RUN-KINDNNNN.js`` files of :data:`CHUNK` rows each."""

    def __init__(self, folder: Path, run: str, kind: str) -> None:
        self.folder, self.run, self.kind = folder, run, kind
        self.rows: list[str] = []
        self.count = 0  # files written

    def add(self, row: list[Any]) -> None:
        # ASCII JSON is a valid JavaScript literal (no raw U+2028, no "</script>" matters here).
        self.rows.append(json.dumps(row, ensure_ascii=True, separators=(",", ":")))
        if len(self.rows) == CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        text = f'cyclekitGallery.add("{self.kind}",{self.count},[\n' + ",\n".join(self.rows)
        text += "\n]);\n"
        with atomic_write(self.folder / f"entries-{self.run}-{self.kind}{self.count:04d}.js") as f:
            f.write(text.encode("ascii"))
        self.count += 1
        self.rows = []


def _remove_data(folder: Path, keep: str | None) -> None:
    """Delete our data files (by their exact naming) except run ``keep``'s, as far as the file
    system allows: this tidies up, it never decides whether the page was written."""
    with contextlib.suppress(OSError):
        for p in folder.iterdir():
            if _DATA_NAME.fullmatch(p.name) and not p.name.startswith(f"entries-{keep}-"):
                p.unlink(missing_ok=True)


def write_gallery(out_dir: str | os.PathLike, entries: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``out_dir/index.html`` for report entries (``input``, ``output``, ``status``,
    ``reason``), shown in the order given. ``entries`` is read once, as it comes."""
    out_dir = Path(out_dir)
    folder = out_dir / ".gallery"
    thumbs = folder / "thumbs"
    page = out_dir / "index.html"
    run = secrets.token_hex(6)
    counts = [0, 0, 0]  # done, skipped, failed
    files = {k: _DataFiles(folder, run, k) for k in ("a", "f")}
    try:
        try:
            thumbs.mkdir(parents=True, exist_ok=True)
            for row in _rows(entries, os.path.abspath(out_dir), thumbs):
                counts[row[0]] += 1
                files["a"].add(row)
                if row[0] == 2:
                    files["f"].add(row)
            for f in files.values():
                f.flush()
            text = _page(out_dir.name or "gallery", run, counts, files)
            with atomic_write(page) as f:
                f.write(text.encode("utf-8"))
        except OSError as e:  # disk full, permissions: the images are written, the page is not
            where = e.filename or page
            raise GalleryError(f"--gallery: cannot write {where} ({e.strerror})") from None
    except BaseException:
        _remove_data(folder, keep=None if not page.exists() else _page_run(page))
        raise
    # The new page is in place: an earlier page's data (maybe more files) would only confuse.
    _remove_data(folder, keep=run)
    return page


def _page_run(page: Path) -> str | None:
    """The RUN of the data files ``page`` uses (None: not one of ours, or unreadable)."""
    try:
        with open(page, encoding="utf-8", errors="replace") as f:
            found = re.search(r'"run": ?"([0-9a-f]{12})"', f.read(8192))
    except OSError:
        return None
    return found.group(1) if found else None


def _page(title: str, run: str, counts: list[int], files: dict[str, _DataFiles]) -> str:
    done, skipped, failed = counts
    total = sum(counts)
    parts = [f"{done} translated"]
    if skipped:
        parts.append(f"{skipped} skipped (their output was already there)")
    parts.append(f"{failed} failed")
    summary = f"{total} images: " + ", ".join(parts) + "."
    config = {
        "run": run,
        "dir": ".gallery/",
        "entries": total,
        "failed": failed,
        "files": {k: f.count for k, f in files.items()},
    }
    # The run must be in the first 8 KB: _page_run reads it back to keep this page's data.
    return (
        _PAGE.replace("__MARK__", GENERATOR_MARK)
        .replace("__CONFIG__", json.dumps(config))
        .replace("__TITLE__", html.escape(title))
        .replace("__SUMMARY__", html.escape(summary))
        .replace("__TOTAL__", str(total))
        .replace("__FAILED__", str(failed))
        .replace("__DISABLED__", "" if failed else " disabled")
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
__MARK__
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cyclekit: __TITLE__</title>
<script>const CONFIG = __CONFIG__;</script>
<style>
body { font-family: system-ui, sans-serif; margin: 0; background: #f4f4f2; color: #222; }
header { position: sticky; top: 0; z-index: 1; background: #f4f4f2f0; padding: .5rem 1rem;
         border-bottom: 1px solid #ddd; }
h1 { font-size: 1.1rem; margin: 0; }
header p { margin: .25rem 0 0; font-size: .9rem; }
#status { color: #a00; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr));
        gap: .5rem; padding: .7rem 1rem; }
figure { margin: 0; background: #fff; padding: .3rem; border-radius: 4px;
         box-shadow: 0 1px 2px #0002; cursor: zoom-in; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: .25rem; }
/* Square cells sized before any image arrives: the layout does not jump while they load. */
.pair > * { aspect-ratio: 1; background: #e8e8e6; display: flex; align-items: center;
            justify-content: center; font-size: .7rem; color: #666; text-align: center;
            overflow: hidden; }
.pair img { width: 100%; height: 100%; object-fit: contain; display: block; }
figcaption { font-size: .72rem; margin-top: .25rem; white-space: nowrap; overflow: hidden;
             text-overflow: ellipsis; }
.skipped figcaption::after { content: " (skipped)"; color: #777; }
.failed { outline: 2px solid #c33; }
.reason { font-size: .72rem; color: #a00; margin: .2rem 0 0; overflow-wrap: anywhere; }
#more { height: 1px; }
#viewer { position: fixed; inset: 0; z-index: 2; background: #111f; color: #eee;
          display: flex; flex-direction: column; padding: .6rem 1rem 1rem; }
#viewer[hidden] { display: none; }
#viewer p { margin: 0 0 .5rem; font-size: .9rem; overflow-wrap: anywhere; }
#viewer a { color: #9cf; }
.full { flex: 1; min-height: 0; display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
.full img { width: 100%; height: 100%; object-fit: contain; }
</style></head>
<body data-entries="__TOTAL__" data-failed="__FAILED__" data-figures="0"
      data-thumbs-requested="0" data-thumbs-loaded="0" data-thumbs-failed="0">
<header>
<h1>__TITLE__</h1>
<p>__SUMMARY__</p>
<p><label><input type="checkbox" id="only-failed"__DISABLED__> show only the __FAILED__
failed</label> &middot; click a pair to see it at full size <span id="status"></span></p>
</header>
<noscript><p>This page needs JavaScript to show the images; they are all in this folder.</p>
</noscript>
<main id="grid"></main>
<div id="more"></div>
<div id="viewer" hidden role="dialog" aria-modal="true" aria-label="Full size">
<p><button id="close">Close</button> <span id="caption"></span> &middot;
<a id="open-in" target="_blank">input file</a> &middot;
<a id="open-out" target="_blank">output file</a> &middot; Esc closes, &larr; &rarr; move</p>
<div class="full"><img id="full-in" alt="input"><img id="full-out" alt="output"></div>
</div>
<script>
"use strict";
// The entries arrive in data files (.gallery/entries-*.js), each calling cyclekitGallery.add.
// Row: [status, input as given, input link, output link, reason, input thumb, output thumb];
// status 0 translated, 1 skipped, 2 failed; thumb "" none, "=" the file itself, else a key.
const STATUS = ["done", "skipped", "failed"];
const BATCH = 40;  // figures added at a time
const $ = (id) => document.getElementById(id);
const body = document.body, grid = $("grid"), more = $("more"), viewer = $("viewer");
const stats = { requested: 0, loaded: 0, failed: 0 };

// Two lists, filled as their data files arrive: all entries ("a"), the failed ones ("f").
const lists = {};
for (const [kind, total] of [["a", CONFIG.entries], ["f", CONFIG.failed]]) {
  lists[kind] = { kind, total, rows: [], files: CONFIG.files[kind], next: 0, loading: null };
}
let view = lists.a;  // the list on screen
let shown = 0;  // how many of view.rows are figures in the grid

window.cyclekitGallery = {
  add(kind, index, rows) {
    const list = lists[kind];
    if (index !== list.next) return;  // not the file asked for (a page written since)
    for (const row of rows) list.rows.push(row);
    list.next++;
  },
};

// One data file at a time and in order: a page of 100,000 entries reads the first 500 to
// show its first screen. A <script> element, since Chromium refuses fetch() of file:// URLs.
function loadNext(list) {
  if (!list.loading) {
    list.loading = new Promise((resolve, reject) => {
      const s = document.createElement("script");
      const n = String(list.next).padStart(4, "0");
      s.src = CONFIG.dir + "entries-" + CONFIG.run + "-" + list.kind + n + ".js";
      s.onload = () => { list.loading = null; s.remove(); resolve(); };
      s.onerror = () => reject(new Error(s.src));  // stays rejected: no retry loop
      document.head.append(s);
    });
  }
  return list.loading;
}

function report() {
  body.dataset.thumbsRequested = stats.requested;
  body.dataset.thumbsLoaded = stats.loaded;
  body.dataset.thumbsFailed = stats.failed;
  body.dataset.figures = grid.childElementCount;
}

function noPreview(text) {
  const span = document.createElement("span");
  span.textContent = text;
  return span;
}

// A thumbnail is requested only when it comes within 200 px of the window: our own observer,
// so that the page can count requests. Each <img> also says loading="lazy", the browser's own
// rule, whose margin is wider: it never holds back an image the observer asked for.
const MARGIN = 200;
function request(img) {
  thumbs.unobserve(img);
  if (img.src) return;  // asked for already
  img.onload = () => { stats.loaded++; report(); };
  img.onerror = () => {
    stats.failed++;
    img.replaceWith(noPreview(img.alt + ": no preview"));
    report();
  };
  img.src = img.dataset.src;
  stats.requested++;
}
const thumbs = new IntersectionObserver((seen) => {
  for (const item of seen) if (item.isIntersecting) request(item.target);
  report();
}, { rootMargin: MARGIN + "px 0px" });

// The observer's first report comes only after a rendered frame, which a busy machine (or a
// headless browser's virtual clock) can put off: the first screen's thumbnails are asked for
// as soon as their figures are laid out, by the same margin.
function requestVisible(imgs) {
  for (const img of imgs) {
    const r = img.getBoundingClientRect();
    if (r.top < innerHeight + MARGIN && r.bottom > -MARGIN) request(img);
  }
}

function thumbUrl(href, thumb) {
  return thumb === "=" ? href : CONFIG.dir + "thumbs/" + thumb.slice(0, 2) + "/" + thumb + ".jpg";
}

function cell(href, thumb, label) {
  if (!href) return noPreview("no " + label);
  const a = document.createElement("a");
  a.href = href;
  if (!thumb) {
    a.textContent = label + ": no preview";
    return a;
  }
  const img = document.createElement("img");
  img.alt = label;
  img.loading = "lazy";
  img.dataset.src = thumbUrl(href, thumb);
  thumbs.observe(img);
  a.append(img);
  return a;
}

function decoded(href) {
  try { return decodeURIComponent(href); } catch (e) { return href; }  // not UTF-8: as is
}

function figure(row, i) {
  const [status, input, inHref, outHref, reason, inThumb, outThumb] = row;
  const fig = document.createElement("figure");
  fig.className = STATUS[status];
  fig.dataset.i = i;
  const pair = document.createElement("div");
  pair.className = "pair";
  pair.append(cell(inHref, inThumb, "input"), cell(outHref, outThumb, "output"));
  const caption = document.createElement("figcaption");
  caption.textContent = input.split(/[\\\\/]/).pop();
  caption.title = input + (outHref ? " \\u2192 " + decoded(outHref) : "");
  fig.append(pair, caption);
  if (status === 2) {
    const p = document.createElement("p");
    p.className = "reason";
    p.textContent = reason || "failed";
    fig.append(p);
  }
  return fig;
}

// Figures are added while the marker below the grid is within a screen of the window: the
// page holds what was scrolled past plus about a screen, however many entries there are.
let filling = false;
async function fill() {
  if (filling) return;
  filling = true;
  try {
    while (shown < view.total && more.getBoundingClientRect().top < 2 * innerHeight) {
      if (shown >= view.rows.length) {
        if (view.next >= view.files) break;
        await loadNext(view);  // the view may change meanwhile: the loop reads it again
        continue;
      }
      const end = Math.min(shown + BATCH, view.rows.length);
      const batch = document.createDocumentFragment();
      for (; shown < end; shown++) batch.append(figure(view.rows[shown], shown));
      const imgs = [...batch.querySelectorAll("img")];
      grid.append(batch);
      requestVisible(imgs);
    }
  } catch (err) {
    $("status").textContent = "Missing gallery data (" + err.message + "): the gallery was " +
      "written again or moved; reload the page.";
  } finally {
    filling = false;
  }
  report();
  if (!("firstScreenMs" in body.dataset)) {
    // After the next frame: the first screen is laid out, not only in the DOM.
    body.dataset.firstScreenMs = "";
    requestAnimationFrame(() => { body.dataset.firstScreenMs = performance.now().toFixed(1); });
  }
}
// Checked on every scroll (at most once a frame), not with an IntersectionObserver on the
// marker: an observer reports only changes it sees between frames, so a jump (End key, a
// script) that lands near the bottom again right after a fill would add nothing.
addEventListener("scroll", fill, { passive: true });
addEventListener("resize", fill);

$("only-failed").addEventListener("change", (e) => {
  view = e.target.checked ? lists.f : lists.a;
  shown = 0;
  thumbs.disconnect();  // the old figures' thumbnails are gone with them
  grid.replaceChildren();
  window.scrollTo(0, 0);
  fill();
});

// The viewer: the full-size input and output side by side.
let current = -1, opener = null;
function openViewer(i) {
  if (viewer.hidden) opener = document.activeElement;  // focus goes back there on close
  const [status, input, inHref, outHref, reason, inThumb, outThumb, video] = view.rows[i];
  current = i;
  // A video is shown by its poster frames; the links below open the videos themselves.
  const inSrc = video ? (inThumb && thumbUrl(inHref, inThumb)) : inHref;
  const outSrc = video ? (outThumb && thumbUrl(outHref, outThumb)) : outHref;
  if (inSrc) $("full-in").src = inSrc; else $("full-in").removeAttribute("src");
  $("full-out").hidden = !outSrc;
  if (outSrc) $("full-out").src = outSrc; else $("full-out").removeAttribute("src");
  $("open-in").href = inHref;
  $("open-out").hidden = !outHref;
  $("open-out").href = outHref;
  $("caption").textContent = input + (outHref ? " \\u2192 " + decoded(outHref) : "") +
    (status === 2 ? ": " + (reason || "failed") : "");
  viewer.hidden = false;
  $("close").focus();
}
function closeViewer() {
  viewer.hidden = true;
  $("full-in").removeAttribute("src");  // a big photo is not kept decoded behind the grid
  $("full-out").removeAttribute("src");
  const fig = grid.querySelector('figure[data-i="' + current + '"]');
  if (fig) fig.scrollIntoView({ block: "nearest" });
  if (opener) opener.focus({ preventScroll: true });
}
grid.addEventListener("click", (e) => {
  const fig = e.target.closest("figure");
  // Ctrl/Cmd/Shift-click on an image: the browser opens the file itself.
  if (!fig || e.ctrlKey || e.metaKey || e.shiftKey) return;
  e.preventDefault();
  openViewer(Number(fig.dataset.i));
});
$("close").addEventListener("click", closeViewer);
document.addEventListener("keydown", (e) => {
  if (viewer.hidden) return;
  if (e.key === "Escape") closeViewer();
  else if (e.key === "ArrowRight" && current + 1 < view.rows.length) openViewer(current + 1);
  else if (e.key === "ArrowLeft" && current > 0) openViewer(current - 1);
});

fill();
</script>
</body></html>
"""
