"""The batch engine behind ``cyclekit translate``: plan, decode, run, write, report. No click here.

Every input is attempted; a bad one becomes a line in the :class:`Report`, never an abort.
Outputs are written to a hidden temporary name and renamed, so an interrupted run leaves only
complete images, and ``skip_existing`` resumes it. Decoding and encoding run in a thread pool
while the model works; images of the same size are batched.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cyclekit.data.images import ImageDecodeError, is_image_file, list_images
from cyclekit.errors import CyclekitError
from cyclekit.translate.image_io import (
    FORMATS,
    MIN_SIDE,
    PARTIAL_SUFFIX,
    Job,
    Prepared,
    finish,
    prepare,
)


class TranslateError(CyclekitError):
    """A problem with the whole run (not one image); ``str()`` is one line for the user."""


@dataclass
class TranslateOptions:
    """What ``cyclekit translate`` does besides choosing inputs and the model."""

    output_dir: Path
    max_size: int | None = None  # downscale so the long side is at most this
    resize: tuple[int, int] | None = None  # (width, height) to run the model at
    keep_resized: bool = False  # keep the model-size output instead of resizing it back
    tile: int | None = None  # tile side; None: tile only when an image exceeds the budget
    fmt: str | None = None  # output format (jpg, png, webp); None: same as the input
    quality: int = 95
    skip_existing: bool = False
    report_path: Path | None = None
    gallery: bool = False
    batch_size: int | None = None  # None: 1 on CPU/MPS, 8 on CUDA
    device: str = "auto"
    precision: str = "auto"
    num_workers: int = 2
    memory_budget_mb: int | None = None  # None: 1.5 GiB on CPU, half the free GPU memory
    progress: bool = True

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        if self.fmt is not None and self.fmt.lower() not in FORMATS:
            raise TranslateError(f"unknown output format {self.fmt!r}; choose jpg, png or webp")
        for name in ("max_size", "tile", "batch_size", "memory_budget_mb"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TranslateError(f"{name.replace('_', '-')} must be positive, got {value}")
        if not 1 <= self.quality <= 100:
            raise TranslateError(f"quality must be in 1..100, got {self.quality}")


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise TranslateError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 512x512") from None
    if w < MIN_SIDE or h < MIN_SIDE:
        raise TranslateError(f"size {text!r} is too small")
    return w, h


# -- planning: which file goes where ------------------------------------------------------------


def _glob_base(pattern: str) -> Path:
    # The folder part before the first wildcard: matches below it keep their subfolders.
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _real(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def _file_id(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _expand(arg: str, out_real: str) -> tuple[list[tuple[Path, Path]], str | None]:
    """(source, path relative to the output folder) pairs for one INPUT argument, or a reason."""
    path = Path(arg)
    if path.is_dir():
        sources = [(f, path, f.relative_to(path)) for f in list_images(path)]
    elif path.is_file():
        return [(path, Path(path.name))], None
    elif glob.has_magic(arg):
        base, sources = _glob_base(arg), []
        for m in sorted(glob.glob(arg, recursive=True)):
            m = Path(m)
            if m.is_dir():
                sources += [(f, base, f.relative_to(base)) for f in list_images(m)]
            elif m.is_file() and is_image_file(m):
                sources.append((m, base, m.relative_to(base)))
        if not sources:
            return [], "matches no image files"
    else:
        return [], "no such file or folder"
    # An output folder *inside* an input folder must not feed earlier outputs back in (an
    # output folder equal to an input folder is refused later, as it would overwrite).
    keep = [
        (s, r)
        for s, root, r in sources
        if out_real == _real(root) or not _real(s).startswith(out_real + os.sep)
    ]
    return keep, None if keep or not sources else "holds only this run's outputs"


def _output_name(src: Path, rel: Path, fmt: str | None, taken: set[str]) -> Path:
    ext = f".{fmt.lower()}" if fmt else src.suffix
    if ext.lower().lstrip(".") not in FORMATS:
        ext = ".png"  # a readable input in a format we don't write (e.g. .jfif)
    # Same-named files never collide: x.jpg and x.png both asked for as PNG become
    # x.png and x_png.png; anything still taken gets a counter. Deterministic, so that
    # --skip-existing finds the same names on the next run.
    candidates = [rel.with_suffix(ext), rel.with_name(f"{rel.stem}_{src.suffix.lstrip('.')}{ext}")]
    candidates += [rel.with_name(f"{rel.stem}_{i}{ext}") for i in range(2, 10_000)]
    for cand in candidates:
        key = os.path.normcase(str(cand))
        if key not in taken:
            taken.add(key)
            return cand
    raise TranslateError(f"{src}: too many inputs named like it")


def plan_jobs(
    inputs: Sequence[str], output_dir: Path, fmt: str | None = None
) -> tuple[list[Job], list[tuple[str, str]]]:
    """Map INPUT arguments (files, folders, globs) to output paths.

    Returns (jobs, problems) where problems are (argument, reason) for arguments that found
    nothing. Raises :class:`TranslateError` when an output would overwrite an input.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise TranslateError(f"{output_dir}: the output path exists and is not a folder")
    out_real = _real(output_dir)
    jobs, problems, taken, seen = [], [], set(), set()
    for arg in inputs:
        pairs, reason = _expand(str(arg), out_real)
        if reason:
            problems.append((str(arg), reason))
        for src, rel in pairs:
            if _real(src) in seen:  # the same file reached twice (e.g. a folder and a glob)
                continue
            seen.add(_real(src))
            jobs.append(Job(src, output_dir / _output_name(src, rel, fmt, taken)))
    inputs_by_id = {_file_id(job.src) for job in jobs}
    for job in jobs:
        # Names alone miss case-insensitive file systems (macOS, Windows): IMG_1.jpg written
        # beside IMG_1.JPG is the same file there. An existing target is checked by identity.
        clash = _real(job.dst) in seen or (job.dst.exists() and _file_id(job.dst) in inputs_by_id)
        if clash:
            raise TranslateError(
                f"{output_dir}: writing {job.dst} would overwrite an input image; "
                "choose an output folder that holds no inputs"
            )
    return jobs, problems


# -- the report ---------------------------------------------------------------------------------


@dataclass
class Report:
    """Counts done/skipped/failed, prints one line per failure, writes the JSONL report."""

    total: int
    report_path: Path | None = None
    progress: bool = True
    done: int = 0
    skipped: int = 0
    failed: int = 0
    entries: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self._bar = tqdm(total=self.total, unit="img", disable=not self.progress, leave=False)
        self._jsonl = None
        if self.report_path is not None:
            Path(self.report_path).parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.report_path, "w", encoding="utf-8")  # noqa: SIM115

    def record(self, src: str | Path, status: str, dst: Path | None = None, **extra: Any) -> None:
        if "reason" in extra:  # decode errors start with the path; the entry names it already
            extra["reason"] = str(extra["reason"]).removeprefix(f"{src}: ")
        entry = {"input": str(src), "status": status, "output": str(dst) if dst else None}
        entry.update(extra)
        self.entries.append(entry)
        setattr(self, status, getattr(self, status) + 1)
        if status == "failed":
            # One line per file, on stderr with the summary (stdout stays free for piping).
            tqdm.write(f"error: {src}: {extra.get('reason', 'failed')}", file=sys.stderr)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(entry) + "\n")
            self._jsonl.flush()  # an interrupted run keeps the lines written so far
        self._bar.update(1)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> str:
        rate = self.done / self.seconds if self.seconds > 0 else 0.0
        return (
            f"done {self.done}, skipped {self.skipped}, failed {self.failed} "
            f"in {self.seconds:.1f} s ({rate:.2f} images/s)"
        )

    def close(self) -> None:
        self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()


# -- the run ------------------------------------------------------------------------------------


def load_model(
    checkpoint: str | os.PathLike | None = None,
    model_name: str | None = None,
    direction: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The generator from ``--checkpoint`` or ``--model`` (downloaded once, then cached)."""
    from cyclekit.files import CheckpointError
    from cyclekit.generator_io import load_generator

    if (checkpoint is None) == (model_name is None):
        raise TranslateError("give exactly one of --checkpoint PATH or --model NAME")
    if model_name is not None:
        from cyclekit.translate.pretrained import PretrainedError, fetch_pretrained

        try:
            checkpoint = fetch_pretrained(model_name)
        except PretrainedError as e:
            raise TranslateError(str(e)) from None
    try:
        return load_generator(checkpoint, direction)
    except CheckpointError as e:
        raise TranslateError(str(e)) from None


def _default_budget(device: Any) -> int:
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    # On CPU the activations share RAM with everything else; 1.5 GiB keeps a 24-megapixel
    # photo (tiled) under 3 GB of peak memory.
    return 3 << 29


def _clean_partials(jobs: list[Job]) -> None:
    # Temporary files of a run that was killed: hidden, never mistaken for outputs, but clutter.
    for folder in {job.dst.parent for job in jobs}:
        if folder.is_dir():
            for stale in folder.glob(f".*{PARTIAL_SUFFIX}"):
                stale.unlink(missing_ok=True)


def translate_paths(
    inputs: Sequence[str], model: Any, info: dict[str, Any], opts: TranslateOptions
) -> Report:
    """Translate every image named by ``inputs`` into ``opts.output_dir``; never raises for
    one bad image (it is reported). Raises :class:`TranslateError` for a bad run setup."""
    from cyclekit.devices import resolve_device, resolve_precision
    from cyclekit.translate.tiling import Batcher, make_runner

    jobs, problems = plan_jobs(inputs, opts.output_dir, opts.fmt)
    try:
        device = resolve_device(opts.device)
        precision = resolve_precision(opts.precision, device)
    except ValueError as e:
        raise TranslateError(str(e)) from None
    if opts.batch_size is None:
        # On a CPU one image at a time is fastest (measured: 6.1 vs 3.7 images/s at 256x256,
        # bf16, batch 1 vs 4): a batch's activations no longer fit in the caches.
        opts = dataclasses.replace(opts, batch_size=8 if device.type == "cuda" else 1)
    opts.output_dir.mkdir(parents=True, exist_ok=True)
    _clean_partials(jobs)
    report = Report(len(jobs) + len(problems), opts.report_path, opts.progress)
    spec = info["spec"]
    budget = (opts.memory_budget_mb << 20) if opts.memory_budget_mb else _default_budget(device)
    batcher = Batcher(
        model.to(device),
        spec,
        make_runner(model, device, precision),
        opts.batch_size,
        budget,
        opts.tile,
    )
    pool = ThreadPoolExecutor(max(1, opts.num_workers), thread_name_prefix="cyclekit-io")
    writes: collections.deque[tuple[Prepared, Future]] = collections.deque()

    def collect(block: bool) -> None:
        while writes and (block or writes[0][1].done()):
            prep, fut = writes.popleft()
            seconds = round(time.perf_counter() - prep.started, 4)
            try:
                extra = fut.result()
                report.record(prep.job.src, "done", prep.job.dst, seconds=seconds, **extra)
            except Exception as e:  # disk full, permissions: this image fails, not the run
                report.record(prep.job.src, "failed", reason=f"cannot write output: {e}")

    def dispatch(results: list[tuple[Prepared, np.ndarray | Exception]]) -> None:
        for prep, out in results:
            if isinstance(out, Exception):
                reason = f"model failed ({str(out).strip().splitlines()[0]})"
                report.record(prep.job.src, "failed", reason=reason)
            else:
                job = pool.submit(finish, prep, out, opts.keep_resized, opts.quality)
                writes.append((prep, job))
        collect(block=False)

    try:
        for arg, reason in problems:
            report.record(arg, "failed", reason=reason)
        todo = []
        for job in jobs:
            if opts.skip_existing and job.dst.exists():
                report.record(job.src, "skipped", job.dst, reason="output exists")
            else:
                todo.append(job)
        for job, prep in _prefetch(pool, todo, spec, opts):
            if isinstance(prep, Exception):
                report.record(job.src, "failed", reason=str(prep))
            else:
                dispatch(batcher.add(prep, prep.pixels))
        dispatch(batcher.flush())
        collect(block=True)
    finally:
        # On Ctrl-C: writes already started finish (each is atomic); queued ones are dropped.
        pool.shutdown(wait=True, cancel_futures=True)
        report.close()
    if opts.gallery:
        from cyclekit.translate.gallery import write_gallery

        write_gallery(opts.output_dir, report.entries)
    return report


def _prefetch(
    pool: ThreadPoolExecutor, jobs: list[Job], spec: dict[str, Any], opts: TranslateOptions
) -> Iterator[tuple[Job, Prepared | Exception]]:
    """Decode ahead in the pool, in order, keeping a bounded number of images in memory."""
    window = max(2 * opts.batch_size, 2 * opts.num_workers, 2)
    queue: collections.deque[tuple[Job, Future]] = collections.deque()
    it = iter(jobs)
    while True:
        while len(queue) < window and (job := next(it, None)) is not None:
            queue.append((job, pool.submit(prepare, job, spec, opts.resize, opts.max_size)))
        if not queue:
            return
        job, fut = queue.popleft()
        try:
            yield job, fut.result()
        except (ImageDecodeError, OSError, ValueError) as e:
            yield job, e
