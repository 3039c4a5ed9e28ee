"""`cyclekit translate` as a user runs it: its own process, started by the executable."""

from __future__ import annotations

import json
import os
import shlex
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


def test_the_executable_skips_the_teardown_and_survives_closed_outputs(tmp_path, gen):
    inp = photos(tmp_path / "in", 2)
    args = ["translate", str(inp), "--checkpoint", str(gen), "--no-progress", "--backend", "torch"]
    # cli.run (the executable) ends with os._exit: exit handlers never run; cli.main, as
    # another program calls it, ends with sys.exit: they do.
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('teardown ran'))\n"
        "from cyclekit import cli\n"
        "sys.argv = ['cyclekit', *sys.argv[1:]]\n"
        "cli.{}()\n"
    )
    env = {**os.environ, "CYCLEKIT_CACHE": str(tmp_path / "c")}
    for entry, teardown in (("run", False), ("main", True)):
        cmd = [sys.executable, "-c", code.format(entry), *args, "-o", str(tmp_path / entry)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        assert ("teardown ran" in done.stdout) is teardown
    # A caller that closed stdout and stderr still gets the status and every file.
    out = tmp_path / "closed"
    cmd = [sys.executable, "-m", "cyclekit", *args, "-o", str(out)]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, timeout=300, env=env, close_fds=True)
    assert done.returncode == 0
    shell = subprocess.run(f"exec {shlex.join(cmd)} >&- 2>&-", shell=True, timeout=300, env=env)
    assert shell.returncode == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["p0.png", "p1.png"]
