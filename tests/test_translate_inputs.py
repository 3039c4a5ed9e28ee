"""What translate reads: folder listing with link loops, very large scans, damaged metadata,
empty folders and files that are not checkpoints."""

from __future__ import annotations

import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclekit.data.images import ImageDecodeError, decode_image, image_size, list_images
from tests.test_translate_common import (
    assert_user_error,
    cli,
    save_photo,
    translate_with,
    tree_hashes,
    visible_files,
)


def _list_with_timeout(root: Path, seconds: float = 10.0) -> list[Path]:
    found: list[list[Path]] = []
    t = threading.Thread(target=lambda: found.append(list_images(root)), daemon=True)
    t.start()
    t.join(seconds)
    assert found, f"list_images({root}) did not finish in {seconds} s"
    return found[0]


@pytest.mark.parametrize("loops", [1, 2])
def test_symlink_loops_are_followed_once(tmp_path: Path, loops: int) -> None:
    root = tmp_path / "photos"
    save_photo(root / "a.png", 8, 8)
    save_photo(root / "sub" / "b.png", 8, 8)
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # loop 1
    if loops == 2:
        (root / "sub" / "again").symlink_to(root / "sub", target_is_directory=True)
        (root / "loop").symlink_to(root, target_is_directory=True)
    found = _list_with_timeout(root)
    assert [p.relative_to(root).as_posix() for p in found] == ["a.png", "sub/b.png"]


def test_linked_folders_and_files_are_listed_once(tmp_path: Path) -> None:
    real = tmp_path / "real"
    save_photo(real / "x.png", 8, 8)
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").symlink_to(real, target_is_directory=True)
    (root / "b").symlink_to(real, target_is_directory=True)  # the same folder again
    (root / "c.png").symlink_to(real / "x.png")  # the same file again
    # The first path a top-down walk meets: a folder's files before its subfolders.
    assert [p.relative_to(root).as_posix() for p in list_images(root)] == ["c.png"]


def test_translate_survives_a_symlink_loop(tmp_path: Path, gen: Path) -> None:
    inp = tmp_path / "in"
    save_photo(inp / "a.png", 16, 16)
    (inp / "self").symlink_to(inp, target_is_directory=True)
    r = translate_with(inp, tmp_path / "out", gen)
    assert r.exit_code == 0 and "done 1, skipped 0, failed 0" in r.output, r.output


def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims w x h (its pixel data is cut short): a cheap 'huge' image."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 9))
    )
    return path


def test_images_over_the_limit_are_one_line_errors(tmp_path: Path, gen: Path) -> None:
    (tmp_path / "in").mkdir()
    huge = _png_header_only(tmp_path / "in" / "huge.png", 30000, 20000)  # 600 megapixels
    save_photo(tmp_path / "in" / "ok.png", 16, 16)
    # Training's scan: reported as unreadable, with the file and Pillow's limit.
    for read in (image_size, decode_image):
        with pytest.raises(ImageDecodeError) as e:
            read(huge)
        assert str(e.value) == (
            f"{huge}: image too large (30000x20000 px, 600 megapixels; the limit is 89 megapixels)"
        )
    # Translate allows more (400 megapixels), not this.
    r = translate_with(tmp_path / "in", tmp_path / "out", gen)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {huge}: image too large (30000x20000 px, 600 megapixels; the limit is "
        "400 megapixels)"
    ]
    assert visible_files(tmp_path / "out") == ["ok.png"]


def test_translate_takes_images_over_pillows_limit(
    tmp_path: Path, gen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pillow refuses images over 2 x MAX_IMAGE_PIXELS (179 megapixels by default). The same
    # situation, small: a 64x48 image with Pillow's limit at 1000 pixels.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    save_photo(tmp_path / "in" / "scan.png", 64, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even Pillow's DecompressionBombWarning
        r = translate_with(tmp_path / "in", tmp_path / "out", gen)
    assert r.exit_code == 0, r.output
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's setting is left as it was
    monkeypatch.undo()
    assert Image.open(tmp_path / "out" / "scan.png").size == (64, 48)


def test_translate_limit_matches_help() -> None:
    from cyclekit.cli import translate as cli_translate
    from cyclekit.translate.batching import MIN_TILE
    from cyclekit.translate.image_io import MAX_PIXELS

    assert cli_translate.MIN_TILE == MIN_TILE
    assert cli_translate.MAX_MEGAPIXELS * 1_000_000 == MAX_PIXELS > Image.MAX_IMAGE_PIXELS
    text = " ".join(cli("translate", "--help").output.split())
    assert f"N >= {MIN_TILE}" in text and f"up to {MAX_PIXELS // 10**6} megapixels" in text


def _jpeg_with_damaged_exif(path: Path) -> Path:
    exif = Image.Exif()
    exif[0x013B] = "An Artist"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 32, 3), 120, np.uint8)).save(path, exif=exif.tobytes())
    data = bytearray(path.read_bytes())
    data[data.find(b"Exif") + 12] ^= 0xFF  # the IFD's entry count: now points past the block
    path.write_bytes(bytes(data))
    return path


def test_damaged_exif_is_one_clean_warning_line(tmp_path: Path, gen: Path) -> None:
    bad = _jpeg_with_damaged_exif(tmp_path / "in" / "cut.jpg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = decode_image(bad)
        r = translate_with(tmp_path / "in", tmp_path / "out", gen)
    assert decoded.warnings and decoded.exif is None
    assert not [w for w in caught if issubclass(w.category, UserWarning)], caught
    assert r.exit_code == 0, r.output
    notes = [line for line in r.output.splitlines() if line.startswith("warning:")]
    assert len(notes) == 1 and notes[0].startswith(f"warning: {bad}: Corrupt EXIF data"), notes
    assert Image.open(tmp_path / "out" / "cut.jpg").size == (32, 24)


def test_truncated_jpeg_is_one_error_line(tmp_path: Path, gen: Path) -> None:
    good = save_photo(tmp_path / "in" / "good.jpg", 64, 48)
    data = good.read_bytes()
    for cut in (40, len(data) // 2):
        (tmp_path / "in" / f"cut{cut}.jpg").write_bytes(data[:cut])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = translate_with(tmp_path / "in", tmp_path / "out", gen)
    assert not [w for w in caught if issubclass(w.category, UserWarning)], caught
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("cut" in e and "cannot" in e for e in errors), errors


def test_no_input_image_is_an_error(tmp_path: Path, gen: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    r = translate_with(tmp_path / "empty", tmp_path / "out", gen)
    assert_user_error(
        r, "no input image found", f"{tmp_path / 'empty'}: holds no image or video files"
    )
    assert not (tmp_path / "out").exists()
    r = translate_with(tmp_path / "*.png", tmp_path / "out", gen)
    assert_user_error(r, "no input image found", "matches no image files")


def test_a_checkpoint_that_is_an_image_never_suggests_unsafe_loading(tmp_path: Path) -> None:
    save_photo(tmp_path / "in" / "a.png", 16, 16)
    ckpt = save_photo(tmp_path / "a.jpg", 16, 16)
    before = tree_hashes(tmp_path)
    r = translate_with(tmp_path / "in", tmp_path / "out", ckpt)
    line = assert_user_error(r, f"{ckpt}:")
    assert "weights_only" not in r.output and "checkpoint" in line
    assert tree_hashes(tmp_path) == before
