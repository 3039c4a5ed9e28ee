"""A careless user's afternoon with `cyclekit translate` and `cyclekit export`: wrong paths,
forgotten names, bad flags, damaged files. A refused run ends with a non-zero exit, exactly one
``Error:`` line naming the file or flag, no traceback and no file anywhere created or changed;
a bad input file is one ``error:`` line naming it while the good ones are translated, and
nothing outside the output folder changes."""

from __future__ import annotations

import socket
import struct
import warnings
import zlib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cyclekit.cli import main
from tests.test_translate_common import (
    make_generator,
    make_train_checkpoint,
    save_photo,
    tree_hashes,
    visible_files,
)

# (arguments, exit code, text the Error line must hold). {in} holds a.jpg and b.png, {out} is a
# fresh output folder, {ck} a generator, {last} a training checkpoint, {ts} a TorchScript file,
# {photo} a JPEG and {txt} a text file of the user's, {empty} a folder without images, {web} a
# folder with the user's own index.html. translate gets `--checkpoint {ck}` unless the case
# names a model source.
# Exit 2: click refused the flag itself; exit 1: cyclekit refused the value.
RUN_CASES = [
    # --- where the results would go
    (["translate", "{in}", "-o", "{in}"], 1, "-o {in}: the output folder holds the input"),
    (["translate", "{in}", "-o", "{in}", "--format", "webp"], 1, "-o {in}: the output folder"),
    (["translate", "{in}/a.jpg", "-o", "{tmp}"], 1, "-o {tmp}: the output folder holds"),
    (["translate", "{in}", "-o", "{photo}"], 1, "-o {photo}: exists and is not a folder"),
    (["translate", "{in}", "-o", "{tmp}/result.png"], 1, "-o {tmp}/result.png: translate writes"),
    (["translate", "{in}", "-o", "{out}", "--report", "{photo}"], 1, "--report {photo}: expected"),
    (["translate", "{in}", "-o", "{out}", "--report", "{txt}"], 1, "--report {txt}: already"),
    (["translate", "{in}", "-o", "{out}", "--report", "{in}/a.jpg"], 1, "--report {in}/a.jpg"),
    (["translate", "{in}", "-o", "{out}", "--report", "{in}"], 2, "--report"),
    (["translate", "{in}", "-o", "{web}", "--gallery"], 1, "--gallery {web}/index.html: already"),
    # (a path below a file: the file system refuses, as it would a read-only folder)
    (["translate", "{in}", "-o", "{photo}/out"], 1, "-o {photo}/out: cannot write there"),
    (["translate", "{in}", "-o", "{out}", "--report", "{photo}/r.jsonl"], 1, "--report {photo}/"),
    # --- what would be read
    (["translate", "{empty}", "-o", "{out}"], 1, "no input image found ({empty}: holds no image"),
    (["translate", "{tmp}/nope", "-o", "{out}"], 1, "{tmp}/nope: no such file or folder"),
    (["translate", "{tmp}/*.tif", "-o", "{out}"], 1, "{tmp}/*.tif: matches no image files"),
    (["translate", "{in}", "-o", "{out}", "--checkpoint", "{photo}"], 1, "{photo}: "),
    (["translate", "{in}", "-o", "{out}", "--checkpoint", "{txt}"], 1, "{txt}: "),
    (["translate", "{in}", "-o", "{out}", "--checkpoint", "{ts}"], 1, "{ts}: a TorchScript file"),
    (
        ["translate", "{in}", "-o", "{out}", "--checkpoint", "{tmp}/no.pt"],
        1,
        "{tmp}/no.pt: no such",
    ),
    (["translate", "{in}", "-o", "{out}", "--checkpoint", "{in}"], 2, "--checkpoint"),
    (["translate", "{in}", "-o", "{out}", "--checkpoint", "{last}"], 1, "--direction a2b or b2a"),
    (["translate", "{in}", "-o", "{out}", "--model", "horse2cat"], 1, "'horse2cat'"),
    (["translate", "{in}", "-o", "{out}", "--model", "style_monet"], 1, "style_monet.pth"),
    (["translate", "{in}", "-o", "{out}", "--model", "x", "--checkpoint", "{ck}"], 1, "exactly"),
    # --- flags and values
    (["translate", "{in}", "-o", "{out}", "--device", "gpu"], 2, "--device"),
    (["translate", "{in}", "-o", "{out}", "--precision", "fp8"], 2, "--precision"),
    (["translate", "{in}", "-o", "{out}", "--precision", "fp16", "--device", "cpu"], 1, "fp16"),
    (["translate", "{in}", "-o", "{out}", "--format", "gif"], 2, "--format"),
    (["translate", "{in}", "-o", "{out}", "--direction", "a2c"], 2, "--direction"),
    (["translate", "{in}", "-o", "{out}", "--tile", "8"], 1, "--tile 8: tiles smaller than"),
    (["translate", "{in}", "-o", "{out}", "--tile", "0"], 1, "--tile must be positive"),
    (["translate", "{in}", "-o", "{out}", "--tile", "big"], 2, "--tile"),
    (["translate", "{in}", "-o", "{out}", "--resize", "big"], 1, "--resize 'big'"),
    (["translate", "{in}", "-o", "{out}", "--resize", "2x2"], 1, "--resize '2x2' is too small"),
    (["translate", "{in}", "-o", "{out}", "--resize", "8x8", "--max-size", "9"], 1, "--resize and"),
    (["translate", "{in}", "-o", "{out}", "--max-size", "0"], 2, "--max-size"),
    (["translate", "{in}", "-o", "{out}", "--quality", "0"], 2, "--quality"),
    (["translate", "{in}", "-o", "{out}", "--batch-size", "0"], 2, "--batch-size"),
    (["translate", "{in}", "-o", "{out}", "--num-workers", "0"], 2, "--num-workers"),
    (["translate", "{in}", "-o", "{out}", "--memory-budget", "1"], 2, "--memory-budget"),
    (["translate", "{in}", "-o", "{out}", "--tiel", "256"], 2, "--tiel"),
    # --- export
    (
        [
            "export",
            "--checkpoint",
            "{last}",
            "--direction",
            "a2b",
            "--format",
            "official",
            "-o",
            "{last}",
        ],
        1,
        "-o {last}: is also an input",
    ),  # fmt: skip
    (
        ["export", "--checkpoint", "{ck}", "--format", "official", "-o", "{last}"],
        1,
        "-o {last}: already exists and is not an official-format generator",
    ),  # fmt: skip
    (
        ["export", "--checkpoint", "{ck}", "--format", "torchscript", "-o", "{photo}"],
        1,
        "-o {photo}: already exists",
    ),  # fmt: skip
    (["export", "--checkpoint", "{ck}", "--format", "onnx", "-o", "{in}"], 2, "-o"),
    (
        ["export", "--checkpoint", "{ck}", "--format", "official", "-o", "{photo}/g.pth"],
        1,
        "-o {photo}/g.pth: cannot write",
    ),  # fmt: skip
    (
        ["export", "--checkpoint", "{photo}", "--format", "torchscript", "-o", "{tmp}/g.ts"],
        1,
        "{photo}: ",
    ),  # fmt: skip
    (
        ["export", "--checkpoint", "{tmp}/no.pt", "--format", "onnx", "-o", "{tmp}/g.onnx"],
        1,
        "{tmp}/no.pt: no such",
    ),  # fmt: skip
    (
        ["export", "--checkpoint", "{last}", "--format", "torchscript", "-o", "{tmp}/g.ts"],
        1,
        "--direction a2b or b2a",
    ),  # fmt: skip
    (["export", "--checkpoint", "{ck}", "--format", "tflite", "-o", "{tmp}/g.tfl"], 2, "--format"),
    (
        ["export", "--checkpoint", "{ts}", "--format", "onnx", "-o", "{tmp}/g.onnx"],
        1,
        "{ts}: a TorchScript file",
    ),  # fmt: skip
    (["export", "--checkpoint", "{ck}", "--format", "onnx"], 2, "-o"),
]


def _png_header_only(path: Path, w: int, h: int) -> None:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


# One bad file among good ones: (how to make it in {in}, the text its error line must hold).
FILE_CASES = {
    "empty.jpg": (lambda p: p.write_bytes(b""), "file is empty"),
    "text.jpg": (lambda p: p.write_text("not an image"), "not an image Pillow can read"),
    "cut.jpg": (
        lambda p: p.write_bytes(save_photo(p, 64, 48).read_bytes()[:700]),
        "cannot decode image",
    ),
    "speck.png": (lambda p: save_photo(p, 3, 3), "too small (3x3 px"),
    "huge.png": (lambda p: _png_header_only(p, 30000, 20000), "the limit is 400 megapixels"),
    "folder.png": (
        lambda p: p.mkdir(parents=True),
        "is a folder",
    ),  # {out}/folder.png exists as a folder
}


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's files, and an environment where nothing can reach the network."""
    save_photo(tmp_path / "in" / "a.jpg", 24, 16)
    save_photo(tmp_path / "in" / "b.png", 16, 24, seed=1)
    make_generator(tmp_path / "G_ab.pt")
    make_train_checkpoint(tmp_path / "run" / "last.pt")
    save_photo(tmp_path / "photo.jpg", 20, 20, seed=2)
    (tmp_path / "notes.txt").write_text("my notes\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        torch.jit.save(torch.jit.script(torch.nn.Identity()), str(tmp_path / "model.ts"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "index.html").write_text("<html>my homepage</html>")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("CYCLEKIT_PRETRAINED_URL", closed)
    monkeypatch.setenv("CYCLEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _fill(text: str, root: Path) -> str:
    names = {
        "in": root / "in",
        "out": root / "out",
        "ck": root / "G_ab.pt",
        "last": root / "run" / "last.pt",
        "photo": root / "photo.jpg",
        "txt": root / "notes.txt",
        "ts": root / "model.ts",
        "empty": root / "empty",
        "web": root / "web",
        "tmp": root,
    }
    return text.format(**{k: str(v) for k, v in names.items()})


def _one_error_line(r, code: int) -> str:
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == code, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.output
    if code == 1:  # cyclekit's own messages: the Error line is the whole output
        assert r.output.strip() == errors[0], r.output
    return errors[0]


@pytest.mark.parametrize("args, code, names", RUN_CASES, ids=[" ".join(c[0]) for c in RUN_CASES])
def test_refused_run_is_one_error_line_and_changes_nothing(workspace, args, code, names):
    before = tree_hashes(workspace)
    args = [_fill(a, workspace) for a in args]
    if args[0] == "translate":
        if "--checkpoint" not in args and "--model" not in args:
            args += ["--checkpoint", str(workspace / "G_ab.pt")]
        args += ["--no-progress"]
    r = CliRunner().invoke(main, args)
    line = _one_error_line(r, code)
    assert _fill(names, workspace) in line, r.output
    assert "weights_only" not in line
    assert tree_hashes(workspace) == before  # nothing changed, created or deleted


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_bad_file_is_one_error_line_and_the_rest_are_translated(workspace, name):
    make, reason = FILE_CASES[name]
    out = workspace / "out"
    if name == "folder.png":
        make(out / name)
        save_photo(workspace / "in" / name, 16, 16, seed=3)
    else:
        make(workspace / "in" / name)
    before = tree_hashes(workspace)
    r = CliRunner().invoke(
        main,
        ["translate", str(workspace / "in"), "-o", str(out), "--checkpoint",
         str(workspace / "G_ab.pt"), "--no-progress"],
    )  # fmt: skip
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 1, r.output
    errors = [line for line in r.output.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {workspace / 'in' / name}: ")
    assert reason in errors[0], errors
    assert "done 2, skipped 0, failed 1" in r.output
    assert visible_files(out) == ["a.jpg", "b.png"]
    after = tree_hashes(workspace)
    outside = {k: v for k, v in after.items() if not k.startswith("out/")}
    assert outside == {k: v for k, v in before.items() if not k.startswith("out/")}
