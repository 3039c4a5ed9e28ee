"""cyclekit translate: sizes, orientation, alpha, bad files, names, resuming, never overwriting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from cyclekit.generator_io import load_generator
from cyclekit.translate.engine import RECORD_NAME, TranslateOptions, translate_paths
from cyclekit.translate.image_io import PARTIAL_SUFFIX
from cyclekit.translate.plan import plan_jobs
from tests.test_translate_common import (
    assert_user_error,
    cli,
    make_generator,
    photo,
    save_photo,
    translate_with,
    tree_hashes,
    visible_files,
)


def test_odd_sizes_come_back_exactly(tmp_path: Path, gen: Path) -> None:
    sizes = {"odd.png": (257, 301), "tiny.png": (5, 7), "strip.jpg": (64, 4)}
    for name, (w, h) in sizes.items():
        save_photo(tmp_path / "in" / name, w, h)
    r = translate_with(tmp_path / "in", tmp_path / "out", gen)
    assert r.exit_code == 0, r.output
    assert "done 3, skipped 0, failed 0" in r.output
    for name, size in sizes.items():
        assert Image.open(tmp_path / "out" / name).size == size


def test_exif_rotated_input_comes_out_upright_with_metadata(tmp_path: Path, gen: Path) -> None:
    upright = Image.fromarray(photo(24, 40))  # portrait, as the camera meant it
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored pixels must be rotated 90 degrees clockwise
    exif[0x013B] = "An Artist"
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # landscape on disk
    (tmp_path / "in").mkdir()
    upright.save(tmp_path / "in" / "plain.png")
    stored.save(tmp_path / "in" / "rotated.png", exif=exif.tobytes(), icc_profile=icc)
    stored.save(tmp_path / "in" / "rotated.jpg", exif=exif.tobytes(), icc_profile=icc, quality=95)
    r = translate_with(tmp_path / "in", tmp_path / "out", gen)
    assert r.exit_code == 0, r.output
    for name in ("rotated.png", "rotated.jpg"):
        out = Image.open(tmp_path / "out" / name)
        assert out.size == (24, 40)
        assert out.getexif().get(0x0112, 1) == 1  # viewers must not rotate it again
        assert out.getexif().get(0x013B) == "An Artist"
        assert out.info.get("icc_profile") == icc
    # Lossless PNG: the rotated file gives exactly the output of the upright one.
    a = np.asarray(Image.open(tmp_path / "out" / "rotated.png"))
    b = np.asarray(Image.open(tmp_path / "out" / "plain.png"))
    np.testing.assert_array_equal(a, b)


def test_alpha_is_kept_and_gray_gives_rgb(tmp_path: Path, gen: Path) -> None:
    ramp = np.linspace(0, 255, 33 * 29).reshape(29, 33).astype(np.uint8)
    rgba = np.dstack([photo(33, 29), ramp])
    (tmp_path / "in").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in" / "cut.png")
    Image.fromarray(photo(20, 16, channels=1)[:, :, 0], "L").save(tmp_path / "in" / "gray.png")
    r = translate_with(tmp_path / "in", tmp_path / "out", gen, "--precision", "fp32")
    assert r.exit_code == 0, r.output
    out = Image.open(tmp_path / "out" / "cut.png")
    assert out.mode == "RGBA" and out.size == (33, 29)
    np.testing.assert_array_equal(np.asarray(out)[:, :, 3], rgba[:, :, 3])
    assert Image.open(tmp_path / "out" / "gray.png").mode == "RGB"


def test_one_channel_model_gives_gray(tmp_path: Path) -> None:
    gen = make_generator(tmp_path / "gray.pt", nc=(1, 1))
    save_photo(tmp_path / "in" / "c.png", 17, 23)
    r = translate_with(tmp_path / "in", tmp_path / "out", gen)
    assert r.exit_code == 0, r.output
    out = Image.open(tmp_path / "out" / "c.png")
    assert out.mode == "L" and out.size == (17, 23)


def test_bad_files_are_listed_and_the_rest_translated(tmp_path: Path, gen: Path) -> None:
    inp = tmp_path / "in"
    save_photo(inp / "good1.jpg", 40, 30)
    save_photo(inp / "sub" / "good2.png", 30, 40)
    good = (inp / "good1.jpg").read_bytes()
    (inp / "corrupt.jpg").write_bytes(good[: len(good) // 2])  # truncated mid-stream
    (inp / "empty.jpg").write_bytes(b"")
    (inp / "notes.jpg").write_text("this is not a picture\n")
    save_photo(inp / "speck.png", 3, 3)
    before = tree_hashes(inp)
    report = tmp_path / "report.jsonl"
    r = translate_with(inp, tmp_path / "out", gen, "--report", str(report))
    assert r.exit_code == 1
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 4
    for name, why in [
        ("corrupt.jpg", "cannot decode"),
        ("empty.jpg", "empty"),
        ("notes.jpg", "not an image"),
        ("speck.png", "too small"),
    ]:
        assert any(str(inp / name) in e and why in e for e in errors), (name, errors)
    assert "done 2, skipped 0, failed 4" in r.output
    assert visible_files(tmp_path / "out") == ["good1.jpg", "sub/good2.png"]
    lines = [json.loads(s) for s in report.read_text().splitlines()]
    assert sorted(e["status"] for e in lines) == ["done"] * 2 + ["failed"] * 4
    assert tree_hashes(inp) == before


def test_missing_input_is_reported_but_others_run(tmp_path: Path, gen: Path) -> None:
    save_photo(tmp_path / "a.png", 16, 16)
    r = cli(
        "translate",
        str(tmp_path / "a.png"),
        str(tmp_path / "nope"),
        str(tmp_path / "*.tif"),
        "-o",
        str(tmp_path / "out"),
        "--checkpoint",
        str(gen),
        "--no-progress",
    )
    assert r.exit_code == 1
    assert "nope: no such file or folder" in r.output
    assert "*.tif: matches no image files" in r.output
    assert (tmp_path / "out" / "a.png").is_file()


def test_subfolders_are_mirrored_and_names_never_collide(tmp_path: Path, gen: Path) -> None:
    inp = tmp_path / "in"
    for rel in ("a/x.jpg", "b/x.jpg", "x.jpg", "x.png"):
        save_photo(inp / rel, 12, 12, seed=len(rel))
    r = translate_with(inp, tmp_path / "out", gen, "--format", "png")
    assert r.exit_code == 0, r.output
    # x.png is already a PNG and keeps its name; the JPEGs get .png after theirs.
    assert visible_files(tmp_path / "out") == ["a/x.jpg.png", "b/x.jpg.png", "x.jpg.png", "x.png"]
    # Globs keep the folders below their fixed part.
    r = cli(
        "translate",
        f"{inp}/**/x.jpg",
        "-o",
        str(tmp_path / "g"),
        "--checkpoint",
        str(gen),
        "--no-progress",
    )
    assert r.exit_code == 0, r.output
    assert {str(p.relative_to(tmp_path / "g")) for p in (tmp_path / "g").rglob("*.jpg")} == {
        "a/x.jpg",
        "b/x.jpg",
        "x.jpg",
    }


def test_never_overwrites_an_input(tmp_path: Path, gen: Path) -> None:
    inp = tmp_path / "in"
    save_photo(inp / "a.png", 16, 16)
    save_photo(inp / "b.png", 16, 16, seed=1)
    before = tree_hashes(inp)
    # The inputs' folder itself (also when no name would clash), or a folder above it.
    for args, out in [
        ([str(inp)], inp),
        ([str(inp / "a.png")], inp),
        ([str(inp), "--format", "webp"], inp),
        ([str(inp)], tmp_path),
    ]:
        r = cli("translate", *args, "-o", str(out), "--checkpoint", str(gen), "--no-progress")
        assert_user_error(r, f"Error: -o {out}: the output folder holds the input")
    assert tree_hashes(inp) == before
    assert visible_files(tmp_path) == ["G_ab.pt", "in/a.png", "in/b.png"]
    # An output folder inside the input folder is fine, and its images are not inputs later.
    for _ in range(2):
        r = translate_with(inp, inp / "out", gen)
        assert r.exit_code == 0 and "done 2," in r.output, r.output
    assert visible_files(inp / "out") == ["a.png", "b.png"]
    assert {k: v for k, v in tree_hashes(inp).items() if not k.startswith("out")} == before


def test_an_output_that_is_the_same_file_as_an_input_is_refused(tmp_path: Path, gen: Path) -> None:
    # On case-insensitive file systems (macOS, Windows) IMG.png and IMG.PNG are one file, so a
    # name comparison is not enough. A hard link gives the same situation on any system.
    inp, out = tmp_path / "in", tmp_path / "out"
    save_photo(inp / "IMG.png", 16, 16)
    out.mkdir()
    os.link(inp / "IMG.png", out / "IMG.png")
    before = tree_hashes(inp)
    r = translate_with(inp, out, gen)
    assert r.exit_code != 0 and "was not written by cyclekit translate" in r.output, r.output
    assert str(out / "IMG.png") in r.output
    assert tree_hashes(inp) == before
    # Even a link that an earlier run is recorded as having written: outputs are written to a
    # temporary name and renamed, which replaces the name in the output folder, never the
    # file the input's name points to.
    (out / RECORD_NAME).write_text("IMG.png\n")
    r = translate_with(inp, out, gen)
    assert r.exit_code == 0, r.output
    assert (
        tree_hashes(inp) == before
        and (out / "IMG.png").stat().st_ino != (inp / "IMG.png").stat().st_ino
    )


def test_resize_options(tmp_path: Path, gen: Path) -> None:
    rgba = np.dstack([photo(300, 200), np.full((200, 300), 128, np.uint8)])
    (tmp_path / "in").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in" / "p.png")
    cases = [
        (["--max-size", "64"], (300, 200)),
        (["--max-size", "64", "--keep-resized"], (64, 43)),
        # No side below 4 px, and the aspect ratio kept: 6x4, not 4x4.
        (["--max-size", "2", "--keep-resized"], (6, 4)),
        (["--resize", "32x48"], (300, 200)),
        (["--resize", "32x48", "--keep-resized"], (32, 48)),
    ]
    for i, (extra, size) in enumerate(cases):
        r = translate_with(tmp_path / "in", tmp_path / f"o{i}", gen, *extra)
        assert r.exit_code == 0, r.output
        out = Image.open(tmp_path / f"o{i}" / "p.png")
        assert (out.size, out.mode) == (size, "RGBA")
    r = translate_with(tmp_path / "in", tmp_path / "bad", gen, "--resize", "big")
    assert r.exit_code != 0 and "--resize 'big' is not WIDTHxHEIGHT" in r.output
    # Both at once: one would be ignored, so neither is guessed.
    r = translate_with(
        tmp_path / "in", tmp_path / "bad", gen, "--resize", "32x48", "--max-size", "9"
    )
    assert_user_error(r, "--resize and --max-size cannot be combined")
    assert not (tmp_path / "bad").exists()


def test_output_format_and_quality(tmp_path: Path, gen: Path) -> None:
    rgba = np.dstack([photo(20, 20), np.full((20, 20), 0, np.uint8)])
    (tmp_path / "in").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in" / "clear.png")
    r = translate_with(tmp_path / "in", tmp_path / "j", gen, "--format", "jpg", "--quality", "80")
    assert r.exit_code == 0, r.output
    out = Image.open(tmp_path / "j" / "clear.png.jpg")
    assert out.format == "JPEG" and out.mode == "RGB"
    assert np.asarray(out).min() > 240  # fully transparent: composited on white, as decoding
    r = translate_with(tmp_path / "in", tmp_path / "w", gen, "--format", "webp")
    assert Image.open(tmp_path / "w" / "clear.png.webp").mode == "RGBA"


def test_interrupted_run_resumes_with_skip_existing(tmp_path: Path, gen: Path, monkeypatch) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    for i in range(5):
        save_photo(inp / f"im{i}.png", 24, 20, seed=i)
    real_save, calls = Image.Image.save, []

    def flaky_save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 3:  # Ctrl-C in the middle of writing the third image
            Path(fp).write_bytes(b"\x89PNG half an image")
            raise KeyboardInterrupt
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    r = translate_with(inp, out, gen, "--num-workers", "1", "--batch-size", "1")
    assert r.exit_code == 130
    assert "--skip-existing" in r.output
    monkeypatch.setattr(Image.Image, "save", real_save)
    written = visible_files(out)
    # The interrupted image is not there, not even half; images the writer thread had already
    # taken on may have completed (2 or 3 files, depending on thread timing).
    assert "im2.png" not in written and 2 <= len(written) <= 3
    assert not list(out.glob(f".*{PARTIAL_SUFFIX}"))
    for name in written:
        Image.open(out / name).load()  # complete images only
    first = {k: v for k, v in tree_hashes(out).items() if not k.startswith(".")}
    r = translate_with(inp, out, gen, "--skip-existing")
    assert r.exit_code == 0, r.output
    assert f"done {5 - len(written)}, skipped {len(written)}, failed 0" in r.output
    assert visible_files(out) == [f"im{i}.png" for i in range(5)]
    assert {k: tree_hashes(out)[k] for k in first} == first  # skipped outputs untouched


@pytest.mark.slow
def test_killed_process_leaves_only_complete_images(tmp_path: Path, gen: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    for i in range(24):
        save_photo(inp / f"im{i:02d}.png", 128, 96, seed=i)
    cmd = [
        sys.executable,
        "-m",
        "cyclekit",
        "translate",
        str(inp),
        "-o",
        str(out),
        "--checkpoint",
        str(gen),
        "--no-progress",
        "--batch-size",
        "1",
        "--report",
        str(tmp_path / "r.jsonl"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("*.png"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = list(out.glob("*.png"))
    assert 2 <= len(finished) < 24
    for p in finished:
        Image.open(p).load()  # every visible image is complete
    assert not (tmp_path / "r.jsonl").exists()  # only its temporary file, never half a report
    r = translate_with(inp, out, gen, "--skip-existing", "--report", str(tmp_path / "r.jsonl"))
    assert r.exit_code == 0, r.output
    assert f"skipped {len(finished)}," in r.output
    assert len(list(out.glob("*.png"))) == 24
    assert not list(out.glob(f".*{PARTIAL_SUFFIX}"))  # the killed run's temporary files are gone
    assert not list(tmp_path.glob(".r.jsonl.*"))
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 24


def test_same_size_images_are_batched_and_match_single(tmp_path: Path, gen: Path) -> None:
    for i in range(4):
        save_photo(tmp_path / "in" / f"s{i}.png", 32, 24, seed=i)
    save_photo(tmp_path / "in" / "other.png", 40, 24)
    model, info = load_generator(gen)
    shapes: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape)))
    for bs in (4, 1):
        opts = TranslateOptions(
            tmp_path / f"b{bs}", batch_size=bs, precision="fp32", progress=False
        )
        report = translate_paths([str(tmp_path / "in")], model, info, opts)
        assert (report.done, report.exit_code) == (5, 0)
    assert (4, 3, 24, 32) in shapes and (1, 3, 24, 40) in shapes
    for name in visible_files(tmp_path / "b1"):
        a = np.asarray(Image.open(tmp_path / "b4" / name), np.int16)
        b = np.asarray(Image.open(tmp_path / "b1" / name), np.int16)
        assert np.abs(a - b).max() <= 1


def test_plan_is_deterministic_and_refuses_a_file_as_output(tmp_path: Path, gen: Path) -> None:
    for rel in ("b/x.jpg", "a/x.jpg"):
        save_photo(tmp_path / "in" / rel, 8, 8)
    jobs1, _ = plan_jobs([str(tmp_path / "in")], tmp_path / "out")
    jobs2, _ = plan_jobs([str(tmp_path / "in")], tmp_path / "out")
    assert [j.dst for j in jobs1] == [j.dst for j in jobs2]
    (tmp_path / "file").write_text("x")
    # A valid checkpoint, so that it is the output folder check that answers.
    r = translate_with(tmp_path / "in", tmp_path / "file", gen)
    assert_user_error(r, f"Error: -o {tmp_path / 'file'}: exists and is not a folder")
    assert (tmp_path / "file").read_text() == "x"


def test_help_teaches_and_cli_import_is_light() -> None:
    r = cli("translate", "--help")
    assert r.exit_code == 0
    for needle in ("Examples:", "--skip-existing", "--model", "--tile", "--gallery"):
        assert needle in r.output
    assert "Examples:" in cli("export", "--help").output
    code = "import sys, cyclekit.cli, cyclekit.cli.translate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
