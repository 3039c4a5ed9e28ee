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
