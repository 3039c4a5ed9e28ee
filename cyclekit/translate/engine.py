"""The batch engine behind ``cyclekit translate``: plan, decode, run, write, report. No click here.

Every input is attempted; a bad one becomes a line in the :class:`Report`, never an abort.
Outputs are written to a hidden temporary name and renamed, so an interrupted run leaves only
complete images, and ``skip_existing`` resumes it. Decoding and encoding run in a thread pool
while the model works; images of the same size are batched.

Nothing a user owns is written over: the run is refused, before anything is written, when the
output folder holds an input or a ``--report``/``--gallery`` file is not an earlier one of its
kind; an image already in the output folder is replaced only if an earlier run wrote it (listed
in :data:`RECORD_NAME`). Which output an input gets is :func:`output_name`.
"""

from __future__ import annotations

import collections
import contextlib
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

from cyclekit.data.images import IMAGE_EXTENSIONS, ImageDecodeError, is_image_file, list_images
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


# Outputs of earlier runs, one relative path a line, in a hidden file of the output folder: an
# existing file there is replaced only if an earlier run wrote it (a user's photo that happens
# to have an output's name never is).
RECORD_NAME = ".cyclekit-translate-outputs"
REPORT_SUFFIXES = (".jsonl", ".json", ".ndjson", ".txt", ".log")


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
        from cyclekit.translate.tiling import MIN_TILE

        self.output_dir = Path(self.output_dir)
        if self.fmt is not None:
            self.fmt = self.fmt.lower()
            if self.fmt not in ("jpg", "png", "webp"):
                raise TranslateError(f"--format {self.fmt!r}: choose jpg, png or webp")
        for name in ("max_size", "tile", "batch_size", "memory_budget_mb"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TranslateError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.resize is not None and self.max_size is not None:
            raise TranslateError(
                "--resize and --max-size cannot be combined: --resize sets the exact size the "
                "model runs at, --max-size only a limit; give one of them"
            )
        if self.tile is not None and self.tile < MIN_TILE:
            raise TranslateError(
                f"--tile {self.tile}: tiles smaller than {MIN_TILE} px change the result "
                f"visibly; use --tile {MIN_TILE} or more (or leave --tile out: images too large "
                "for memory are tiled automatically)"
            )
        if not 1 <= self.quality <= 100:
            raise TranslateError(f"--quality must be in 1..100, got {self.quality}")


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise TranslateError(f"--resize {text!r} is not WIDTHxHEIGHT, e.g. 512x512") from None
    if w < MIN_SIDE or h < MIN_SIDE:
        raise TranslateError(f"--resize {text!r} is too small (at least {MIN_SIDE}x{MIN_SIDE})")
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


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


_NO_IMAGES = f"holds no image files ({', '.join(IMAGE_EXTENSIONS)}; searched recursively)"


def _expand(arg: str, out_real: str) -> tuple[list[tuple[Path, Path]], str | None]:
    """(source, path relative to the output folder) pairs for one INPUT argument, or a reason."""
    path = Path(arg)
    if path.is_dir():
        sources = [(f, path, f.relative_to(path)) for f in list_images(path)]
        empty = _NO_IMAGES
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
        empty = "matches no image files"
    else:
        return [], "no such file or folder"
    if not sources:
        return [], empty

    # An output folder *inside* an input folder must not feed earlier outputs back in. (An
    # output folder that is, or holds, an input folder is refused later.)
    def earlier_output(src: Path, root: Path) -> bool:
        root_real = _real(root)
        return (
            out_real != root_real and _inside(out_real, root_real) and _inside(_real(src), out_real)
        )

    keep = [(s, r) for s, root, r in sources if not earlier_output(s, root)]
    return keep, None if keep else "holds only this run's outputs"


def output_name(rel: Path, fmt: str | None) -> Path:
    """Where the input at ``rel`` (its path below its INPUT folder) goes, below the output folder.

    The rule looks at the input alone, never at which other files exist or in which order
    they are listed, so every run (and ``--skip-existing``) pairs an input with the same output:

    - without ``--format``: the same relative path (``trip/IMG_1.jpg`` -> ``trip/IMG_1.jpg``);
    - with ``--format F``: an input already in F's format keeps its name (``x.jpeg`` with
      ``jpg``); any other gets ``.F`` after its full name (``x.png`` -> ``x.png.webp``), so
      ``x.jpg`` and ``x.png`` never compete for one ``x.webp``.
    """
    src_format = FORMATS.get(rel.suffix.lower().lstrip("."))
    if fmt is None:
        return rel if src_format is not None else rel.with_name(f"{rel.name}.png")
    return rel if src_format == FORMATS[fmt] else rel.with_name(f"{rel.name}.{fmt}")


def _looks_like_a_file_name(path: Path) -> bool:
    return not path.exists() and path.suffix.lower().lstrip(".") in FORMATS


def plan_jobs(
    inputs: Sequence[str], output_dir: Path, fmt: str | None = None
) -> tuple[list[Job], list[tuple[str, str]]]:
    """Map INPUT arguments (files, folders, globs) to output paths (see :func:`output_name`).

    Returns (jobs, problems): problems are (argument or input, reason) for arguments that found
    nothing and for inputs that cannot get an output of their own (two inputs arriving at one
    output name: both are reported, neither renamed). Linear in the number of inputs.
    Raises :class:`TranslateError` for an output folder that cannot be used: a file, a name
    that looks like an image file, or a folder that holds inputs.
    """
    output_dir = Path(output_dir)
    flag = f"-o {output_dir}"
    if output_dir.exists() and not output_dir.is_dir():
        raise TranslateError(f"{flag}: exists and is not a folder; translate writes a folder")
    if _looks_like_a_file_name(output_dir):
        raise TranslateError(
            f"{flag}: translate writes a folder of results, and this looks like a file name; "
            f"give a folder, e.g. -o {output_dir.with_suffix('')}/"
        )
    out_real, out_abs = _real(output_dir), os.path.normcase(os.path.abspath(output_dir))
    jobs: list[Job] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    by_name: dict[str, list[Job]] = {}
    for arg in inputs:
        pairs, reason = _expand(str(arg), out_real)
        if reason:
            problems.append((str(arg), reason))
        for src, rel in pairs:
            real = _real(src)
            if real in seen:  # the same file reached twice (e.g. a folder and a glob)
                continue
            seen.add(real)
            if _inside(real, out_real) or _inside(os.path.normcase(os.path.abspath(src)), out_abs):
                raise TranslateError(
                    f"{flag}: the output folder holds the input {src}; choose a folder outside "
                    "the inputs (a new subfolder of the inputs' folder is fine)"
                )
            job = Job(src, output_dir / output_name(rel, fmt))
            jobs.append(job)
            # Letter case folded: the results may live on (or be copied to) a disk where
            # x.png and X.png are one file.
            by_name.setdefault(str(job.dst).casefold(), []).append(job)
    clashes = {id(j): group for group in by_name.values() if len(group) > 1 for j in group}
    for job in jobs:
        if id(job) in clashes:
            others = ", ".join(str(j.src) for j in clashes[id(job)] if j is not job)
            problems.append(
                (
                    str(job.src),
                    f"its output {job.dst} would also be the output of {others}; "
                    "translate them in separate runs (or rename one)",
                )
            )
    jobs = [j for j in jobs if id(j) not in clashes]
    inputs_by_id = {_file_id(job.src) for job in jobs}
    for job in jobs:
        # Names alone miss case-insensitive file systems (macOS, Windows): IMG_1.jpg written
        # beside IMG_1.JPG is the same file there. An existing target is checked by identity.
        if job.dst.exists() and _file_id(job.dst) in inputs_by_id:
            raise TranslateError(
                f"{flag}: writing {job.dst} would overwrite an input image; "
                "choose an output folder that holds no inputs"
            )
    return jobs, problems


def _read_record(output_dir: Path) -> set[str]:
    try:
        text = (output_dir / RECORD_NAME).read_text(encoding="utf-8", errors="replace")
    except OSError:  # no earlier run (or unreadable: then nothing counts as ours)
        return set()
    return {line for line in text.splitlines() if line}


def _is_report(path: Path) -> bool:
    # An earlier --report: JSON lines with these keys (or nothing yet).
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return False
    if not first.strip():
        return path.stat().st_size == 0
    try:
        entry = json.loads(first)
    except ValueError:
        return False
    return isinstance(entry, dict) and {"input", "status", "output"} <= entry.keys()


def check_run_outputs(
    jobs: Sequence[Job], opts: TranslateOptions, checkpoint: str | os.PathLike | None = None
) -> None:
    """Refuse, before anything is written, a ``--report`` or ``--gallery`` page that would
    replace an input, the checkpoint, or a file that is not an earlier report or gallery."""
    from cyclekit.files import OverwriteError, refuse_overwrite
    from cyclekit.translate.gallery import is_gallery_page

    inputs = [job.src for job in jobs] + ([checkpoint] if checkpoint is not None else [])
    try:
        if opts.report_path is not None:
            refuse_overwrite(
                opts.report_path,
                "--report",
                inputs=inputs,
                suffixes=REPORT_SUFFIXES,
                is_own=_is_report,
                own_kind="an earlier cyclekit translate report",
            )
        if opts.gallery:
            refuse_overwrite(
                opts.output_dir / "index.html",
                "--gallery",
                inputs=inputs,
                is_own=is_gallery_page,
                own_kind="a cyclekit gallery page",
            )
    except OverwriteError as e:
        raise TranslateError(str(e)) from None


# -- the report ---------------------------------------------------------------------------------


@dataclass
class Report:
    """Counts done/skipped/failed, prints one line per failure, writes the JSONL report.

    The report file is written under a temporary name and renamed when the run ends (also on
    Ctrl-C, with the lines so far), so an earlier report is replaced only by a complete one.
    """

    total: int
    report_path: Path | None = None
    progress: bool = True
    done: int = 0
    skipped: int = 0
    failed: int = 0
    entries: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        from cyclekit.files import atomic_write

        self._bar = tqdm(total=self.total, unit="img", disable=not self.progress, leave=False)
        self._files = contextlib.ExitStack()
        self._jsonl = None
        if self.report_path is not None:
            # A killed run's temporary report (only ours: same name, atomic_path's pattern).
            path = Path(self.report_path)
            for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
                stale.unlink(missing_ok=True)
            self._jsonl = self._files.enter_context(atomic_write(path, "w"))

    def record(self, src: str | Path, status: str, dst: Path | None = None, **extra: Any) -> None:
        if "reason" in extra:  # decode errors start with the path; the entry names it already
            extra["reason"] = str(extra["reason"]).removeprefix(f"{src}: ")
        entry = {"input": str(src), "status": status, "output": str(dst) if dst else None}
        entry.update(extra)
        self.entries.append(entry)
        setattr(self, status, getattr(self, status) + 1)
        # One line per file, on stderr with the summary (stdout stays free for piping).
        if status == "failed":
            tqdm.write(f"error: {src}: {extra.get('reason', 'failed')}", file=sys.stderr)
        for note in extra.get("warnings", ()):
            tqdm.write(f"warning: {src}: {note}", file=sys.stderr)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(entry) + "\n")
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
        self._files.close()

    def abandon(self) -> None:
        """Close for a run that never started: an earlier report stays as it was."""
        self._bar.close()
        # Closing with an exception makes atomic_write delete its temporary file.
        self._files.__exit__(TranslateError, TranslateError("abandoned"), None)


# -- the run ------------------------------------------------------------------------------------


def load_model(
    checkpoint: str | os.PathLike | None = None,
    model_name: str | None = None,
    direction: str | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The generator from ``--checkpoint`` or ``--model`` (downloaded once, then cached).

    ``info`` (see :func:`~cyclekit.generator_io.load_generator`) also holds the file's
    ``path``, which translate never overwrites."""
    from cyclekit.generator_io import load_generator

    if (checkpoint is None) == (model_name is None):
        raise TranslateError("give exactly one of --checkpoint PATH or --model NAME")
    if model_name is not None:
        from cyclekit.translate.pretrained import fetch_pretrained

        checkpoint = fetch_pretrained(model_name)
    model, info = load_generator(checkpoint, direction)
    return model, {**info, "path": Path(checkpoint)}


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


def _existing_output(job: Job, output_dir: Path, recorded: set[str]) -> str | None:
    """Why ``job.dst`` must not be written (None: it may be); one stat, no decoding."""
    if not (job.dst.exists() or job.dst.is_symlink()):
        return None
    if job.dst.is_dir():
        return f"its output {job.dst} is a folder"
    if job.dst.relative_to(output_dir).as_posix() not in recorded:
        return (
            f"{job.dst} already exists and was not written by cyclekit translate, so it is "
            "not replaced; move it away or choose another output folder"
        )
    return None


def translate_paths(
    inputs: Sequence[str], model: Any, info: dict[str, Any], opts: TranslateOptions
) -> Report:
    """Translate every image named by ``inputs`` into ``opts.output_dir``; never raises for
    one bad image (it is reported). Raises :class:`TranslateError` (or another
    :class:`~cyclekit.errors.CyclekitError`) for a bad run setup, before anything is written.

    An output that exists is skipped with ``skip_existing``, else replaced, but only if an
    earlier run wrote it (see :data:`RECORD_NAME`); anything else is never overwritten.
    """
    from cyclekit.devices import resolve_device, resolve_precision
    from cyclekit.translate.tiling import MIN_TILE, Batcher, make_runner

    jobs, problems = plan_jobs(inputs, opts.output_dir, opts.fmt)
    if not jobs:
        found = "; ".join(f"{arg}: {reason}" for arg, reason in problems)
        raise TranslateError(f"no input image found ({found})")
    check_run_outputs(jobs, opts, info.get("path"))
    device = resolve_device(opts.device)
    precision = resolve_precision(opts.precision, device)
    if opts.batch_size is None:
        # On a CPU one image at a time is fastest (measured: 6.1 vs 3.7 images/s at 256x256,
        # bf16, batch 1 vs 4): a batch's activations no longer fit in the caches.
        opts = dataclasses.replace(opts, batch_size=8 if device.type == "cuda" else 1)
    try:
        report = Report(len(jobs) + len(problems), opts.report_path, opts.progress)
    except OSError as e:
        raise TranslateError(f"--report {opts.report_path}: cannot write ({e.strerror})") from None
    try:
        opts.output_dir.mkdir(parents=True, exist_ok=True)
        record_file = open(opts.output_dir / RECORD_NAME, "a", encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        report.abandon()
        raise TranslateError(f"-o {opts.output_dir}: cannot write there ({e.strerror})") from None
    recorded = _read_record(opts.output_dir)
    _clean_partials(jobs)
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
    writes: collections.deque[tuple[Prepared, float, Future]] = collections.deque()

    def collect(block: bool) -> None:
        while writes and (block or writes[0][2].done()):
            prep, model_seconds, fut = writes.popleft()
            try:
                extra = fut.result()
            except OSError as e:  # disk full, permissions: this image fails, not the run
                reason = f"cannot write {prep.job.dst} ({e.strerror or e})"
                report.record(prep.job.src, "failed", reason=reason)
                continue
            # Time spent on this image (decode, model, encode), not waiting in queues.
            seconds = round(prep.seconds + model_seconds + extra.pop("seconds"), 4)
            if prep.warnings:
                extra["warnings"] = list(prep.warnings)
            report.record(prep.job.src, "done", prep.job.dst, seconds=seconds, **extra)

    def dispatch(results: list[tuple[Prepared, np.ndarray | Exception]], seconds: float) -> None:
        for prep, out in results:
            if isinstance(out, Exception):
                reason = (
                    f"out of memory ({str(out).strip().splitlines()[0]}); try --tile "
                    f"{MIN_TILE}, a lower --memory-budget or --max-size"
                )
                report.record(prep.job.src, "failed", reason=reason)
                continue
            # Recorded before the file appears, so that a run killed right after the rename
            # still knows the file is its own.
            rel = prep.job.dst.relative_to(opts.output_dir).as_posix()
            if rel not in recorded:
                recorded.add(rel)
                record_file.write(rel + "\n")
                record_file.flush()
            fut = pool.submit(finish, prep, out, opts.keep_resized, opts.quality)
            writes.append((prep, seconds / len(results), fut))
        collect(block=False)

    def run_model(step: Any, *args: Any) -> None:
        started = time.perf_counter()
        results = step(*args)
        dispatch(results, time.perf_counter() - started)

    try:
        for arg, reason in problems:
            report.record(arg, "failed", reason=reason)
        todo = []
        for job in jobs:
            if (why := _existing_output(job, opts.output_dir, recorded)) is not None:
                report.record(job.src, "failed", reason=why)
            elif opts.skip_existing and job.dst.exists():
                report.record(job.src, "skipped", job.dst, reason="output exists")
            else:
                todo.append(job)
        for job, prep in _prefetch(pool, todo, spec, opts):
            if isinstance(prep, Exception):
                report.record(job.src, "failed", reason=str(prep))
            else:
                run_model(batcher.add, prep, prep.pixels)
        run_model(batcher.flush)
        collect(block=True)
    finally:
        # On Ctrl-C: writes already started finish (each is atomic); queued ones are dropped.
        pool.shutdown(wait=True, cancel_futures=True)
        record_file.close()
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
            args = (job, spec, opts.resize, opts.max_size, opts.keep_resized)
            queue.append((job, pool.submit(prepare, *args)))
        if not queue:
            return
        job, fut = queue.popleft()
        try:
            yield job, fut.result()
        except ImageDecodeError as e:
            yield job, e
        except OSError as e:  # a read error after the file was opened (network drive, ...)
            yield job, ImageDecodeError(f"{job.src}: cannot read ({e.strerror or e})")
        except MemoryError:
            yield job, ImageDecodeError(f"{job.src}: not enough memory to decode it")
