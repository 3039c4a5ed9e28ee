"""The batch engine behind ``cyclekit translate``: plan, decode, run, write, report. No click here.

Every input is attempted; a bad one becomes a line in the :class:`Report`, never an abort.
Outputs are written to a hidden temporary name and renamed, so an interrupted run leaves only
complete images, and ``skip_existing`` resumes it. Decoding and encoding run in a thread pool
while the model works; images of the same size are batched.

Nothing a user owns is written over: the run is refused, before anything is written, when the
output folder holds an input or a ``--report``/``--gallery`` file is not an earlier one of its
kind; an image already in the output folder is replaced only if an earlier run wrote it (listed
in :data:`RECORD_NAME`). Which output an input gets: :mod:`cyclekit.translate.plan`.
A video (or a ``--sequence`` folder) is routed to :mod:`cyclekit.translate.video`, whole.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import itertools
import json
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cyclekit.data.images import ImageDecodeError
from cyclekit.errors import CyclekitError
from cyclekit.translate.image_io import (
    MIN_SIDE,
    PARTIAL_SUFFIX,
    Job,
    Prepared,
    finish,
    prepare,
)
from cyclekit.translate.plan import Problem, check_output_dir, iter_plan
from cyclekit.translate.video import (
    ClipContext,
    VideoError,
    VideoOptions,
    check_support,
    frames_folder,
    frames_folder_state,
    is_clip,
    translate_clip,
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
    batch_size: int | None = None  # None: 8 on CUDA, 1 on CPU/MPS (OpenVINO: 2 per stream)
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"  # torch or openvino (see cyclekit.translate.backends)
    num_workers: int = 2
    memory_budget_mb: int | None = None  # None: 1.5 GiB on CPU, half the free GPU memory
    progress: bool = True
    video: VideoOptions = field(default_factory=VideoOptions)

    def __post_init__(self) -> None:
        from cyclekit.translate.batching import MIN_TILE

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


def _read_record(output_dir: Path) -> set[int]:
    """Hashes of the outputs earlier runs wrote (8 bytes each instead of a path string; the odds
    that a user's file shares one with 10^5 outputs are ~1e-14)."""
    try:
        with open(output_dir / RECORD_NAME, encoding="utf-8", errors="replace") as f:
            return {hash(line.rstrip("\n")) for line in f if line.strip()}
    except OSError:  # no earlier run (or unreadable: then nothing counts as ours)
        return set()


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
    inputs: Sequence[str], opts: TranslateOptions, checkpoint: str | os.PathLike | None = None
) -> None:
    """Refuse, before anything is written, a ``--report`` or ``--gallery`` page that would
    replace an input, the checkpoint, or a file that is not an earlier report or gallery.

    Only INPUT arguments that are files are compared: an input found in a folder is an
    image, and neither a report nor a page can have an image's name (suffixes checked)."""
    from cyclekit.files import OverwriteError, refuse_overwrite
    from cyclekit.translate.gallery import is_gallery_page

    inputs = [a for a in inputs if os.path.isfile(a)]
    inputs += [checkpoint] if checkpoint is not None else []
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

    Nothing is kept per file: entries stream to the ``--report`` file, and to a temporary
    spool when ``keep_entries`` (the gallery reads them back with :meth:`entries`). The report
    file is written under a temporary name and renamed when the run ends (also on Ctrl-C, with
    the lines so far), so an earlier report is replaced only by a complete one. ``total`` may be
    None while the inputs are still being listed (see :meth:`set_total`).
    """

    total: int | None
    report_path: Path | None = None
    progress: bool = True
    keep_entries: bool = False
    done: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0  # video frames translated
    check_seconds: float = 0.0  # spent deciding whether outputs exist (--skip-existing)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        from cyclekit.files import atomic_write

        self._bar = tqdm(total=self.total, unit="img", disable=not self.progress, leave=False)
        self._files = contextlib.ExitStack()
        self._jsonl = None
        self._spool = None
        if self.report_path is not None:
            # A killed run's temporary report (only ours: same name, atomic_path's pattern).
            path = Path(self.report_path)
            for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
                stale.unlink(missing_ok=True)
            self._jsonl = self._files.enter_context(atomic_write(path, "w"))
        elif self.keep_entries:
            self._spool = self._files.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8"))

    def set_total(self, total: int) -> None:
        """The number of entries, once the listing has found them all (any thread)."""
        self.total = self._bar.total = total
        self._bar.refresh()

    def record(self, src: str | Path, status: str, dst: Path | None = None, **extra: Any) -> None:
        if "reason" in extra:  # decode errors start with the path; the entry names it already
            extra["reason"] = str(extra["reason"]).removeprefix(f"{src}: ")
        entry = {"input": str(src), "status": status, "output": str(dst) if dst else None}
        entry.update(extra)
        setattr(self, status, getattr(self, status) + 1)
        # One line per file, on stderr with the summary (stdout stays free for piping).
        if status == "failed":
            tqdm.write(f"error: {src}: {extra.get('reason', 'failed')}", file=sys.stderr)
        for note in extra.get("warnings", ()):
            tqdm.write(f"warning: {src}: {note}", file=sys.stderr)
        line = json.dumps(entry) + "\n"
        if self._jsonl is not None:
            self._jsonl.write(line)
        if self._spool is not None:
            self._spool.write(line)
        self._bar.update(1)

    def entries(self) -> Iterator[dict[str, Any]]:
        """The entries recorded, in order, read back one at a time (``keep_entries`` or a
        ``--report``; after :meth:`close`)."""
        if self._spool is not None:
            self._spool.seek(0)
            lines = self._spool
        elif self.report_path is not None:
            lines = open(self.report_path, encoding="utf-8")  # noqa: SIM115 (closed below)
        else:
            return
        try:
            for line in lines:
                yield json.loads(line)
        finally:
            if lines is not self._spool:
                lines.close()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> str:
        rate = self.done / self.seconds if self.seconds > 0 else 0.0
        line = (
            f"done {self.done}, skipped {self.skipped}, failed {self.failed} "
            f"in {self.seconds:.1f} s ({rate:.2f} images/s)"
        )
        if self.frames:
            line += f"; {self.frames} video frames"
        if self.skipped:
            line += f"; skipped: outputs exist (checked in {self.check_seconds:.2f} s)"
        return line

    def close(self) -> None:
        """Finish the report file (the spool stays readable until :meth:`discard`)."""
        self._bar.close()
        if self._spool is None:  # (a spool exists only without --report)
            self._files.close()

    def discard(self) -> None:
        """Drop the spool, once the entries have been read."""
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


def open_model(
    checkpoint: str | os.PathLike | None,
    model_name: str | None,
    direction: str | None,
    opts: TranslateOptions,
) -> tuple[Any, dict[str, Any]]:
    """:func:`load_model`, or, when this run will use OpenVINO on the CPU and an earlier run
    indexed the file's conversion, a :class:`~cyclekit.translate.deferred.DeferredGenerator`:
    then translate starts without importing torch (1.2-2 s on a 2-core CPU).

    A file loaded the usual way for such a run gets ``info["file_key"]`` if its bytes did not
    change while it was read: translate_paths then indexes its conversion."""
    from cyclekit.devices import gpu_may_be_present
    from cyclekit.translate import backends
    from cyclekit.translate.deferred import file_key, recall

    cpu = opts.device == "cpu" or (opts.device == "auto" and not gpu_may_be_present())
    if not (
        cpu
        and opts.backend in ("auto", "openvino")
        and opts.precision in ("auto", "bf16", "fp32")
        and (checkpoint is None) != (model_name is None)
        and backends.openvino_available()
    ):
        return load_model(checkpoint, model_name, direction)
    if model_name is not None:
        from cyclekit.translate.pretrained import fetch_pretrained

        checkpoint, model_name = fetch_pretrained(model_name), None  # (the file now)
    assert checkpoint is not None
    path = Path(checkpoint)
    try:
        before = file_key(path, direction)
        known = recall(backends.openvino_cache(), path, direction, before)
    except Exception:  # noqa: BLE001 - an OpenVINO that fails to import, an unreadable file:
        return load_model(path, None, direction)  # the usual load says what is wrong
    if known is not None:
        return known, known.info
    model, info = load_model(path, None, direction)
    with contextlib.suppress(OSError):
        if file_key(path, direction) == before:  # (not replaced while it was read)
            info["file_key"] = before
    return model, info


class _TorchRunner:
    """The generator in torch (``tiling.make_runner``), set up at its first call: a run that
    never needs torch (OpenVINO, no tiles, no videos) never imports it."""

    def __init__(self, model: Any, device: Any, precision: str) -> None:
        self._args, self._run = (model, device, precision), None

    def __call__(self, x: Any) -> Any:
        if self._run is None:
            import torch

            from cyclekit.translate import tiling
            from cyclekit.translate.deferred import torch_module

            model, device, precision = self._args
            device = torch.device(device)
            self._run = tiling.make_runner(torch_module(model).to(device), device, precision)
        return self._run(x)


def _default_budget(device: Any) -> int:
    from cyclekit.devices import device_type

    if device_type(device) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    # On CPU the activations share RAM with everything else; 1.5 GiB keeps a 24-megapixel
    # photo (tiled) under 3 GB of peak memory.
    return 3 << 29


def _clean_partials(folder: Path) -> None:
    # Temporary files of a run that was killed: hidden, never mistaken for outputs, but clutter
    # (a --frames folder's temporary is a folder).
    if folder.is_dir():
        for stale in folder.glob(f".*{PARTIAL_SUFFIX}"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _existing_output(job: Job, output_dir: Path, recorded: set[int]) -> tuple[bool, str | None]:
    """(whether ``job.dst`` exists, why it must not be written or None); one lstat, no decode."""
    try:
        st = os.lstat(job.dst)
    except (FileNotFoundError, NotADirectoryError):
        return False, None
    if stat.S_ISDIR(st.st_mode):
        return True, f"its output {job.dst} is a folder"
    if hash(job.dst.relative_to(output_dir).as_posix()) not in recorded:
        return True, (
            f"{job.dst} already exists and was not written by cyclekit translate, so it is "
            "not replaced; move it away or choose another output folder"
        )
    return True, None


def _first_job(
    plan: Iterator[Job | Problem],
) -> tuple[list[Problem], Iterator[Job | Problem] | None]:
    """The problems before the first job, and the plan from that job on (None: no job)."""
    problems: list[Problem] = []
    for item in plan:
        if isinstance(item, Job):
            return problems, itertools.chain([item], plan)
        problems.append(item)
    return problems, None


def _count_in_background(count: Callable[[], int], report: Report) -> None:
    # The bar's total fills in when a second listing ends, while the first one is translated
    # as it is found: a huge tree starts at once and still shows an ETA.
    def work() -> None:
        with contextlib.suppress(Exception):  # only a progress bar total is at stake
            report.set_total(count())

    threading.Thread(target=work, name="cyclekit-count", daemon=True).start()


def translate_paths(
    inputs: Sequence[str], model: Any, info: dict[str, Any], opts: TranslateOptions
) -> Report:
    """Translate every image named by ``inputs`` into ``opts.output_dir``; never raises for
    one bad image (it is reported). Raises :class:`TranslateError` (or another
    :class:`~cyclekit.errors.CyclekitError`) for a bad run setup, before anything is written.

    Inputs are translated as the listing finds them (:func:`~cyclekit.translate.plan.iter_plan`).
    An output that exists is skipped with ``skip_existing``, else replaced, but only if an
    earlier run wrote it (see :data:`RECORD_NAME`); anything else is never overwritten.
    """
    from cyclekit.devices import device_type, resolve_device, resolve_precision
    from cyclekit.translate import backends
    from cyclekit.translate.batching import MIN_TILE, Batcher
    from cyclekit.translate.deferred import DeferredGenerator

    vo = opts.video
    check_output_dir(inputs, opts.output_dir)
    if vo.frames_dir is not None:
        check_output_dir(inputs, vo.frames_dir, "--frames")
    check_support(inputs, vo)
    # Listed up to the first input only: a missing or empty INPUT is an error before
    # anything is written, and a huge folder starts at once.
    problems, plan = _first_job(iter_plan(inputs, opts.output_dir, opts.fmt, vo.codec, vo.sequence))
    if plan is None:
        found = "; ".join(f"{p.source}: {p.reason}" for p in problems)
        raise TranslateError(f"no input image found ({found})")
    check_run_outputs(inputs, opts, info.get("path"))
    # (open_model gives a DeferredGenerator only for a run on the CPU: no torch needed here.)
    deferred = isinstance(model, DeferredGenerator)
    device = "cpu" if deferred else resolve_device(opts.device)
    precision = resolve_precision(opts.precision, device)
    # Before anything is written: a backend asked for by name that cannot run is an error.
    spec = info["spec"]
    torch_run = _TorchRunner(model, device, precision)
    fast_run = backends.make_runner(model, spec, device, precision, opts.backend, torch_run)
    if not deferred:
        backends.remember_conversion(fast_run, info)
    # Videos and tiles run in torch (see ClipContext), so they keep torch's batch.
    torch_batch = opts.batch_size or (8 if device_type(device) == "cuda" else 1)
    if opts.batch_size is None:
        # In torch on a CPU one image at a time is fastest (measured: 6.1 vs 3.7 images/s at
        # 256x256, bf16, batch 1 vs 4): a batch's activations no longer fit in the caches.
        # OpenVINO runs a batch's images side by side, two per stream, while the next images
        # are decoded (see backends.OpenVinoRunner and tiling.Batcher).
        batch = getattr(fast_run, "preferred_batch", torch_batch)
        opts = dataclasses.replace(opts, batch_size=batch)
    try:
        report = Report(None, opts.report_path, opts.progress, keep_entries=opts.gallery)
    except OSError as e:
        raise TranslateError(f"--report {opts.report_path}: cannot write ({e.strerror})") from None
    try:
        opts.output_dir.mkdir(parents=True, exist_ok=True)
        record_file = open(opts.output_dir / RECORD_NAME, "a", encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        report.abandon()
        raise TranslateError(f"-o {opts.output_dir}: cannot write there ({e.strerror})") from None
    recorded = _read_record(opts.output_dir)
    budget = (opts.memory_budget_mb << 20) if opts.memory_budget_mb else _default_budget(device)
    batcher = Batcher(
        model,
        spec,
        fast_run,
        opts.batch_size,
        budget,
        opts.tile,
        tiled_run=torch_run,
    )
    pool = ThreadPoolExecutor(max(1, opts.num_workers), thread_name_prefix="cyclekit-io")
    clips = ClipContext(
        model,
        spec,
        torch_run,  # the temporal modes hook into the torch modules
        torch_batch,
        budget,
        opts.tile,
        opts.resize,
        opts.max_size,
        opts.keep_resized,
        opts.output_dir,
        pool,
        opts.progress,
        # Where write_gallery looks for thumbnails: a video's is its poster frame.
        thumbs=opts.output_dir / ".gallery" / "thumbs" if opts.gallery else None,
    )
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
            model = round(model_seconds, 4)  # the rest of `seconds` is decoding and encoding
            report.record(
                prep.job.src, "done", prep.job.dst, seconds=seconds, model_seconds=model, **extra
            )

    def note(dst: Path) -> None:
        rel = dst.relative_to(opts.output_dir).as_posix()
        if hash(rel) not in recorded:
            recorded.add(hash(rel))
            record_file.write(rel + "\n")
            record_file.flush()

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
            note(prep.job.dst)
            fut = pool.submit(finish, prep, out, opts.keep_resized, opts.quality)
            writes.append((prep, seconds / len(results), fut))
        collect(block=False)

    counting = not opts.progress  # (no bar, no total needed)

    def run_model(step: Any, *args: Any) -> None:
        nonlocal counting
        started = time.perf_counter()
        results = step(*args)
        dispatch(results, time.perf_counter() - started)
        if results and not counting:
            # Only after the first output: the count competes for the GIL and the disk.
            counting = True
            _count_in_background(
                lambda: sum(
                    1 for _ in iter_plan(inputs, opts.output_dir, opts.fmt, vo.codec, vo.sequence)
                ),
                report,
            )

    def run_clip(job: Job) -> None:
        """A video or --sequence folder, whole; the images before it are written first."""
        run_model(batcher.flush)
        if vo.write_video:
            note(job.dst)
        try:
            extra = translate_clip(job.src, job.dst, clips, vo)
        except VideoError as e:
            report.record(job.src, "failed", reason=str(e))
            return
        except OSError as e:  # disk full, permissions, a file removed meanwhile
            where = e.filename or job.dst
            report.record(job.src, "failed", reason=f"cannot write {where} ({e.strerror or e})")
            return
        report.frames += extra["frames"]
        dst = job.dst if vo.write_video else Path(extra["frames_dir"])
        report.record(job.src, "done", dst, **extra)

    def clip_exists(job: Job) -> tuple[bool, str | None]:
        found, why = True, None
        if vo.write_video:
            found, why = _existing_output(job, opts.output_dir, recorded)
        folder = frames_folder(job.dst, opts.output_dir, vo)
        if folder is not None:
            exists, not_ours = frames_folder_state(folder)
            found, why = found and exists, why or not_ours
            _clean_partials(folder.parent)
        return found, why

    def todo() -> Iterator[Job]:
        """The jobs to translate, as the plan streams in; the rest go to the report."""
        cleaned: set[Path] = set()
        for item in plan:
            if isinstance(item, Problem):
                report.record(item.source, "failed", reason=item.reason)
                continue
            started = time.perf_counter()
            clip = is_clip(item, vo)
            if clip:
                exists, why = clip_exists(item)
            else:
                exists, why = _existing_output(item, opts.output_dir, recorded)
            report.check_seconds += time.perf_counter() - started
            if why is not None:
                report.record(item.src, "failed", reason=why)
            elif exists and opts.skip_existing:
                extra = {"kind": "video"} if clip else {}
                if clip and clips.thumbs is not None and vo.write_video:
                    from cyclekit.translate.video_io import posters_from_files

                    posters_from_files(clips.thumbs, item.src, item.dst, spec["input_nc"])
                report.record(item.src, "skipped", item.dst, reason="output exists", **extra)
            else:
                if item.dst.parent not in cleaned:  # once per output folder
                    cleaned.add(item.dst.parent)
                    _clean_partials(item.dst.parent)
                yield item

    try:
        for problem in problems:
            report.record(problem.source, "failed", reason=problem.reason)
        for job, prep in _prefetch(pool, todo(), spec, opts):
            if prep is None:
                run_clip(job)
            elif isinstance(prep, Exception):
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

        try:
            write_gallery(opts.output_dir, report.entries())
        finally:
            report.discard()
    return report


def _prefetch(
    pool: ThreadPoolExecutor, jobs: Iterable[Job], spec: dict[str, Any], opts: TranslateOptions
) -> Iterator[tuple[Job, Prepared | Exception | None]]:
    """Decode ahead in the pool, in order, keeping a bounded number of images in memory.
    A video (or --sequence folder) comes with None: it is decoded as it is translated."""
    window = max(2 * opts.batch_size, 2 * opts.num_workers, 2)
    queue: collections.deque[tuple[Job, Future | None]] = collections.deque()
    it = iter(jobs)
    while True:
        while len(queue) < window and (job := next(it, None)) is not None:
            if is_clip(job, opts.video):
                queue.append((job, None))
                continue
            args = (job, spec, opts.resize, opts.max_size, opts.keep_resized)
            queue.append((job, pool.submit(prepare, *args)))
        if not queue:
            return
        job, fut = queue.popleft()
        if fut is None:
            yield job, None
            continue
        try:
            yield job, fut.result()
        except ImageDecodeError as e:
            yield job, e
        except OSError as e:  # a read error after the file was opened (network drive, ...)
            yield job, ImageDecodeError(f"{job.src}: cannot read ({e.strerror or e})")
        except MemoryError:
            yield job, ImageDecodeError(f"{job.src}: not enough memory to decode it")
