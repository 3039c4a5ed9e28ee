"""The README's "Stylising your photos" commands, run as written (with a local model server)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_translate_common import (
    cli,
    make_official,
    make_train_checkpoint,
    photo,
    save_photo,
    serve_models,
)

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## Stylising your photos"
# Keep in sync with the README section (checked below once the section is in README.md).
COMMANDS = [
    "cyclekit translate photos/ -o stylised/ --model style_monet",
    "cyclekit translate photos/ -o zebras/ --checkpoint checkpoints/h2z/last.pt --direction a2b",
    "cyclekit translate photos/ -o stylised/ --model style_monet --skip-existing",
    "cyclekit translate photos/ -o stylised/ --model style_monet --gallery --report report.jsonl",
    "cyclekit translate big_scan.tif -o stylised/ --model style_monet --tile 1024",
    "cyclekit translate photos/ -o previews/ --model style_monet --max-size 512 --format webp",
    "cyclekit export --checkpoint checkpoints/h2z/last.pt --direction a2b --format torchscript"
    " -o h2z.ts",
]


def test_readme_section_matches_the_tested_commands() -> None:
    text = README.read_text(encoding="utf-8") if README.is_file() else ""
    if HEADING not in text:
        pytest.skip("README.md has no 'Stylising your photos' section yet")
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^cyclekit .+$", section, flags=re.M) == COMMANDS


# With OpenVINO too, as a user with cyclekit[fast] runs them (conftest switches it off for the
# other tests): a --model run once failed only there.
@pytest.mark.parametrize("backend", ["torch", pytest.param("openvino", marks=pytest.mark.openvino)])
def test_readme_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    served = tmp_path / "server"
    served.mkdir()
    make_official(served / "style_monet.pth")
    work = tmp_path / "work"
    (work / "checkpoints" / "h2z").mkdir(parents=True)
    make_train_checkpoint(work / "checkpoints" / "h2z" / "last.pt")
    save_photo(work / "photos" / "IMG_0001.jpg", 64, 48)
    save_photo(work / "photos" / "trip" / "IMG_0001.jpg", 48, 64, seed=1)
    Image.fromarray(photo(1100, 300)).save(work / "big_scan.tif")
    monkeypatch.chdir(work)
    monkeypatch.setenv("CYCLEKIT_CACHE", str(tmp_path / "cache"))
    with serve_models(served) as (url, log):
        monkeypatch.setenv("CYCLEKIT_PRETRAINED_URL", url)
        for command in COMMANDS:
            args = shlex.split(command)[1:]
            r = cli(*args, *(["--no-progress"] if args[0] == "translate" else []))
            assert r.exit_code == 0, (command, r.output)
    assert log == ["/style_monet.pth"]  # downloaded once, reused by every later command
    assert Image.open("stylised/trip/IMG_0001.jpg").size == (48, 64)
    assert Image.open("stylised/big_scan.tif").size == (1100, 300)
    assert Image.open("previews/IMG_0001.jpg.webp").size == (64, 48)  # .webp after its name
    assert Path("stylised/index.html").is_file() and Path("h2z.ts").is_file()
    assert len(Path("report.jsonl").read_text().splitlines()) == 2
    assert np.asarray(Image.open("zebras/IMG_0001.jpg")).shape == (48, 64, 3)
