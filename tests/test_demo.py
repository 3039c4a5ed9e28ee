"""`cyclekit demo` end to end at the tiny preset (seconds), and its gallery in a browser."""

from __future__ import annotations

import re

from click.testing import CliRunner

from cyclekit.cli import main
from tests.helpers import chromium_dom


def test_demo_tiny_end_to_end_with_gallery(tmp_path):
    out, root = tmp_path / "out", tmp_path / "datasets"
    args = [
        "demo",
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--datasets-root",
        str(root),
        "--max-steps",
        "4",
        "--no-progress",
        "--wandb-mode",
        "disabled",
    ]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    m = re.search(
        r"PSNR vs ground truth: ([\d.]+) dB translated, ([\d.]+) dB doing nothing", r.output
    )
    assert m, r.output
    assert "trained 4 steps" in r.output
    page = out / "index.html"
    assert f"gallery: {page.resolve()}" in r.output
    assert (root / "day2night" / "testA_gt").is_dir()
    text = page.read_text()
    assert text.count("<img ") == 3 * 6  # input, translation, ground truth per test image
    dom = chromium_dom(page, tmp_path / "profile")
    assert 'data-images-loaded="18/18"' in dom, dom[-500:]
    # A second run reuses the dataset (same settings) and retrains in the same folders.
    stamp = (root / "day2night" / "synth.json").stat().st_mtime_ns
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0 and (root / "day2night" / "synth.json").stat().st_mtime_ns == stamp


def test_demo_help_teaches():
    r = CliRunner().invoke(main, ["demo", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output and "--minutes" in r.output


def test_demo_never_replaces_a_dataset_or_page_it_did_not_make(tmp_path):
    from cyclekit.data.synth import make_synthetic
    from cyclekit.demo import MADE_BY

    root, out = tmp_path / "datasets", tmp_path / "out"
    made = make_synthetic("day2night", root, n_train=3, n_test=1, size=16)  # by `datasets synth`
    before = sorted(p.name for p in (made / "trainA").iterdir())
    args = ["demo", "--preset", "tiny", "--out", str(out), "--datasets-root", str(root)]
    r = CliRunner().invoke(main, [*args, "--max-steps", "1", "--no-progress"])
    assert r.exit_code == 1 and (r.exception is None or isinstance(r.exception, SystemExit))
    assert r.output.startswith("Error: --datasets-root") and r.output.count("\n") == 1
    assert sorted(p.name for p in (made / "trainA").iterdir()) == before
    # One the demo made itself (other settings) is the demo's to replace.
    make_synthetic("day2night", root, 3, 1, 16, force=True, made_by=MADE_BY)
    out.mkdir()
    (out / "index.html").write_text("my page")
    r = CliRunner().invoke(main, [*args, "--max-steps", "1", "--no-progress"])
    assert r.exit_code == 1 and "--out" in r.output and "not a cyclekit demo gallery" in r.output
    assert (out / "index.html").read_text() == "my page"


def test_demo_with_a_one_sided_model(tmp_path):
    out, root = tmp_path / "out", tmp_path / "datasets"
    args = ["demo", "--preset", "tiny", "--model", "fastcut", "--out", str(out),
            "--datasets-root", str(root), "--max-steps", "3", "--no-progress",
            "--wandb-mode", "disabled"]  # fmt: skip
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "trained 3 steps" in r.output and "PSNR vs ground truth" in r.output
    run = out / "checkpoints" / "demo_day2night_fastcut"
    assert (run / "G_ab.pt").is_file() and not (run / "G_ba.pt").exists()
    assert (out / "index.html").read_text().count("<img ") == 3 * 6
