"""Builders shared by the translate/export/gallery tests (this module holds no tests)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from click.testing import CliRunner, Result
from PIL import Image

from cyclekit.cli import main
from cyclekit.files import FORMAT_VERSION, atomic_save
from cyclekit.generator_io import save_generator
from cyclekit.models import build_generator, generator_spec


def tiny_spec(arch: str = "resnet_6blocks", ngf: int = 4, nc: tuple[int, int] = (3, 3)) -> dict:
    return generator_spec(arch, nc[0], nc[1], ngf, "instance", False)


def make_generator(path: Path, seed: int = 0, direction: str = "a2b", **kw: Any) -> Path:
    """An exported cyclekit generator: 6 blocks, ngf=4 (a few ms per small image)."""
    torch.manual_seed(seed)
    spec = tiny_spec(**kw)
    save_generator(path, build_generator(**spec), spec, direction)
    return path


def make_official(path: Path, seed: int = 0, ngf: int = 4) -> Path:
    """A bare state_dict, the way the official code saves latest_net_G.pth."""
    torch.manual_seed(seed)
    torch.save(build_generator("resnet_6blocks", ngf=ngf).state_dict(), path)
    return path


def make_train_checkpoint(path: Path) -> Path:
    """A cyclekit-train checkpoint holding two different tiny generators."""
    specs, models = {}, {}
    for seed, key in enumerate(("G_ab", "G_ba")):
        torch.manual_seed(seed)
        specs[key] = tiny_spec()
        models[key] = build_generator(**specs[key]).state_dict()
    payload = {
        "format": "cyclekit-train",
        "format_version": FORMAT_VERSION,
        "specs": specs,
        "models": models,
    }
    return atomic_save(payload, path)


def photo(w: int, h: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A smooth random (h, w, channels) uint8 image: gradients plus mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = [np.sin(xx / (7 + 5 * c) + c) * np.cos(yy / (11 + 3 * c)) for c in range(channels)]
    arr = (np.stack(base, -1) * 90 + 128 + rng.normal(0, 12, (h, w, channels))).clip(0, 255)
    return arr.astype(np.uint8)


def save_photo(path: Path, w: int, h: int, seed: int = 0, **save_kw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(w, h, seed)).save(path, **save_kw)
    return path


def cli(*args: str, catch: bool = False) -> Result:
    """Run ``cyclekit ARGS`` in-process; stdout and stderr are both in ``result.output``."""
    return CliRunner().invoke(main, list(args), catch_exceptions=catch)


def assert_user_error(r: Result, *needles: str, code: int = 1) -> str:
    """``r`` failed as a user mistake: exit ``code``, no traceback, exactly one ``Error:`` line
    (one line, not wrapped) that contains every needle (the file or flag). Returns that line."""
    assert r.exit_code == code, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    lines = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, r.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def visible_files(root: Path) -> list[str]:
    """Relative paths of the non-hidden files below ``root`` (what a user sees), sorted."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@contextlib.contextmanager
def serve_models(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 serving ``folder``; yields (base URL, log of paths asked).

    Any ``zebra2horse.pth`` request gets a response cut short (Content-Length 5000, 100 bytes).
    """
    log: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(folder), **kw)

        def do_GET(self) -> None:  # noqa: N802
            log.append(self.path)
            if self.path.endswith("zebra2horse.pth"):
                self.send_response(200)
                self.send_header("Content-Length", "5000")
                self.end_headers()
                self.wfile.write(b"x" * 100)
                return
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()


def translate_with(inp: Path | str, out: Path, gen: Path, *extra: str) -> Result:
    """``cyclekit translate INP -o OUT --checkpoint GEN --no-progress EXTRA...``."""
    return cli(
        "translate", str(inp), "-o", str(out), "--checkpoint", str(gen), "--no-progress", *extra
    )
