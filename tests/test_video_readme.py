"""The README's "Stylising your videos" commands, run as written (with a local model server)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from PIL import Image

from tests.test_translate_common import cli, make_official, serve_models
from tests.test_video_common import make_clip, moving_frames, read_clip

pytest.importorskip("av")

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## Stylising your videos"
# Keep in sync with the README section (checked below once the section is in README.md).
COMMANDS = [
    "cyclekit translate holiday.mp4 -o stylised/ --model style_monet",
    "cyclekit translate holiday.mp4 'clips/*.mov' -o stylised/ --model style_monet"
    " --crf 20 --skip-existing",
    "cyclekit translate shot_frames/ -o stylised/ --model style_monet --sequence --fps 24"
    " --frames frames/",
]


def test_readme_section_matches_the_tested_commands() -> None:
    text = README.read_text(encoding="utf-8") if README.is_file() else ""
    if HEADING not in text:
        pytest.skip("README.md has no 'Stylising your videos' section yet")
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^cyclekit .+$", section, flags=re.M) == COMMANDS


def test_readme_commands_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = tmp_path / "server"
    served.mkdir()
    make_official(served / "style_monet.pth")
    work = tmp_path / "work"
    make_clip(work / "holiday.mp4", n=8, vfr=True, rotation=90)
    make_clip(work / "clips" / "a.mov", n=4)
    (work / "shot_frames").mkdir()
    for i, frame in enumerate(moving_frames(5, 32, 24)):
        Image.fromarray(frame).save(work / "shot_frames" / f"{i:04d}.png")
    monkeypatch.chdir(work)
    monkeypatch.setenv("CYCLEKIT_CACHE", str(tmp_path / "cache"))
    with serve_models(served) as (url, log):
        monkeypatch.setenv("CYCLEKIT_PRETRAINED_URL", url)
        for command in COMMANDS:
            r = cli(*shlex.split(command)[1:], "--no-progress")
            assert r.exit_code == 0, (command, r.output)
    assert log == ["/style_monet.pth"]
    holiday = read_clip(Path("stylised/holiday.mp4"))
    assert len(holiday["frames"]) == 8 and holiday["rotation"] == 90 and holiday["audio"]
    assert len(read_clip(Path("stylised/a.mov"))["frames"]) == 4
    shot = read_clip(Path("stylised/shot_frames.mp4"))
    assert len(shot["frames"]) == 5 and shot["rate"] == 24
    assert len(list(Path("frames/shot_frames.mp4").glob("*.png"))) == 5
