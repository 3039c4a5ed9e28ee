"""Official dataset downloads against a local HTTP server (never the internet): layout, resume,
refused archives, offline messages, ``list``, and the commands shown in datasets/README.md."""

from __future__ import annotations

import io
import re
import shlex
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cyclekit.cli import main
from cyclekit.data.official import (
    OFFICIAL,
    URL_ENV,
    DatasetError,
    download_dataset,
    is_present,
    unsafe_member,
)

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_NAMES = """apple2orange summer2winter_yosemite horse2zebra monet2photo cezanne2photo
ukiyoe2photo vangogh2photo maps cityscapes facades iphone2dslr_flower ae_photos grumpifycat
mini""".split()


# ------------------------------------------------------------------------------------------------
# A local server that honours "Range: bytes=N-" (or ignores it, when told to).


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        rng = self.headers.get("Range")
        srv.log.append((self.path, rng))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if rng and srv.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if srv.hang_up_after is not None:  # announce everything, send a part, hang up
            body = body[: srv.hang_up_after]
            srv.hang_up_after = None
        self.wfile.write(body)
        srv.sent += len(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch):
    srv = HTTPServer(("127.0.0.1", 0), _Handler)
    srv.timeout = 5
    srv.files, srv.log, srv.sent, srv.honour_range = {}, [], 0, True
    srv.hang_up_after = None
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    monkeypatch.setenv(URL_ENV, f"http://127.0.0.1:{srv.server_port}/files/")
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def _png(seed: int, size: int = 40) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _zip(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16) | 0x20  # S_IFLNK | rwx
            zf.writestr(info, target)
    return buf.getvalue()


def _dataset_zip(name: str, n: int = 2) -> bytes:
    entries = {}
    for k, sub in enumerate(("trainA", "trainB", "testA", "testB")):
        for i in range(n):
            entries[f"{name}/{sub}/{i}.png"] = _png(10 * k + i)
    return _zip(entries)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# ------------------------------------------------------------------------------------------------


def test_registry_matches_the_official_list():
    assert set(OFFICIAL) == set(OFFICIAL_NAMES)
    assert (
        OFFICIAL["cityscapes"].manual and "cityscapes-dataset.com" in OFFICIAL["cityscapes"].manual
    )


def test_good_download_and_extract(server, tmp_path):
    server.files["/files/mini.zip"] = _dataset_zip("mini")
    root = tmp_path / "data"
    out = download_dataset("mini", root, progress=False)
    assert out == root / "mini" and is_present(root, "mini")
    for sub in ("trainA", "trainB", "testA", "testB"):
        assert sorted(p.name for p in (out / sub).iterdir()) == ["0.png", "1.png"]
    assert (out / "trainB" / "1.png").read_bytes() == _png(11)
    assert _leftovers(root) == ["mini"]  # no zip, no .part, no temp folder
    assert server.log == [("/files/mini.zip", None)]


def test_a_zip_without_the_top_folder_is_accepted(server, tmp_path):
    server.files["/files/facades.zip"] = _zip({"trainA/a.png": _png(1), "trainB/b.png": _png(2)})
    out = download_dataset("facades", tmp_path, progress=False)
    assert (out / "trainA" / "a.png").exists() and (out / "trainB" / "b.png").exists()


def test_resume_a_partial_download(server, tmp_path):
    data = _dataset_zip("horse2zebra")
    server.files["/files/horse2zebra.zip"] = data
    cut = len(data) // 3
    (tmp_path / "horse2zebra.zip.part").write_bytes(data[:cut])
    download_dataset("horse2zebra", tmp_path, progress=False)
    assert server.log == [("/files/horse2zebra.zip", f"bytes={cut}-")]
    assert server.sent == len(data) - cut  # only the rest came over the wire
    assert is_present(tmp_path, "horse2zebra") and _leftovers(tmp_path) == ["horse2zebra"]


def test_a_dropped_connection_keeps_the_part_file_and_the_next_run_resumes(server, tmp_path):
    data = _dataset_zip("monet2photo")
    server.files["/files/monet2photo.zip"] = data
    server.hang_up_after = 1000
    with pytest.raises(DatasetError, match=r"closed at 1000 of \d+ bytes; run again to resume"):
        download_dataset("monet2photo", tmp_path, progress=False)
    assert (tmp_path / "monet2photo.zip.part").stat().st_size == 1000
    assert not (tmp_path / "monet2photo").exists()
    download_dataset("monet2photo", tmp_path, progress=False)
    assert server.log[-1] == ("/files/monet2photo.zip", "bytes=1000-")
    assert is_present(tmp_path, "monet2photo") and _leftovers(tmp_path) == ["monet2photo"]


def test_a_server_that_ignores_range_restarts_the_download(server, tmp_path):
    data = _dataset_zip("apple2orange")
    server.files["/files/apple2orange.zip"] = data
    server.honour_range = False
    (tmp_path / "apple2orange.zip.part").write_bytes(b"garbage that must not be kept")
    download_dataset("apple2orange", tmp_path, progress=False)
    assert server.sent == len(data) and is_present(tmp_path, "apple2orange")


def test_a_complete_part_file_is_used_when_the_server_says_416(server, tmp_path):
    data = _dataset_zip("mini")
    server.files["/files/mini.zip"] = data
    (tmp_path / "mini.zip.part").write_bytes(data)
    download_dataset("mini", tmp_path, progress=False)
    assert server.sent == 0 and is_present(tmp_path, "mini")


@pytest.mark.parametrize(
    "entries, symlinks",
    [
        ({"mini/trainA/a.png": b"x", "mini/trainB/b.png": b"y", "../evil.txt": b"pwned"}, None),
        ({"mini/trainA/a.png": b"x", "mini/../../evil.txt": b"pwned"}, None),
        ({"mini/trainA/a.png": b"x", "/tmp/evil.txt": b"pwned"}, None),
        ({"mini/trainA/a.png": b"x", "mini/trainB/b.png": b"y"}, {"mini/trainA/link": "../../"}),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink"],
)
def test_a_malicious_zip_is_refused_and_leaves_nothing(server, tmp_path, entries, symlinks):
    server.files["/files/mini.zip"] = _zip(entries, symlinks)
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match=r"refusing archive.*unsafe"):
        download_dataset("mini", root, progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not list(tmp_path.rglob("evil.txt"))
    assert _leftovers(root) == []  # no dataset, no temp folder, the bad zip deleted


@pytest.mark.parametrize("kind", ["crc", "not-a-zip", "truncated"])
def test_a_corrupt_zip_is_refused(server, tmp_path, kind):
    data = bytearray(_dataset_zip("mini"))
    if kind == "crc":
        i = data.index(b"IDAT") + 8  # a byte inside the first stored PNG's pixel data
        data[i] ^= 0xFF
    elif kind == "not-a-zip":
        data = bytearray(b"<html>502 Bad Gateway</html>")
    else:
        data = data[: len(data) // 2]
    server.files["/files/mini.zip"] = bytes(data)
    with pytest.raises(DatasetError, match=r"mini\.zip: (corrupt zip|not a zip)"):
        download_dataset("mini", tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def test_an_archive_without_train_folders_is_refused(server, tmp_path):
    server.files["/files/mini.zip"] = _zip({"mini/photos/a.png": _png(0)})
    with pytest.raises(DatasetError, match="has no trainA, trainB folder"):
        download_dataset("mini", tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def test_http_errors_name_the_url(server, tmp_path):
    with pytest.raises(DatasetError, match=r"/files/maps\.zip: HTTP 404"):
        download_dataset("maps", tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_gives_one_line_with_the_url_and_the_layout(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv(URL_ENV, url)
    root = tmp_path / "data"
    r = CliRunner().invoke(main, ["datasets", "download", "horse2zebra", "--root", str(root)])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    assert f"{url}/horse2zebra.zip" in lines[0] and "connection refused" in lines[0]
    assert f"{root}/horse2zebra/trainA" in lines[0] and f"{root}/horse2zebra/trainB" in lines[0]


def test_cityscapes_explains_the_manual_download(tmp_path):
    r = CliRunner().invoke(main, ["datasets", "download", "cityscapes", "--root", str(tmp_path)])
    assert r.exit_code == 1 and "cityscapes-dataset.com" in r.output
    assert "gtFine_trainvaltest.zip" in r.output and f"{tmp_path}/cityscapes/trainA" in r.output


@pytest.mark.parametrize(
    "name, why",
    [
        ("a/b.png", None),
        ("a/", None),
        ("../x", "'..' in the path"),
        ("a/../../x", "'..' in the path"),
        ("..\\x", "'..' in the path"),
        ("/etc/passwd", "absolute path"),
        ("\\x", "absolute path"),
        ("C:/x", "absolute path"),
    ],
)
def test_unsafe_member(name, why):
    assert unsafe_member(zipfile.ZipInfo(name)) == why


def test_list_shows_names_sizes_and_what_is_here(tmp_path):
    for sub in ("trainA", "trainB"):
        (tmp_path / "horse2zebra" / sub).mkdir(parents=True)
    (tmp_path / "maps" / "trainA").mkdir(parents=True)  # incomplete: not "here"
    r = CliRunner().invoke(main, ["datasets", "list", "--root", str(tmp_path)])
    assert r.exit_code == 0
    rows = {line.split()[0]: line.split() for line in r.output.splitlines()[1:] if line[:2] == "  "}
    for name in OFFICIAL_NAMES:
        assert name in rows
        assert rows[name][1].startswith("~")
    assert rows["horse2zebra"][3] == "yes" and rows["maps"][3] == "no"
    assert "[manual download]" in r.output
    assert {"day2night", "photo2poster"} <= set(rows)


def test_cli_download_end_to_end(server, tmp_path):
    server.files["/files/grumpifycat.zip"] = _dataset_zip("grumpifycat")
    args = ["datasets", "download", "grumpifycat", "--root", str(tmp_path), "--no-progress"]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0 and "grumpifycat: ready in" in r.output
    assert is_present(tmp_path, "grumpifycat")
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0 and "already here" in r.output and len(server.log) == 1
    r = CliRunner().invoke(main, [*args, "--force"], catch_exceptions=False)
    assert r.exit_code == 0 and len(server.log) == 2 and _leftovers(tmp_path) == ["grumpifycat"]
    r = CliRunner().invoke(main, ["datasets", "download", "zebra2horse"])
    assert r.exit_code == 2 and "zebra2horse" in r.output


def test_importing_the_command_is_light():
    import subprocess
    import sys

    code = (
        "import sys, cyclekit.cli.datasets;"
        "print(','.join(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ------------------------------------------------------------------------------------------------
# datasets/README.md: every command in its ```sh blocks runs here, in order, in a scratch folder.

TINY_TRAIN = "--max-steps 1 --ngf 8 --ndf 8 --netG resnet_6blocks --load-size 36 --crop-size 32"
TINY_TRAIN += " --num-workers 0 --no-progress --device cpu --wandb-mode disabled"


def readme_commands() -> list[str]:
    text = (REPO / "datasets" / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def test_readme_commands_are_all_in_tested_blocks():
    cmds = readme_commands()
    assert cmds and all(c.startswith("cyclekit ") for c in cmds)
    prose = re.sub(r"```sh\n.*?```", "", (REPO / "datasets" / "README.md").read_text(), flags=re.S)
    assert "`cyclekit " not in prose and "$ cyclekit" not in prose  # an untested command


@pytest.mark.slow
def test_readme_commands_run(server, tmp_path, monkeypatch):
    for name in OFFICIAL_NAMES:
        if not OFFICIAL[name].manual:
            server.files[f"/files/{name}.zip"] = _dataset_zip(name)
    monkeypatch.chdir(tmp_path)
    for cmd in readme_commands():
        args = shlex.split(cmd)[1:]
        if args[0] == "train":
            args += shlex.split(TINY_TRAIN) + ["--checkpoints-dir", str(tmp_path / "runs")]
        r = CliRunner().invoke(main, args, catch_exceptions=False)
        assert r.exit_code == 0, f"{cmd}\n{r.output}"
    assert is_present(tmp_path / "datasets", "day2night")


def test_download_into_an_unusable_root_is_one_line_and_names_it(server, tmp_path):
    server.files["/files/mini.zip"] = _dataset_zip("mini")
    (tmp_path / "f").write_text("mine")
    root = tmp_path / "f" / "sub"
    r = CliRunner().invoke(main, ["datasets", "download", "mini", "--root", str(root)])
    assert r.exit_code == 1 and isinstance(r.exception, (SystemExit, type(None)))
    assert r.output.count("\n") == 1 and f"--root {root}: cannot create the folder" in r.output
    assert (tmp_path / "f").read_text() == "mine" and server.log == []


def test_a_failure_while_unpacking_keeps_the_zip_and_says_why(server, tmp_path, monkeypatch):
    from cyclekit.data import official

    server.files["/files/mini.zip"] = _dataset_zip("mini")

    def full(zip_path, dest):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(official, "safe_extract", full)
    with pytest.raises(DatasetError, match="cannot unpack mini.zip .No space left on device"):
        download_dataset("mini", tmp_path, progress=False)
    assert _leftovers(tmp_path) == ["mini.zip"]  # the next run unpacks it without downloading


def test_dataset_names_are_accepted_in_any_case(server, tmp_path):
    server.files["/files/mini.zip"] = _dataset_zip("mini")
    args = ["datasets", "download", "MINI", "--root", str(tmp_path), "--no-progress"]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0 and is_present(tmp_path, "mini")
