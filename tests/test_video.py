"""cyclekit translate on videos: what is kept (frames, size, timing, rotation, audio packets),
mixed inputs, --frames, --sequence, --skip-existing, and the naming rule. Clips are tiny
(32x24, 10 frames), made by the tests with PyAV; the generator is a tiny random one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclekit.translate.plan import output_name
from cyclekit.translate.video import VIDEO_EXTENSIONS, video_output_name
from tests.test_translate_common import (
    assert_user_error,
    save_photo,
    translate_with,
    tree_hashes,
    visible_files,
)
from tests.test_video_common import make_clip, moving_frames, read_clip

pytest.importorskip("av")


def _report(path: Path) -> dict[str, dict]:
    return {Path(e["input"]).name: e for e in map(json.loads, path.read_text().splitlines())}


def test_a_phone_clip_keeps_frames_size_timing_rotation_and_audio(
    tmp_path: Path, gen: Path
) -> None:
    # Variable frame rate, rotated 90 degrees, AAC audio: what a phone records.
    clip = make_clip(tmp_path / "phone.mp4", n=10, vfr=True, rotation=90)
    before = read_clip(clip)
    out, report = tmp_path / "out", tmp_path / "r.jsonl"
    r = translate_with(clip, out, gen, "--report", str(report))
    assert r.exit_code == 0, r.output
    after = read_clip(out / "phone.mp4")
    assert len(after["frames"]) == len(before["frames"]) == 10
    assert after["size"] == before["size"] == (32, 24)
    assert after["rotation"] == before["rotation"] == 90
    assert after["codec"] == "h264"
    # Every frame at its own time (uneven steps kept), to the millisecond.
    assert np.allclose(after["pts_seconds"], before["pts_seconds"], atol=1e-3)
    assert len(set(np.round(np.diff(after["pts_seconds"]), 3))) == 3
    # The audio: the same packets, byte for byte.
    assert after["audio_codecs"] == ["aac"]
    assert after["audio"] == before["audio"] and len(after["audio"][0]) >= 5
    # The frames were translated (not copied).
    assert np.abs(after["frames"][0].astype(int) - before["frames"][0]).mean() > 5
    entry = _report(report)["phone.mp4"]
    assert entry["status"] == "done" and entry["frames"] == 10 and entry["kind"] == "video"
    assert entry["fps"] > 20 and entry["seconds"] > 0 and entry["frames_per_second"] > 0
    assert entry["rotation"] == 90 and entry["audio_streams"] == 1
    assert "10 video frames" in r.output
    assert visible_files(out) == ["phone.mp4"]


def test_constant_rate_clip_keeps_its_rate(tmp_path: Path, gen: Path) -> None:
    clip = make_clip(tmp_path / "c.mkv", n=6, audio=None)
    r = translate_with(clip, tmp_path / "out", gen, "--temporal", "none")
    assert r.exit_code == 0, r.output
    after = read_clip(tmp_path / "out" / "c.mkv")  # H.264 fits in .mkv: the name is kept
    assert after["rate"] == 25 and len(after["frames"]) == 6 and after["audio"] == []


def test_videos_images_and_folders_in_one_call(tmp_path: Path, gen: Path) -> None:
    save_photo(tmp_path / "photos" / "a.jpg", 20, 16)
    save_photo(tmp_path / "b.png", 16, 20, seed=1)
    make_clip(tmp_path / "clips" / "x.webm", n=4, audio=None, codec="libvpx-vp9")
    make_clip(tmp_path / "clips" / "y.mp4", n=4)
    out = tmp_path / "out"
    inputs = [tmp_path / "photos", tmp_path / "clips" / "x.webm", tmp_path / "b.png"]
    r = translate_with(inputs[0], out, gen, *map(str, inputs[1:]), str(tmp_path / "clips/*.mp4"))
    assert r.exit_code == 0, r.output
    # .webm cannot hold H.264: the codec's container after the full name.
    assert visible_files(out) == ["a.jpg", "b.png", "x.webm.mp4", "y.mp4"]
    assert len(read_clip(out / "x.webm.mp4")["frames"]) == 4
    assert Image.open(out / "a.jpg").size == (20, 16)


def test_a_folder_of_photos_and_videos_translates_both(tmp_path: Path, gen: Path) -> None:
    save_photo(tmp_path / "trip" / "a.jpg", 20, 16)
    make_clip(tmp_path / "trip" / "day2" / "y.mp4", n=3)
    out = tmp_path / "out"
    r = translate_with(tmp_path / "trip", out, gen)
    assert r.exit_code == 0, r.output
    assert visible_files(out) == ["a.jpg", "day2/y.mp4"]
    assert len(read_clip(out / "day2" / "y.mp4")["frames"]) == 3


def test_naming_rule_for_videos() -> None:
    assert set(VIDEO_EXTENSIONS) == {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
    cases = {
        ("trip/clip.mp4", "h264"): "trip/clip.mp4",
        ("clip.MOV", "h264"): "clip.MOV",
        ("clip.avi", "h264"): "clip.avi.mp4",
        ("clip.webm", "h264"): "clip.webm.mp4",
        ("clip.webm", "vp9"): "clip.webm",
        ("clip.mp4", "vp9"): "clip.mp4.webm",
        ("clip.mp4", "ffv1"): "clip.mp4.mkv",
    }
    for (rel, codec), expected in cases.items():
        assert output_name(Path(rel), "webp", codec) == Path(expected), (rel, codec)
    assert video_output_name(Path("shot1"), "h264", sequence=True) == Path("shot1.mp4")


def test_frames_beside_or_instead_of_the_video(tmp_path: Path, gen: Path) -> None:
    clip = make_clip(tmp_path / "in" / "c.mp4", n=5, audio=None)
    out, frames = tmp_path / "out", tmp_path / "frames"
    r = translate_with(clip, out, gen, "--frames", str(frames))
    assert r.exit_code == 0, r.output
    pngs = sorted((frames / "c.mp4").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(1, 6)]
    assert Image.open(pngs[0]).size == (32, 24)
    assert (out / "c.mp4").is_file()
    # --no-video: only the frames (an earlier run's folder is replaced).
    out2 = tmp_path / "out2"
    r = translate_with(clip, out2, gen, "--frames", str(frames), "--no-video")
    assert r.exit_code == 0, r.output
    assert visible_files(out2) == [] and len(list((frames / "c.mp4").glob("*.png"))) == 5
    assert not [p for p in frames.iterdir() if p.name.startswith(".")]  # no temporaries
    # A folder of the user's at that place is never replaced.
    (tmp_path / "mine" / "c.mp4").mkdir(parents=True)
    (tmp_path / "mine" / "c.mp4" / "keep.txt").write_text("mine")
    r = translate_with(clip, out2, gen, "--frames", str(tmp_path / "mine"), "--no-video")
    assert r.exit_code == 1 and "not written by cyclekit translate --frames" in r.output
    assert (tmp_path / "mine" / "c.mp4" / "keep.txt").read_text() == "mine"


def test_a_folder_of_frames_is_one_clip_with_sequence(tmp_path: Path, gen: Path) -> None:
    shot = tmp_path / "shot1"
    shot.mkdir()
    for i, f in enumerate(moving_frames(6, 32, 24)):
        Image.fromarray(f).save(shot / f"f{i + 1}.png")  # f10 would sort after f9: natural
    out, frames = tmp_path / "out", tmp_path / "frames"
    r = translate_with(shot, out, gen, "--sequence", "--fps", "12", "--frames", str(frames))
    assert r.exit_code == 0, r.output
    clip = read_clip(out / "shot1.mp4")
    assert len(clip["frames"]) == 6 and clip["rate"] == 12 and clip["size"] == (32, 24)
    assert sorted(p.name for p in (frames / "shot1.mp4").glob("*.png")) == [
        f"f{i}.png" for i in range(1, 7)
    ]
    # An image file is not a sequence.
    r = translate_with(shot / "f1.png", tmp_path / "o3", gen, "--sequence")
    assert_user_error(r, "--sequence takes folders of frames")


def test_skip_existing_and_never_replacing_a_users_file(tmp_path: Path, gen: Path) -> None:
    clip = make_clip(tmp_path / "in" / "c.mp4", n=4)
    out, report = tmp_path / "out", tmp_path / "r.jsonl"
    assert translate_with(clip, out, gen).exit_code == 0
    first = tree_hashes(out)
    r = translate_with(clip, out, gen, "--skip-existing", "--report", str(report))
    assert r.exit_code == 0 and _report(report)["c.mp4"]["status"] == "skipped"
    assert tree_hashes(out) == first
    # Our own output is replaced by a run without --skip-existing.
    r = translate_with(clip, out, gen, "--temporal", "none")
    assert r.exit_code == 0, r.output
    # A user's video under that name is not.
    other = tmp_path / "other"
    other.mkdir()
    (other / "c.mp4").write_bytes(b"my own film")
    r = translate_with(clip, other, gen)
    assert r.exit_code == 1 and "not written by cyclekit translate" in r.output
    assert (other / "c.mp4").read_bytes() == b"my own film"


@pytest.mark.parametrize("nc", [(1, 1), (1, 3), (3, 1)])
def test_grey_generators(tmp_path: Path, nc: tuple[int, int]) -> None:
    from tests.test_translate_common import make_generator

    gen = make_generator(tmp_path / "g.pt", nc=nc)
    clip = make_clip(tmp_path / "c.mp4", n=3, audio=None)
    r = translate_with(clip, tmp_path / "out", gen)
    assert r.exit_code == 0, r.output
    frames = read_clip(tmp_path / "out" / "c.mp4")["frames"]
    assert len(frames) == 3 and frames[0].shape == (24, 32, 3)
    if nc[1] == 1:  # a grey result: the three channels agree (up to chroma rounding)
        assert np.abs(frames[1].astype(int) - frames[1][:, :, :1]).max() <= 3


def test_cli_lists_match_the_engine_and_the_extra_is_declared() -> None:
    import re

    import cyclekit.cli.translate as cli_translate
    from cyclekit.choices import TEMPORAL_MODES
    from cyclekit.translate.video import CODECS, NEEDS_AV, VideoOptions

    assert cli_translate.VIDEO_CODECS == list(CODECS)
    assert tuple(cli_translate.TEMPORAL) == TEMPORAL_MODES
    assert cli_translate.DEFAULT_TEMPORAL == VideoOptions().temporal
    # (Read as text: tomllib is Python 3.11+, cyclekit supports 3.10.)
    toml = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert re.search(r'^video = \["av>=\d+', toml, flags=re.M) and "cyclekit[video]" in NEEDS_AV
    assert re.search(r'^dev = \[[^\]]*"av>=\d+', toml, flags=re.M)


def test_the_model_sees_a_rotated_clip_upright(tmp_path: Path, gen: Path) -> None:
    # The same upright picture stored two ways: turned, with rotation metadata (a phone), and
    # as it is. The model must see the same thing, so the results are the same.
    upright = moving_frames(3, 32, 24)
    turned = [np.ascontiguousarray(np.rot90(f, -1)) for f in upright]  # shown turned back by 90
    a = make_clip(tmp_path / "a.mkv", frames=turned, codec="ffv1", audio=None, rotation=90)
    b = make_clip(tmp_path / "b.mkv", frames=upright, codec="ffv1", audio=None)
    frames = tmp_path / "frames"
    for clip in (a, b):
        flags = ("--frames", str(frames), "--temporal", "none", "--precision", "fp32")
        r = translate_with(clip, tmp_path / "out", gen, *flags)
        assert r.exit_code == 0, r.output
    for name in ("000001.png", "000003.png"):
        ra, rb = (np.asarray(Image.open(frames / c / name)) for c in ("a.mkv", "b.mkv"))
        assert ra.shape == (24, 32, 3) and np.array_equal(ra, rb)
    # The video keeps the stored size and the rotation.
    out = read_clip(tmp_path / "out" / "a.mkv")
    assert out["size"] == (24, 32) and out["rotation"] == 90


def test_an_odd_frame_size_is_kept(tmp_path: Path, gen: Path) -> None:
    clip = make_clip(tmp_path / "odd.mkv", frames=moving_frames(3, 33, 25), codec="ffv1")
    r = translate_with(clip, tmp_path / "out", gen)
    assert r.exit_code == 0, r.output
    out = read_clip(tmp_path / "out" / "odd.mkv")
    assert out["size"] == (33, 25) and len(out["frames"]) == 3
