"""Where translate writes: the naming rule, --skip-existing pairing, and never replacing a file
that is not its own output (report, gallery page, images already in the output folder)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cyclekit.translate.plan as plan
from cyclekit.translate.plan import output_name, plan_jobs
from tests.test_translate_common import (
    assert_user_error,
    cli,
    make_generator,
    save_photo,
    translate_with,
    tree_hashes,
    visible_files,
)


def test_naming_rule() -> None:
    cases = {
        ("trip/IMG_1.jpg", None): "trip/IMG_1.jpg",
        ("x.JPEG", "jpg"): "x.JPEG",  # already a JPEG: keeps its name
        ("x.png", "webp"): "x.png.webp",
        ("x.jpg", "webp"): "x.jpg.webp",
        ("scan.tif", "png"): "scan.tif.png",
        ("x.webp", "webp"): "x.webp",
    }
    for (rel, fmt), expected in cases.items():
        assert output_name(Path(rel), fmt) == Path(expected), (rel, fmt)


def test_names_do_not_depend_on_other_files_or_listing_order(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    names = ["x.png", "b/y.jpg", "z.webp"]
    for rel in names:
        save_photo(inp / rel, 8, 8)

    def plan() -> dict[str, str]:
        jobs, problems = plan_jobs([str(inp)], tmp_path / "out", "webp")
        assert not problems
        return {str(j.src.relative_to(inp)): str(j.dst.relative_to(tmp_path / "out")) for j in jobs}

    first = plan()
    # Neighbours with the same stems appear (and sort before or after the others).
    for rel in ["x.jpg", "a.png", "b/y.png", "b/y.webp.png", "x.png.png"]:
        save_photo(inp / rel, 8, 8)
    second = plan()
    assert {k: second[k] for k in first} == first
    assert len(set(second.values())) == len(second)


def test_skip_existing_pairs_each_input_with_its_own_output(tmp_path: Path, gen: Path) -> None:
    # The robustness report's case: x.png translated to WebP, then x.jpg added.
    inp, out = tmp_path / "in", tmp_path / "out"
    save_photo(inp / "x.png", 16, 12)
    r = translate_with(inp, out, gen, "--format", "webp")
    assert r.exit_code == 0, r.output
    before = tree_hashes(out)
    save_photo(inp / "x.jpg", 12, 16, seed=3)
    report = tmp_path / "r.jsonl"
    r = translate_with(
        inp, out, gen, "--format", "webp", "--skip-existing", "--report", str(report)
    )
    assert r.exit_code == 0, r.output
    entries = {Path(e["input"]).name: e for e in map(json.loads, report.read_text().splitlines())}
    assert entries["x.png"]["status"] == "skipped"
    assert entries["x.png"]["output"] == str(out / "x.png.webp")
    assert entries["x.jpg"]["status"] == "done"
    assert entries["x.jpg"]["output"] == str(out / "x.jpg.webp")
    assert {k: tree_hashes(out)[k] for k in before if not k.startswith(".")} == {
        k: v for k, v in before.items() if not k.startswith(".")
    }
    assert Image.open(out / "x.jpg.webp").size == (12, 16)


def test_two_inputs_with_one_output_name_the_first_keeps_it(tmp_path: Path, gen: Path) -> None:
    for folder in ("d1", "d2"):
        save_photo(tmp_path / folder / "same.png", 8, 8, seed=len(folder))
    save_photo(tmp_path / "d2" / "other.png", 8, 8)
    out = tmp_path / "out"
    args = [str(tmp_path / "d1"), str(tmp_path / "d2"), "-o", str(out), "--checkpoint", str(gen)]
    r = cli("translate", *args, "--no-progress")
    assert r.exit_code == 1
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {tmp_path / 'd2' / 'same.png'}: its output {out / 'same.png'} is also the "
        "output of an input earlier in this run (the first keeps it); translate them in "
        "separate runs (or rename one)"
    ]
    assert visible_files(out) == ["other.png", "same.png"]  # nothing renamed, nothing lost
    first = (out / "same.png").read_bytes()
    # A rerun pairs the same input with the same output, whatever --skip-existing finds.
    r = cli("translate", *args, "--no-progress", "--skip-existing")
    assert r.exit_code == 1 and "skipped 2, failed 1" in r.output, r.output
    r = cli("translate", *args, "--no-progress")
    assert (out / "same.png").read_bytes() == first


def test_names_do_not_depend_on_the_neighbours(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    for name in ("a.jpg", "b.png", "sub/c.webp", "sub/deeper/d.tif"):
        (inp / name).parent.mkdir(parents=True, exist_ok=True)
        (inp / name).touch()

    def names(fmt: str | None) -> dict[str, str]:
        jobs, _ = plan_jobs([str(inp)], tmp_path / "out", fmt)
        return {j.src.relative_to(inp).as_posix(): j.dst.name for j in jobs}

    for fmt in (None, "webp", "jpg"):
        before = names(fmt)
        # Neighbours that would compete for a name under a "first free name" rule.
        for name in ("a.png", "a.jpg.webp", "b.jpg", "sub/c.png", "sub/c.webp.jpg", "0.jpg"):
            (inp / name).touch()
        after = names(fmt)
        assert {k: after[k] for k in before} == before, fmt
        for name in ("a.jpg", "sub/deeper/d.tif"):
            (inp / name).unlink()
        fewer = names(fmt)
        assert {k: v for k, v in before.items() if k in fewer} == {
            k: fewer[k] for k in before if k in fewer
        }
        for name in ("a.png", "a.jpg.webp", "b.jpg", "sub/c.png", "sub/c.webp.jpg", "0.jpg"):
            (inp / name).unlink()
        for name in ("a.jpg", "sub/deeper/d.tif"):
            (inp / name).touch()


def test_translation_starts_before_the_listing_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp = tmp_path / "in"
    for d in range(40):
        for i in range(5):
            (inp / f"{d:03d}" / f"{i}.jpg").parent.mkdir(parents=True, exist_ok=True)
            (inp / f"{d:03d}" / f"{i}.jpg").touch()
    scanned = []
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: scanned.append(p) or real(p))
    plan.check_output_dir([str(inp)], tmp_path / "out")
    stream = plan.iter_plan([str(inp)], tmp_path / "out")
    first = next(stream)
    assert first.src == inp / "000" / "0.jpg"
    assert len(scanned) <= 2  # the root and the first subfolder, not all 41 folders
    rest = list(stream)
    assert len(rest) == 199 and len(scanned) == 41


def test_planning_is_linear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One name per input, whatever the neighbours (no list of candidate names tried).
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(2000):
        (inp / f"img{i % 50}.{'png' if i < 1000 else 'jpg'}").touch()
        (inp / f"p{i}.png").touch()
    calls = []
    real = plan.output_name
    monkeypatch.setattr(plan, "output_name", lambda *a: calls.append(a) or real(*a))
    started = time.perf_counter()
    jobs, problems = plan_jobs([str(inp)], tmp_path / "out", "webp")
    seconds = time.perf_counter() - started
    assert len(jobs) == len(calls) == 2100 and not problems
    print(f"planned {len(jobs)} inputs in {seconds:.2f} s")


def test_existing_files_in_the_output_folder_are_never_replaced(tmp_path: Path, gen: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    save_photo(inp / "a.png", 16, 16)
    save_photo(inp / "b.png", 16, 16, seed=1)
    save_photo(out / "a.png", 10, 10, seed=9)  # the user's own picture, same name as an output
    theirs = (out / "a.png").read_bytes()
    r = translate_with(inp, out, gen)
    assert r.exit_code == 1
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {inp / 'a.png'}: {out / 'a.png'} already exists and was not written by "
        "cyclekit translate, so it is not replaced; move it away or choose another output folder"
    ]
    assert (out / "a.png").read_bytes() == theirs
    # Its own outputs are replaced by a rerun (e.g. with another model).
    first = (out / "b.png").read_bytes()
    r = translate_with(inp / "b.png", out, make_generator(tmp_path / "other.pt", seed=5))
    assert r.exit_code == 0, r.output
    assert (out / "b.png").read_bytes() != first
    # And --skip-existing does not count the user's file as a finished output either.
    r = translate_with(inp, out, gen, "--skip-existing")
    assert r.exit_code == 1 and "skipped 1, failed 1" in r.output
    assert (out / "a.png").read_bytes() == theirs


@pytest.mark.parametrize("name", ["IMG_1.jpg", "notes.txt"])
def test_report_never_replaces_a_file_that_is_not_a_report(
    tmp_path: Path, gen: Path, name: str
) -> None:
    # `--report rp/IMG_1.jpg rp/IMG_2.jpg`: the report's name was forgotten.
    rp = tmp_path / "rp"
    save_photo(rp / "IMG_1.jpg", 16, 16)
    save_photo(rp / "IMG_2.jpg", 16, 16, seed=1)
    (rp / "notes.txt").write_text("my notes\n")
    before = tree_hashes(rp)
    r = cli(
        "translate",
        "-o",
        str(tmp_path / "out"),
        "--checkpoint",
        str(gen),
        "--report",
        str(rp / name),
        str(rp / "IMG_2.jpg"),
    )
    line = assert_user_error(r, f"--report {rp / name}")
    assert "not replaced" in line or "expected a name ending in .jsonl" in line
    assert tree_hashes(rp) == before and not (tmp_path / "out").exists()


def test_report_may_replace_an_earlier_report_but_not_an_input(tmp_path: Path, gen: Path) -> None:
    save_photo(tmp_path / "in" / "a.png", 16, 16)
    report = tmp_path / "r.jsonl"
    for _ in range(2):
        r = translate_with(tmp_path / "in", tmp_path / "out", gen, "--report", str(report))
        assert r.exit_code == 0, r.output
        assert len(report.read_text().splitlines()) == 1
    # The checkpoint is an input too.
    ckpt = make_generator(tmp_path / "G.jsonl")
    r = translate_with(tmp_path / "in", tmp_path / "o2", ckpt, "--report", str(ckpt))
    assert_user_error(r, f"--report {ckpt}: is also an input")


def test_gallery_never_replaces_a_page_it_did_not_write(tmp_path: Path, gen: Path) -> None:
    save_photo(tmp_path / "in" / "a.png", 16, 16)
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("<html>my site</html>")
    r = translate_with(tmp_path / "in", out, gen, "--gallery")
    assert_user_error(r, f"--gallery {out / 'index.html'}: already exists")
    assert (out / "index.html").read_text() == "<html>my site</html>"
    assert visible_files(out) == ["index.html"]  # refused before anything was written
    (out / "index.html").unlink()
    for _ in range(2):  # its own page is replaced
        r = translate_with(tmp_path / "in", out, gen, "--gallery")
        assert r.exit_code == 0, r.output


def test_output_folder_named_like_a_file_is_refused(tmp_path: Path, gen: Path) -> None:
    save_photo(tmp_path / "in" / "a.png", 16, 16)
    r = translate_with(tmp_path / "in", tmp_path / "result.png", gen)
    assert_user_error(r, f"-o {tmp_path / 'result.png'}: translate writes a folder")
    assert not (tmp_path / "result.png").exists()
    (tmp_path / "made.png").mkdir()  # a folder the user really named so is fine
    assert translate_with(tmp_path / "in", tmp_path / "made.png", gen).exit_code == 0


def test_report_seconds_are_work_not_queue_wait(
    tmp_path: Path, gen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cyclekit.translate.image_io as image_io

    for i in range(5):
        save_photo(tmp_path / "in" / f"{i}.png", 16, 16, seed=i)
    real = image_io.write_image

    def slow_write(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(image_io, "write_image", slow_write)
    report = tmp_path / "r.jsonl"
    started = time.perf_counter()
    r = translate_with(
        tmp_path / "in", tmp_path / "out", gen, "--num-workers", "1", "--report", str(report)
    )
    total = time.perf_counter() - started
    assert r.exit_code == 0, r.output
    seconds = [json.loads(line)["seconds"] for line in report.read_text().splitlines()]
    # One writer thread: the last image waits ~1.2 s in the queue; that is not its time.
    assert total > 1.5 and len(seconds) == 5
    assert all(0.3 <= s < 0.9 for s in seconds), seconds


def test_case_of_format_and_direction_does_not_matter(tmp_path: Path) -> None:
    from tests.test_translate_common import make_train_checkpoint

    ckpt = make_train_checkpoint(tmp_path / "last.pt")
    save_photo(tmp_path / "in" / "a.png", 16, 16)
    r = translate_with(
        tmp_path / "in", tmp_path / "out", ckpt, "--format", "JPG", "--direction", "A2B"
    )
    assert r.exit_code == 0, r.output
    out = Image.open(tmp_path / "out" / "a.png.jpg")
    assert out.format == "JPEG" and np.asarray(out).shape == (16, 16, 3)


def test_a_result_too_large_for_the_format_fails_before_the_model_runs(
    tmp_path: Path, gen: Path
) -> None:
    Image.new("RGB", (17000, 4), (90, 120, 200)).save(tmp_path / "strip.png")
    save_photo(tmp_path / "ok.png", 16, 16)
    r = cli(
        "translate", str(tmp_path / "strip.png"), str(tmp_path / "ok.png"), "-o",
        str(tmp_path / "out"), "--checkpoint", str(gen), "--format", "webp", "--no-progress",
    )  # fmt: skip
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {tmp_path / 'strip.png'}: a 17000x4 px result is too large for WEBP (at most "
        "16383 px a side); use --format png"
    ]
    assert visible_files(tmp_path / "out") == ["ok.png.webp"]


def test_a_rerun_with_nothing_to_do_decodes_nothing(
    tmp_path: Path, gen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cyclekit.translate.engine as engine

    inp, out = tmp_path / "in", tmp_path / "out"
    for i in range(5):
        save_photo(inp / f"{i}.png", 8, 8, seed=i)
    assert translate_with(inp, out, gen).exit_code == 0

    def no_decoding(*args: object) -> None:
        raise AssertionError("an input was decoded on a rerun with nothing to do")

    monkeypatch.setattr(engine, "prepare", no_decoding)
    r = translate_with(inp, out, gen, "--skip-existing")
    assert r.exit_code == 0, r.output
    assert "done 0, skipped 5, failed 0" in r.output
    assert "skipped: outputs exist (checked in " in r.output
