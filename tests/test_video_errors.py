"""Bad videos and bad video flags: one line each, naming the file or flag, never a traceback,
never a half-written output (not even a hidden temporary), the good clips still translated."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import cyclekit.translate.video as video
from tests.test_translate_common import assert_user_error, translate_with, tree_hashes
from tests.test_video_common import make_clip, read_clip

av = pytest.importorskip("av")


def _audio_only(path: Path, video_stream: bool = False) -> Path:
    """An AAC track in .mp4 (or, with ``video_stream``, beside a video stream without frames)."""
    with av.open(str(path), "w") as out:
        if video_stream:
            v = out.add_stream("libx264", rate=25)
            v.width, v.height, v.pix_fmt = 32, 24, "yuv420p"
        a = out.add_stream("aac", rate=8000)
        a.layout = "mono"
        for k in range(3):
            silence = np.zeros((1, 1024), np.float32)
            f = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
            f.sample_rate, f.pts = 8000, k * 1024
            for p in a.encode(f):
                out.mux(p)
        for p in a.encode():
            out.mux(p)
    return path


def _faststart(src: Path, dst: Path) -> Path:
    """``src`` remuxed with its index first (as streaming sites serve MP4)."""
    with av.open(str(src)) as i, av.open(str(dst), "w", options={"movflags": "+faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for p in i.demux():
            if p.size:
                p.stream = streams[p.stream.index]
                o.mux(p)
    return dst


def _cut(path: Path, fraction: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def test_bad_videos_are_one_line_each_and_leave_nothing(tmp_path: Path, gen: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    bad = {
        # mp4 with its index at the end: the index is lost
        "cut.mp4": (_cut(make_clip(inp / "cut.mp4", n=30)), "cannot open it as a video"),
        # index first: the frames after the cut are missing, FFmpeg says nothing
        "cut_fast.mp4": (
            _cut(_faststart(make_clip(tmp_path / "x.mp4", n=30), inp / "cut_fast.mp4")),
            "of its 30 frames could be decoded",
        ),
        "cut.mkv": (_cut(make_clip(inp / "cut.mkv", n=30)), "truncated or damaged: its video"),
        "song.mp4": (_audio_only(inp / "song.mp4"), "has no video stream (only audio)"),
        "zero.mkv": (_audio_only(inp / "zero.mkv", video_stream=True), "holds no video frames"),
        "junk.mov": (inp / "junk.mov", "cannot open it as a video"),
        "odd.mkv": (inp / "odd.mkv", "cannot be decoded by this FFmpeg build"),
    }
    (inp / "junk.mov").write_bytes(b"\0" * 2000)
    # A codec FFmpeg does not know: the Matroska codec id of an FFV1 clip renamed.
    lossless = make_clip(tmp_path / "f.mkv", n=3, codec="ffv1", audio=None).read_bytes()
    assert lossless.count(b"V_FFV1") == 1
    (inp / "odd.mkv").write_bytes(lossless.replace(b"V_FFV1", b"V_QQQQ"))
    good = make_clip(inp / "good.mp4", n=4)
    before = tree_hashes(inp)
    out = tmp_path / "out"
    args = [str(p) for p, _ in bad.values()] + [str(good)]
    r = translate_with(args[0], out, gen, *args[1:])
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad), r.output
    for name, (path, needle) in bad.items():
        line = [e for e in errors if e.startswith(f"error: {path}:")]
        assert len(line) == 1 and needle in line[0], (name, errors)
    assert "failed 7" in r.output
    # Only the good clip's output; no temporary left, nothing changed in the inputs.
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".cyclekit-t")) == [
        "good.mp4"
    ]
    assert len(read_clip(out / "good.mp4")["frames"]) == 4
    assert tree_hashes(inp) == before


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--crf", "99"], "--crf 99: h264 takes 0..51"),
        (["--codec", "ffv1", "--crf", "10"], "--crf: --codec ffv1 is lossless"),
        (["--no-video"], "--no-video writes only the frames: give --frames DIR"),
        (["--fps", "0", "--sequence"], "--fps 0.0"),
    ],
)
def test_bad_video_flags_are_one_line(
    tmp_path: Path, gen: Path, flags: list[str], needle: str
) -> None:
    clip = make_clip(tmp_path / "c.mp4", n=2, audio=None)
    r = translate_with(clip, tmp_path / "out", gen, *flags)
    assert_user_error(r, needle)
    assert not (tmp_path / "out").exists()


def test_frames_folder_inside_the_inputs_is_refused(tmp_path: Path, gen: Path) -> None:
    clip = make_clip(tmp_path / "in" / "c.mp4", n=2, audio=None)
    r = translate_with(
        tmp_path / "in", tmp_path / "out", gen, str(clip), "--frames", str(clip.parent)
    )
    assert_user_error(r, f"--frames {clip.parent}: the output folder holds the input")


def test_without_pyav_a_video_is_one_line_naming_the_install(
    tmp_path: Path, gen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = make_clip(tmp_path / "c.mp4", n=2, audio=None)
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    r = translate_with(clip, tmp_path / "out", gen)
    line = assert_user_error(r, str(clip), "pip install 'cyclekit[video]'")
    assert line == f"Error: {clip}: translating videos needs PyAV: pip install 'cyclekit[video]'"
    assert not (tmp_path / "out").exists()


def test_a_codec_this_build_lacks_is_one_line(
    tmp_path: Path, gen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = make_clip(tmp_path / "c.mp4", n=2, audio=None)
    lacking = video.Codec(("no-such-encoder",), "mp4", frozenset({"mp4"}), (30, 0, 63))
    monkeypatch.setitem(video.CODECS, "av1", lacking)
    r = translate_with(clip, tmp_path / "out", gen, "--codec", "av1")
    assert_user_error(r, "--codec av1: this FFmpeg build has no encoder for it")
    assert not (tmp_path / "out").exists()


def test_an_old_pyav_is_one_line_naming_the_upgrade(
    tmp_path: Path, gen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PyAV before 18 cannot write a rotation: a phone clip would come out sideways.
    clip = make_clip(tmp_path / "c.mp4", n=2, audio=None)
    monkeypatch.setattr(av, "__version__", "17.1.0")
    r = translate_with(clip, tmp_path / "out", gen)
    assert_user_error(r, str(clip), "PyAV 17.1.0 is too old", "pip install -U 'cyclekit[video]'")
    assert not (tmp_path / "out").exists()
