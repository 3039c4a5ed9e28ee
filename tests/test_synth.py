"""Synthetic datasets: layout, determinism, ground truth, scoring, atomic writes, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cyclekit.cli import main
from cyclekit.data import synth
from cyclekit.data.images import decode_image, list_images
from cyclekit.data.official import DatasetError, DatasetExistsError
from cyclekit.data.synth import SYNTH_TASKS, folder_psnr, make_synthetic, psnr

TASKS = list(SYNTH_TASKS)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_there_are_several_tasks_each_described():
    assert len(SYNTH_TASKS) >= 2 and {"day2night", "photo2poster"} <= set(SYNTH_TASKS)
    for task in SYNTH_TASKS.values():
        assert callable(task.generate) and task.description and "\n" not in task.description


@pytest.mark.parametrize("name", TASKS)
def test_layout_and_ground_truth(tmp_path, name):
    out = make_synthetic(name, tmp_path / "data", n_train=5, n_test=3, size=32, seed=0)
    assert out == tmp_path / "data" / name
    subs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert subs == ["testA", "testA_gt", "testB", "testB_gt", "trainA", "trainB"]
    for sub, n in [("trainA", 5), ("trainB", 5), ("testA", 3), ("testB", 3)]:
        assert len(list_images(out / sub)) == n
    for test in ("testA", "testB"):
        names = [p.name for p in list_images(out / test)]
        assert names == [p.name for p in list_images(out / f"{test}_gt")]
        for p in list_images(out / test) + list_images(out / f"{test}_gt"):
            assert decode_image(p).pixels.shape == (32, 32, 3)
    meta = json.loads((out / "synth.json").read_text())
    assert meta["task"] == name and meta["size"] == 32 and meta["seed"] == 0
    # Nothing else left beside it (no temp folders).
    assert [p.name for p in (tmp_path / "data").iterdir()] == [name]


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = make_synthetic("day2night", tmp_path / "a", n_train=4, n_test=2, size=32, seed=7)
    b = make_synthetic("day2night", tmp_path / "b", n_train=4, n_test=2, size=32, seed=7)
    c = make_synthetic("day2night", tmp_path / "c", n_train=4, n_test=2, size=32, seed=8)
    assert _files(a) == _files(b)
    fa, fc = _files(a), _files(c)
    assert fa["trainA/00000.png"] != fc["trainA/00000.png"]


def test_test_images_do_not_depend_on_the_train_size(tmp_path):
    a = make_synthetic("photo2poster", tmp_path / "a", n_train=2, n_test=2, size=32, seed=1)
    b = make_synthetic("photo2poster", tmp_path / "b", n_train=6, n_test=3, size=32, seed=1)
    for sub in ("testA/00001.png", "testA_gt/00001.png", "testB_gt/00000.png"):
        assert (a / sub).read_bytes() == (b / sub).read_bytes()


@pytest.mark.parametrize("name", TASKS)
def test_domains_are_unpaired_and_ground_truth_is_the_same_scene(name):
    # The A and B renderings of one scene share the geometry (same edges, roughly) but differ
    # in colour; trainA and trainB come from different scenes.
    rng = lambda split, i: np.random.default_rng([0, split, i])
    a, b = SYNTH_TASKS[name].generate(rng(0, 0), 64)
    a2, b2 = SYNTH_TASKS[name].generate(rng(0, 0), 64)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    _, b_other = SYNTH_TASKS[name].generate(rng(1, 0), 64)
    assert not np.array_equal(b, b_other)


def _colour_lut_psnr(name: str, size: int = 64) -> tuple[float, float]:
    """Do-nothing PSNR, and the PSNR of a per-pixel colour lookup table fitted on other scenes:
    a crude stand-in for a learned translation (geometry kept, colours remapped)."""
    pairs = lambda split, n: [
        SYNTH_TASKS[name].generate(np.random.default_rng([0, split, i]), size) for i in range(n)
    ]
    key = lambda a: (a.astype(np.int64) // 16) @ np.array([256, 16, 1])
    sums, counts = np.zeros((4096, 3)), np.zeros(4096)
    for a, b in pairs(0, 30):
        np.add.at(sums, key(a).ravel(), b.reshape(-1, 3))
        np.add.at(counts, key(a).ravel(), 1)
    lut = sums / np.maximum(counts, 1)[:, None]
    nothing, mapped = [], []
    for a, b in pairs(2, 12):
        k = key(a)
        pred = np.where(counts[k][..., None] > 0, lut[k], a).round().astype(np.uint8)
        nothing.append(psnr(a, b))
        mapped.append(psnr(pred, b))
    return float(np.mean(nothing)), float(np.mean(mapped))


@pytest.mark.parametrize("name", TASKS)
def test_doing_nothing_scores_clearly_worse_than_a_colour_mapping(name):
    nothing, mapped = _colour_lut_psnr(name)
    if SYNTH_TASKS[name].mild:  # a grade: close to the input, but not the input
        assert 20.0 < nothing < 30.0, nothing
    else:
        assert nothing < 16.0, "the task must not be (close to) the identity"
    assert mapped > nothing + 6.0, "a mostly colour/tone mapping must beat doing nothing"


def test_there_is_a_mild_task_and_its_grade_keeps_the_picture():
    from cyclekit.data.synth import film_look

    assert [n for n, t in SYNTH_TASKS.items() if t.mild] == ["day2film"]
    ramp = np.repeat(np.linspace(0, 255, 256)[None, :, None], 3, axis=2).astype(np.uint8)
    graded = film_look(ramp).astype(int)
    assert graded[0, 0].min() >= 14  # blacks lifted
    assert (np.diff(graded[0, :, 1]) >= 0).all()  # the tone curve keeps the order of tones
    assert graded[0, 128, 0] > graded[0, 128, 2]  # warm


def test_folder_psnr_do_nothing_vs_ground_truth(tmp_path):
    out = make_synthetic("day2night", tmp_path, n_train=1, n_test=4, size=32, seed=0)
    assert folder_psnr(out / "testA_gt", out / "testA_gt") == float("inf")
    nothing_a = folder_psnr(out / "testA", out / "testA_gt")
    nothing_b = folder_psnr(out / "testB", out / "testB_gt")
    assert 0.0 < nothing_a < 16.0 and 0.0 < nothing_b < 16.0
    with pytest.raises(DatasetError, match="no image for ground truth"):
        folder_psnr(out / "trainA", out / "testA_gt")  # trainA has 1 image, gt 4


def test_psnr_basics():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    assert psnr(a, a) == float("inf")
    assert psnr(a, b) == pytest.approx(10 * np.log10(48))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, a[:2])


def test_refuses_to_overwrite_unless_forced(tmp_path):
    out = make_synthetic("photo2poster", tmp_path, n_train=1, n_test=1, size=16, seed=0)
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DatasetExistsError, match="--force"):
        make_synthetic("photo2poster", tmp_path, n_train=1, n_test=1, size=16, seed=0)
    assert (out / "keep.txt").exists()
    make_synthetic("photo2poster", tmp_path, n_train=2, n_test=1, size=16, seed=0, force=True)
    assert not (out / "keep.txt").exists() and len(list_images(out / "trainA")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo2poster"]


def test_a_failure_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = SYNTH_TASKS["day2night"]

    def flaky(rng, size):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("boom")
        return real.generate(rng, size)

    monkeypatch.setitem(SYNTH_TASKS, "day2night", synth.SynthTask(flaky, real.description))
    with pytest.raises(RuntimeError, match="boom"):
        make_synthetic("day2night", tmp_path, n_train=3, n_test=2, size=16, seed=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(name="nope"), "unknown synthetic task"),
        (dict(size=8), "--size must be 16 to 1024"),
        (dict(size=100_000), "--size must be 16 to 1024 pixels, got 100000"),
        (dict(n_train=0), "at least one"),
        (dict(n_train=10**9), "--n and --n-test are limited to 100,000"),
        (dict(n_test=10**6), "--n and --n-test are limited"),
        (dict(seed=-1), "--seed must be a non-negative integer"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, kw, match):
    args = dict(name="day2night", root=tmp_path / "r", n_train=1, n_test=1, size=16, seed=0) | kw
    with pytest.raises(DatasetError, match=match):
        make_synthetic(**args)
    assert not (tmp_path / "r").exists()


def test_not_enough_disk_space_is_refused_up_front(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(synth.shutil, "disk_usage", lambda p: usage._replace(free=10_000))
    with pytest.raises(DatasetError, match=r"may need up to .* MiB, but only 0 MiB are free"):
        make_synthetic("day2night", tmp_path, n_train=100, n_test=10, size=64)
    assert list(tmp_path.iterdir()) == []


def test_a_write_failure_is_one_error_naming_the_root_and_leaves_nothing(tmp_path, monkeypatch):
    def full(arr, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(synth, "_save_png", full)
    with pytest.raises(DatasetError, match=r"--root .*: cannot write day2night \(No space left"):
        make_synthetic("day2night", tmp_path, n_train=2, n_test=1, size=16)
    assert list(tmp_path.iterdir()) == []


def test_a_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(DatasetError, match="--root .*f: cannot create the folder"):
        make_synthetic("day2night", tmp_path / "f", n_train=1, n_test=1, size=16)
    assert (tmp_path / "f").read_text() == "mine"


def test_cli_synth_end_to_end(tmp_path):
    run = lambda args: CliRunner().invoke(main, args, catch_exceptions=False)
    args = ["datasets", "synth", "summer2winter", "--n", "3", "--n-test", "2", "--size", "24"]
    args += ["--seed", "3", "--root", str(tmp_path)]
    r = run(args)
    assert r.exit_code == 0, r.output
    assert "summer2winter: 14 images of 24x24" in r.output
    assert len(list_images(tmp_path / "summer2winter" / "testB_gt")) == 2
    r = run(args)
    assert r.exit_code == 1 and "already exists (use --force" in r.output
    assert run([*args, "--force"]).exit_code == 0
    r = run(["datasets", "synth", "zebras", "--root", str(tmp_path)])
    assert r.exit_code == 1 and "unknown synthetic task 'zebras'" in r.output
    r = run(["datasets", "synth", "day2night", "--size", "4", "--root", str(tmp_path)])
    assert r.exit_code == 1 and "--size must be 16 to 1024" in r.output
    r = run(["datasets", "synth", "day2night", "--size", "100000", "--root", str(tmp_path)])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "--size" in r.output
    assert not (tmp_path / "day2night").exists()
    r = run(["datasets", "synth", "Day2Night", "--n", "1", "--n-test", "1", "--size", "16"]
            + ["--root", str(tmp_path)])  # fmt: skip
    assert r.exit_code == 0 and (tmp_path / "day2night").is_dir()
    r = run(["datasets", "synth", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output and "testA_gt" in r.output
