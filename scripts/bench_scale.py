"""Benchmark ``cyclekit translate`` on big folders of small photos and print JSON.

    .venv/bin/python scripts/bench_scale.py                      # 1,000 and 10,000 files
    .venv/bin/python scripts/bench_scale.py --sizes 1000,10000,100000

For each size the script makes a folder of small JPEGs (64x48, in subfolders of 1,000, the way
cameras number them), then runs the real command in a fresh process, as a user would:

1. ``cyclekit translate IN -o OUT --checkpoint tiny.pt``: seconds from the process start until
   the first output file exists, per-file time after that, per-file overhead outside the model
   (per-file time minus the model's time per image, which the run's ``--report`` records),
   peak RSS of the process;
2. the same with ``--skip-existing`` and nothing to do: wall time and the summary line;
3. the same with ``--skip-existing --gallery``: the gallery's cost, the page's size and its
   first-screen time in headless Chromium (when installed).

The folders are deleted afterwards. Targets (issue 16): overhead <= 2 ms a file, RSS within 10%
between the smallest and largest size, a 10,000-file no-op rerun <= 5 s, first output <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SIDE = (64, 48)  # (width, height): small, so the folder machinery dominates, not the model
PER_FOLDER = 1000


def _make_folder(root: Path, n: int) -> Path:
    """n JPEGs in subfolders of PER_FOLDER; a handful of distinct contents, written as bytes."""
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(8):
        img = Image.fromarray(rng.integers(0, 256, (SIDE[1], SIDE[0], 3), np.uint8))
        path = root / "blob.jpg"
        img.save(path, quality=90)
        blobs.append(path.read_bytes())
        path.unlink()
    src = root / "in"
    for i in range(n):
        folder = src / f"{100 + i // PER_FOLDER}CANON"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True)
        (folder / f"IMG_{i:06d}.jpg").write_bytes(blobs[i % len(blobs)])
    return src


def _tiny_generator(path: Path) -> Path:
    import torch

    from cyclekit.generator_io import save_generator
    from cyclekit.models import build_generator, generator_spec

    torch.manual_seed(0)
    spec = generator_spec("resnet_6blocks", 3, 3, 4, "instance", False)
    save_generator(path, build_generator(**spec), spec, "a2b")
    return path


def _run(args: list[str], first_output: Path | None = None) -> dict:
    """Run ``cyclekit ARGS`` in a fresh process: wall time, time to ``first_output`` (from the
    process start), peak RSS (from os.wait4 on that child alone), the summary line."""
    cmd = [sys.executable, "-m", "cyclekit", *args]
    # stderr to a file, not a pipe: a pipe nobody reads while we poll would fill and stall it.
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
        first = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if first_output is not None and first is None and first_output.exists():
                first = time.perf_counter() - started
            time.sleep(0.002)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        log.seek(0)
        err = log.read()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"cyclekit {' '.join(args)} failed:\n{err[-2000:]}")
    lines = [ln for ln in err.splitlines() if ln.startswith("done ")]
    return {
        "wall_s": round(wall, 3),
        "first_output_s": None if first is None else round(first, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "summary": lines[-1] if lines else None,
    }


def bench_size(n: int, work: Path, checkpoint: Path, gallery: bool) -> dict:
    folder = work / f"n{n}"
    folder.mkdir()
    started = time.perf_counter()
    src = _make_folder(folder, n)
    made = time.perf_counter() - started
    out = folder / "out"
    first = out / "100CANON" / "IMG_000000.jpg"
    base = ["translate", str(src), "-o", str(out), "--checkpoint", str(checkpoint)]

    # A fresh process to --help (no torch imported): the part of "first output" that is Python.
    startup = _run(["translate", "--help"])["wall_s"]
    # The model's own time per image comes from the run's report (model_seconds), measured in
    # the same process at the same moment: the machine's speed drifts between runs.
    report = folder / "report.jsonl"
    fresh = _run([*base, "--report", str(report)], first)
    with open(report) as f:
        model_s = [json.loads(line).get("model_seconds") for line in f]
    model_ms = sum(m for m in model_s if m) / max(1, len(model_s)) * 1000
    report.unlink()
    per_file_ms = (fresh["wall_s"] - (fresh["first_output_s"] or 0)) / max(1, n - 1) * 1000
    result = {
        "files": n,
        "make_folder_s": round(made, 2),
        "first_output_s": fresh["first_output_s"],
        "cli_startup_s": startup,
        "wall_s": fresh["wall_s"],
        "per_file_ms": round(per_file_ms, 3),
        "model_ms": round(model_ms, 3),
        "overhead_per_file_ms": round(per_file_ms - model_ms, 3),
        "peak_rss_mb": fresh["peak_rss_mb"],
        "summary": fresh["summary"],
    }
    rerun = _run([*base, "--skip-existing"])
    result["noop_rerun_s"] = rerun["wall_s"]
    result["noop_rerun_summary"] = rerun["summary"]
    if gallery:
        g = _run([*base, "--skip-existing", "--gallery"])
        page = out / "index.html"
        data = out / ".gallery"
        data_bytes = sum(f.stat().st_size for f in data.rglob("*.js")) if data.is_dir() else 0
        result["gallery"] = {
            "extra_s": round(g["wall_s"] - rerun["wall_s"], 2),
            "page_kb": round(page.stat().st_size / 1024, 1) if page.exists() else None,
            "data_kb": round(data_bytes / 1024, 1),
        }
        stats = _chromium_stats(page, folder / "profile")
        if stats is not None:
            result["gallery"]["chromium"] = stats
    shutil.rmtree(folder)
    return result


def _chromium_stats(page: Path, profile: Path) -> dict | None:
    sys.path.insert(0, str(ROOT))
    from tests.helpers import chromium_page_stats, find_chromium

    if find_chromium() is None or not page.exists():
        return None
    return chromium_page_stats(page, profile)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000", help="comma-separated file counts")
    ap.add_argument("--no-gallery", action="store_true", help="skip the gallery measurements")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="cyclekit-bench-scale-", dir=args.work))
    try:
        checkpoint = _tiny_generator(work / "tiny.pt")
        results = [bench_size(n, work, checkpoint, not args.no_gallery) for n in sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rss = [r["peak_rss_mb"] for r in results]
    from cyclekit.devices import speed_flags

    print(
        json.dumps(
            {
                "machine": {
                    "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(),
                    "flags": speed_flags(),
                },
                "image": f"{SIDE[0]}x{SIDE[1]} JPEG",
                "model": "resnet_6blocks ngf=4 (tiny), --precision auto",
                "sizes": results,
                "rss_growth": round(max(rss) / min(rss) - 1, 3) if rss else None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
