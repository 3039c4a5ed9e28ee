"""`cyclekit translate` as a user runs it: its own process, started by the executable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def run_cyclekit(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """``python -m cyclekit ARGS`` in a fresh interpreter, with its own conversion cache."""
    env = {**os.environ, "CYCLEKIT_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "cyclekit", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def photos(folder: Path, n: int, size: tuple[int, int] = (40, 32)) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{i}.png")
    return folder


def test_own_process_ends_with_every_file_complete_and_the_right_status(tmp_path, gen):
    # The executable ends without the interpreter's teardown (cli.common.leave): the report,
    # the record of outputs and every image must be complete, and the status must be kept.
    inp = photos(tmp_path / "in", 3)
    (inp / "broken.jpg").write_bytes(b"not a jpeg")
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    args = ["translate", str(inp), "-o", str(out), "--checkpoint", str(gen), "--no-progress"]
    r = run_cyclekit(*args, "--backend", "torch", "--report", str(report), cache=tmp_path / "c")
    assert r.returncode == 1, r.stderr
    assert "done 3, skipped 0, failed 1" in r.stderr
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(e["status"] for e in lines) == ["done", "done", "done", "failed"]
    recorded = (out / ".cyclekit-translate-outputs").read_text().split()
    assert sorted(recorded) == ["p0.png", "p1.png", "p2.png"]
    for i in range(3):
        with Image.open(out / f"p{i}.png") as im:
            assert im.size == (40, 32)
            im.load()  # the whole file is there
    (inp / "broken.jpg").unlink()
    again = run_cyclekit(*args, "--backend", "torch", "--skip-existing", cache=tmp_path / "c")
    assert again.returncode == 0, again.stderr
    assert "done 0, skipped 3, failed 0" in again.stderr
