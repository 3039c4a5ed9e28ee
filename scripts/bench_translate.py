"""Benchmark ``cyclekit translate`` end to end (JPEG in, JPEG out) and print JSON.

    .venv/bin/python scripts/bench_translate.py            # all three measurements
    .venv/bin/python scripts/bench_translate.py --no-big   # skip the 6000x4000 photo
    .venv/bin/python scripts/bench_translate.py --draft-check 16 --max-size 512
    .venv/bin/python scripts/bench_translate.py --startup-check 10 --rounds 3

Measures images/s at 256x256 and 1024x1024 with the full-size generator (resnet_9blocks,
ngf=64, random weights: speed does not depend on them) and the default options, and the
peak memory (RSS) of translating one 6000x4000 photo in a fresh process. Uses photos from
../shared/data/horse2zebra/testA when present, else synthetic ones.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "horse2zebra" / "testA"


def _sources(n: int) -> list[Image.Image]:
    files = sorted(PHOTOS.glob("*.jpg"))[:n] if PHOTOS.is_dir() else []
    if files:
        return [Image.open(f).convert("RGB") for f in files]
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (256, 256, 3), np.uint8)) for _ in range(n)]


def _make_inputs(folder: Path, n: int, size: tuple[int, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    srcs = _sources(n)
    for i in range(n):
        img = srcs[i % len(srcs)].resize(size, Image.Resampling.BICUBIC)
        img.save(folder / f"im{i:03d}.jpg", quality=92)
    return folder


def _make_generator(path: Path) -> Path:
    import torch

    from cyclekit.generator_io import save_generator
    from cyclekit.models import build_generator, generator_spec

    torch.manual_seed(0)
    spec = generator_spec("resnet_9blocks", 3, 3, 64, "instance", False)
    return save_generator(path, build_generator(**spec), spec, "a2b")


def _images_per_second(gen: Path, inputs: Path, out: Path, **options) -> float:
    return _timed(gen, inputs, out, **options)["images_per_s"]


def _timed(gen: Path, inputs: Path, out: Path, **options) -> dict[str, float]:
    """images/s of translating ``inputs``, after a one-image warm-up (whose time, e.g. a
    backend's one-off conversion, is reported as ``warmup_s``), and the share of the time the
    model took (the rest is decoding, encoding and the pipeline), from the run's report."""
    from cyclekit.generator_io import load_generator
    from cyclekit.translate.engine import TranslateOptions, translate_paths

    model, info = load_generator(gen)
    warm = TranslateOptions(out / "warmup", progress=False, **options)
    start = time.perf_counter()
    translate_paths([str(next(inputs.glob("*.jpg")))], model, info, warm)
    warmup = time.perf_counter() - start
    report_path = out.parent / f"{out.name}.jsonl"
    start = time.perf_counter()
    report = translate_paths(
        [str(inputs)],
        model,
        info,
        TranslateOptions(out, progress=False, report_path=report_path, **options),
    )
    seconds = time.perf_counter() - start
    assert report.failed == 0, report.summary()
    model_s = sum(json.loads(ln).get("model_seconds", 0) for ln in report_path.open())
    return {
        "images_per_s": round(report.done / seconds, 2),
        "model_share": round(model_s / seconds, 3),
        "warmup_s": round(warmup, 2),
    }


def _big_child(gen: Path, work: Path) -> None:
    """In a fresh process: translate one 6000x4000 JPEG, print peak RSS and time as JSON."""
    from cyclekit.generator_io import load_generator
    from cyclekit.translate.engine import TranslateOptions, translate_paths

    model, info = load_generator(gen)
    start = time.perf_counter()
    report = translate_paths(
        [str(work / "big.jpg")], model, info, TranslateOptions(work / "big_out", progress=False)
    )
    assert report.done == 1, report.summary()
    with Image.open(work / "big_out" / "big.jpg") as out:
        assert out.size == (6000, 4000)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "peak_rss_gb": round(peak_kib / 2**20, 3),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    )


def _official_test_py(repo: Path, gen: Path, inputs: Path, work: Path) -> dict[str, float]:
    """Wall time of the official ``test.py --model test`` (junyanz/pytorch-CycleGAN-and-pix2pix,
    a checkout at ``repo``) on ``inputs``, with the same weights as cyclekit's side: its
    ResnetGenerator has the same state_dict keys. Start-up (imports, building and loading the
    network) is timed by a run with no image and reported apart; images/s counts both."""
    import torch

    from cyclekit.generator_io import load_generator

    ckpt = work / "official_ckpt"
    (ckpt / "bench").mkdir(parents=True, exist_ok=True)
    model, _ = load_generator(gen)
    torch.save(model.state_dict(), ckpt / "bench" / "latest_net_G.pth")
    n = len(list(inputs.glob("*.jpg")))
    # Versions of the official options that default to GPU 0 fail without one; -1 is its CPU.
    options = (repo / "options" / "base_options.py").read_text()
    on_cpu = "--gpu_ids" in options and not torch.cuda.is_available()
    cpu_flag = ["--gpu_ids", "-1"] if on_cpu else []

    def run(num: int, results: Path) -> float:
        cmd = [
            sys.executable, "test.py", "--dataroot", str(inputs), "--name", "bench",
            "--model", "test", "--no_dropout", "--netG", "resnet_9blocks", "--norm", "instance",
            "--num_test", str(num), "--results_dir", str(results), "--checkpoints_dir", str(ckpt),
        ] + cpu_flag  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"Error: official test.py failed: {done.stderr.strip()[-500:]}")
        return time.perf_counter() - start

    startup = run(0, work / "official_empty")
    total = run(n, work / "official_out")
    written = list((work / "official_out").rglob("*_fake.png"))
    assert len(written) == n, f"official test.py wrote {len(written)} of {n} images"
    return {
        "images_per_s": round(n / total, 2),
        "seconds": round(total, 1),
        "startup_s": round(startup, 1),
        "images_per_s_after_startup": round(n / max(total - startup, 1e-9), 2),
    }


def _cli_default(gen: Path, inputs: Path, out: Path) -> dict[str, float]:
    """Wall time of ``cyclekit translate`` as a user runs it: a fresh process, every default,
    start-up included (the conversion cache is warm after the first round, as for a user's
    second folder; the first round's figure includes it)."""
    cmd = [sys.executable, "-m", "cyclekit", "translate", str(inputs), "-o", str(out)]
    cmd += ["--checkpoint", str(gen), "--no-progress"]
    n = len(list(inputs.glob("*.jpg")))
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"Error: cyclekit translate failed: {done.stderr.strip()[-500:]}")
    assert len(list(out.glob("*.jpg"))) == n, "cyclekit translate did not write every image"
    # Its summary line ("done N, ... in 31.2 s ...") times the translating; the rest of the
    # wall time is start-up (imports, model load) and exit.
    found = re.search(r" in ([0-9.]+) s", done.stderr)
    timed = float(found.group(1)) if found else float("nan")
    return {
        "images_per_s": round(n / seconds, 2),
        "seconds": round(seconds, 1),
        "startup_and_exit_s": round(seconds - timed, 2),
    }


def _cli_imports_torch(gen: Path, inputs: Path, out: Path) -> bool:
    """Whether ``cyclekit translate`` (as in :func:`_cli_default`) imported torch: it starts
    without it when the OpenVINO conversion is cached (cyclekit.translate.deferred)."""
    cmd = [sys.executable, "-X", "importtime", "-m", "cyclekit", "translate", str(inputs)]
    cmd += ["-o", str(out), "--checkpoint", str(gen), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in done.stderr.splitlines())


def _compare_backends(args: argparse.Namespace) -> dict[str, object]:
    """Each backend and the official way, alternated over ``--rounds`` in one process (the
    machine's speed drifts), JPEG in and out at 256x256; conversion cached after round 1."""
    import os

    from cyclekit.devices import speed_flags

    sides = {
        "torch_fp32_batch1_official_settings": {
            "backend": "torch",
            "precision": "fp32",
            "batch_size": 1,
        }
    }
    sides |= {b: {"backend": b} for b in args.backends.split(",")}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(prefix="cyclekit-bench-") as tmp:
        work = Path(tmp)
        os.environ["CYCLEKIT_CACHE"] = str(work / "cache")  # the first conversion is timed
        gen = _make_generator(work / "G.pt")
        small = _make_inputs(work / "in256", args.n256, (256, 256))
        runs["cyclekit_translate_cli_default"] = []
        if args.official_repo:
            runs["official_test_py"] = []
        for r in range(args.rounds):
            for name, options in sides.items():
                runs[name].append(_timed(gen, small, work / f"{name}_{r}", **options))
            runs["cyclekit_translate_cli_default"].append(
                _cli_default(gen, small, work / f"cli_{r}")
            )
            if args.official_repo:
                runs["official_test_py"].append(
                    _official_test_py(args.official_repo, gen, small, work / f"official_{r}")
                )
        cli_imports_torch = _cli_imports_torch(gen, small, work / "cli_imports")
    best = {name: max(x["images_per_s"] for x in xs) for name, xs in runs.items()}
    extra: dict[str, object] = {"cli_imported_torch": cli_imports_torch}
    if args.official_repo:
        # The yardstick: the official script end to end (start-up included), against
        # cyclekit_translate_cli_default, the same for `cyclekit translate` (a fresh process
        # with every default). The in-process sides leave out start-up; their first-round
        # warm-up, e.g. OpenVINO's conversion, is in first_conversion_s.
        extra["speedup_vs_official_test_py"] = {
            n: round(v / best["official_test_py"], 2) for n, v in best.items()
        }
    return {
        "model": "resnet_9blocks ngf=64",
        "images": f"{args.n256} JPEGs 256x256, JPEG out",
        "cpu_flags": speed_flags(),
        "threads": os.cpu_count(),
        "runs": runs,
        "best_images_per_s": best,
        "speedup_vs_official": {
            n: round(v / best["torch_fp32_batch1_official_settings"], 2) for n, v in best.items()
        },
        "first_conversion_s": {n: xs[0]["warmup_s"] for n, xs in runs.items() if n in sides},
        **extra,
    }


def _draft_check(args: argparse.Namespace) -> dict[str, object]:
    """``--max-size`` on 12-megapixel JPEGs, decoded at a reduced scale (the default) and in
    full (``image_io.JPEG_DRAFT`` off), alternated over ``--rounds`` in one process."""
    import os

    from cyclekit.devices import speed_flags
    from cyclekit.translate import image_io

    runs: dict[str, list[dict[str, float]]] = {"reduced_decode": [], "full_decode": []}
    with tempfile.TemporaryDirectory(prefix="cyclekit-bench-") as tmp:
        work = Path(tmp)
        os.environ["CYCLEKIT_CACHE"] = str(work / "cache")
        gen = _make_generator(work / "G.pt")
        photos = _make_inputs(work / "in", args.draft_check, (4000, 3000))
        for r in range(args.rounds):
            for name in runs:
                image_io.JPEG_DRAFT = name == "reduced_decode"
                out = work / f"{name}_{r}"
                runs[name].append(_timed(gen, photos, out, max_size=args.max_size))
        image_io.JPEG_DRAFT = True
    best = {name: max(x["images_per_s"] for x in xs) for name, xs in runs.items()}
    return {
        "model": "resnet_9blocks ngf=64, --precision auto, --backend auto",
        "images": f"{args.draft_check} JPEGs 4000x3000 (upscaled photos), --max-size "
        f"{args.max_size}, written back at 4000x3000",
        "cpu_flags": speed_flags(),
        "threads": os.cpu_count(),
        "runs": runs,
        "best_images_per_s": best,
        "speedup_of_reduced_decode": round(best["reduced_decode"] / best["full_decode"], 2),
    }


def _startup_check(args: argparse.Namespace) -> dict[str, object]:
    """Wall time of ``cyclekit translate`` on N photos in a fresh process, with the model's
    OpenVINO conversion cached, three ways alternated over ``--rounds``: as before this
    release (torch imported, interpreter torn down at exit: ``cli.main`` as other programs call
    it, the index of cached conversions removed), without the teardown only (``python -m
    cyclekit``, index removed), and as now (index present: torch never imported)."""
    import os

    from cyclekit.devices import speed_flags

    sides = {
        "torch_import_and_teardown": (["-c", "from cyclekit.cli import main; main()"], False),
        "torch_import_no_teardown": (["-m", "cyclekit"], False),
        "default_no_torch_no_teardown": (["-m", "cyclekit"], True),
    }
    runs: dict[str, list[float]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(prefix="cyclekit-bench-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "CYCLEKIT_CACHE": str(work / "cache")}
        gen = _make_generator(work / "G.pt")
        photos = _make_inputs(work / "in", args.startup_check, (256, 256))
        index = work / "cache" / "openvino"

        def translate(entry: list[str], out: Path) -> float:
            cmd = [sys.executable, *entry, "translate", str(photos), "-o", str(out)]
            cmd += ["--checkpoint", str(gen), "--no-progress", "--device", "cpu"]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
            seconds = time.perf_counter() - start
            if done.returncode:
                raise SystemExit(f"Error: cyclekit translate failed: {done.stderr[-500:]}")
            return seconds

        translate(["-m", "cyclekit"], work / "setup")  # converts and indexes once
        for r in range(args.rounds):
            for name, (entry, indexed) in sides.items():
                if not indexed:
                    for entry_file in index.glob("*/checkpoints/*.json"):
                        entry_file.unlink()
                runs[name].append(round(translate(entry, work / f"{name}_{r}"), 3))
    median = {name: statistics.median(xs) for name, xs in runs.items()}
    return {
        "model": "resnet_9blocks ngf=64, --backend auto (OpenVINO), conversion cached",
        "images": f"{args.startup_check} JPEGs 256x256",
        "cpu_flags": speed_flags(),
        "threads": os.cpu_count(),
        "wall_seconds": runs,
        "median_wall_seconds": {n: round(v, 3) for n, v in median.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n256", type=int, default=48, help="images at 256x256")
    parser.add_argument("--n1024", type=int, default=6, help="images at 1024x1024")
    parser.add_argument("--no-big", action="store_true", help="skip the 6000x4000 photo")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also time fp32, batch 1 (what the official test script does)",
    )
    parser.add_argument(
        "--backends",
        default=None,
        help="comma-separated translate backends to time side by side at 256x256 (e.g. "
        "torch,openvino), each at --precision auto, beside the official way (fp32, batch 1)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of --backends, alternated")
    parser.add_argument(
        "--official-repo",
        type=Path,
        default=None,
        help="with --backends: also time the official test.py from this checkout of "
        "junyanz/pytorch-CycleGAN-and-pix2pix (its python deps, e.g. dominate, importable)",
    )
    parser.add_argument(
        "--draft-check",
        type=int,
        default=0,
        metavar="N",
        help="instead: N 4000x3000 JPEGs at --max-size, JPEG decoded at a reduced scale (the "
        "default) vs in full, alternated over --rounds",
    )
    parser.add_argument("--max-size", type=int, default=512, help="for --draft-check")
    parser.add_argument(
        "--startup-check",
        type=int,
        default=0,
        metavar="N",
        help="instead: wall time of `cyclekit translate` on N photos in a fresh process, with "
        "and without importing torch and tearing the interpreter down, alternated over --rounds",
    )
    parser.add_argument("--big-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.big_child:
        return _big_child(args.big_child / "G.pt", args.big_child)
    result: dict[str, object] = {"model": "resnet_9blocks ngf=64", "precision": "auto"}
    if args.backends:
        return print(json.dumps(_compare_backends(args), indent=2))
    if args.draft_check:
        return print(json.dumps(_draft_check(args), indent=2))
    if args.startup_check:
        return print(json.dumps(_startup_check(args), indent=2))
    with tempfile.TemporaryDirectory(prefix="cyclekit-bench-") as tmp:
        work = Path(tmp)
        gen = _make_generator(work / "G.pt")
        small = _make_inputs(work / "in256", args.n256, (256, 256))
        result["images_per_s_256"] = round(_images_per_second(gen, small, work / "o256"), 2)
        if args.baseline:
            ips = _images_per_second(gen, small, work / "b256", precision="fp32", batch_size=1)
            result["images_per_s_256_fp32_batch1"] = round(ips, 2)
        large = _make_inputs(work / "in1024", args.n1024, (1024, 1024))
        result["images_per_s_1024"] = round(_images_per_second(gen, large, work / "o1024"), 3)
        if not args.no_big:
            _make_inputs(work, 1, (6000, 4000)).joinpath("im000.jpg").rename(work / "big.jpg")
            child = subprocess.run(
                [sys.executable, __file__, "--big-child", str(work)],
                capture_output=True,
                text=True,
                check=True,
            )
            big = json.loads(child.stdout.strip().splitlines()[-1])
            result["peak_rss_gb_6000x4000"] = big["peak_rss_gb"]
            result["seconds_6000x4000"] = big["seconds"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
