"""Which input goes to which output: the plan of ``cyclekit translate``, streamed.

A folder of 100,000 photos starts translating while it is still being listed: :func:`iter_plan`
yields each input as the listing finds it, and keeps per input only what it must (a hash of
its output name, and the identity of files that links can reach twice), so time to the first
output and memory do not grow with the folder.

The rules, all decided from the input alone (never from which other files exist or from the
order they are listed in):

- the output name is :func:`output_name` of the input's path below its INPUT argument;
- an output folder that is, or holds, an input is refused before anything is written;
- two inputs that would get one output name (``x.png`` and ``X.png`` copied from a disk that
  tells letter case apart; the same ``trip/x.jpg`` below two INPUT folders): the first in
  the plan's order keeps the name, the later one is reported and not translated (nothing is
  renamed, so a later ``--skip-existing`` run pairs every output with the input it came from).

Order: the INPUT arguments in the order given; in a folder, its files (sorted by name) before
its subfolders (sorted), depth first (:func:`~cyclekit.data.images.iter_images`); a glob's
matches sorted.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cyclekit.data.images import IMAGE_EXTENSIONS, is_image_file, iter_images
from cyclekit.errors import CyclekitError
from cyclekit.translate.image_io import FORMATS, Job
from cyclekit.translate.video import VIDEO_EXTENSIONS, is_video_file, video_output_name


class PlanError(CyclekitError):
    """The output folder cannot be used; ``str()`` is one line naming it."""


@dataclass(frozen=True)
class Problem:
    """An argument that found nothing, or an input that gets no output; ``reason`` is one line."""

    source: str
    reason: str


def output_name(rel: Path, fmt: str | None, codec: str = "h264") -> Path:
    """Where the input at ``rel`` (its path below its INPUT folder) goes, below the output folder.

    The rule looks at the input alone, so every run (and ``--skip-existing``) pairs an input
    with the same output:

    - without ``--format``: the same relative path (``trip/IMG_1.jpg`` -> ``trip/IMG_1.jpg``);
    - with ``--format F``: an input already in F's format keeps its name (``x.jpeg`` with
      ``jpg``); any other gets ``.F`` after its full name (``x.png`` -> ``x.png.webp``), so
      ``x.jpg`` and ``x.png`` never compete for one ``x.webp``;
    - a video: :func:`~cyclekit.translate.video.video_output_name` (``--format`` is for images).
    """
    if is_video_file(rel):
        return video_output_name(rel, codec)
    src_format = FORMATS.get(rel.suffix.lower().lstrip("."))
    if fmt is None:
        return rel if src_format is not None else rel.with_name(f"{rel.name}.png")
    return rel if src_format == FORMATS[fmt] else rel.with_name(f"{rel.name}.{fmt}")


def _identity(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _is_at_or_above(folder: tuple[int, int], path: Path) -> bool:
    """Whether the folder with identity ``folder`` is ``path`` or one of its parents.

    By identity, not by name: on a disk that ignores letter case (macOS, Windows) ``OUT`` and
    ``out`` are one folder, and a link may name it another way."""
    here = Path(os.path.realpath(path))
    for candidate in (here, *here.parents):
        if _identity(candidate) == folder:
            return True
    return False


def _glob_base(pattern: str) -> Path:
    # The folder part before the first wildcard: matches below it keep their subfolders.
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _looks_like_a_file_name(path: Path) -> bool:
    suffix = path.suffix.lower().lstrip(".")
    return not path.exists() and (suffix in FORMATS or is_video_file(path))


def check_output_dir(inputs: Sequence[str], output_dir: Path, option: str = "-o") -> None:
    """Refuse, before anything is written, an output folder that cannot be used: a file, a
    name that looks like an image or video file, or a folder that is or holds an INPUT
    argument. ``option`` names the folder's flag in the message (-o, --frames)."""
    flag = f"{option} {output_dir}"
    if output_dir.exists() and not output_dir.is_dir():
        raise PlanError(f"{flag}: exists and is not a folder; translate writes a folder")
    if _looks_like_a_file_name(output_dir):
        raise PlanError(
            f"{flag}: translate writes a folder of results, and this looks like a file name; "
            f"give a folder, e.g. {option} {output_dir.with_suffix('')}/"
        )
    out_id = _identity(output_dir)
    if out_id is None:  # a new folder holds nothing yet
        return
    for arg in inputs:
        path = Path(arg)
        root = path if path.is_dir() else path.parent if path.exists() else _glob_base(arg)
        if root.exists() and _is_at_or_above(out_id, root):
            raise PlanError(
                f"{flag}: the output folder holds the input {arg}; choose a folder outside "
                "the inputs (a new subfolder of the inputs' folder is fine)"
            )


MEDIA_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
_NO_IMAGES = f"holds no image or video files ({', '.join(MEDIA_EXTENSIONS)}; searched recursively)"


def _sources(arg: str, skip: set[tuple[int, int]]) -> Iterator[tuple[Path, Path] | Problem]:
    """(source, its path below the INPUT root) for one INPUT argument, as they are found.

    Folders in ``skip`` (the output folder, when it lies inside an input folder) are not
    entered: their files are earlier outputs, not inputs. Folders and globs find images and
    videos."""
    path = Path(arg)
    found = 0
    if path.is_dir():
        for f in iter_images(path, skip, MEDIA_EXTENSIONS):
            found += 1
            yield f, f.relative_to(path)
        empty = _NO_IMAGES
    elif path.is_file():
        yield path, Path(path.name)
        return
    elif glob.has_magic(arg):
        base = _glob_base(arg)
        for m in sorted(glob.iglob(arg, recursive=True)):
            m = Path(m)
            if m.is_dir():
                if _identity(m) in skip:
                    continue
                for f in iter_images(m, skip, MEDIA_EXTENSIONS):
                    found += 1
                    yield f, f.relative_to(base)
            elif m.is_file() and _is_media(m) and not _in_skipped(m, skip):
                found += 1
                yield m, m.relative_to(base)
        empty = "matches no image files"
    else:
        yield Problem(arg, "no such file or folder")
        return
    if not found:
        yield Problem(arg, empty)


def _is_media(path: Path) -> bool:
    return is_image_file(path) or is_video_file(path)


_SEQUENCE_FILE = "--sequence takes folders of frames (a video file is fine too), not an image"


def _clips(arg: str, skip: set[tuple[int, int]]) -> Iterator[tuple[Path, Path] | Problem]:
    """``--sequence``: every folder an INPUT argument names (or its glob matches) is one
    clip; a video file is one too."""
    path = Path(arg)
    if path.is_dir():
        yield path, Path(path.resolve().name if path.name in ("", ".", "..") else path.name)
    elif path.is_file():
        yield (path, Path(path.name)) if is_video_file(path) else Problem(arg, _SEQUENCE_FILE)
    elif glob.has_magic(arg):
        base, found = _glob_base(arg), 0
        for m in map(Path, sorted(glob.iglob(arg, recursive=True))):
            if (m.is_dir() or is_video_file(m)) and _identity(m) not in skip:
                found += 1
                yield m, m.relative_to(base)
        if not found:
            yield Problem(arg, "matches no folders")
    else:
        yield Problem(arg, "no such file or folder")


def _in_skipped(path: Path, skip: set[tuple[int, int]]) -> bool:
    return any(_identity(parent) in skip for parent in Path(os.path.realpath(path)).parents)


def iter_plan(
    inputs: Sequence[str],
    output_dir: str | os.PathLike,
    fmt: str | None = None,
    codec: str = "h264",
    sequence: bool = False,
) -> Iterator[Job | Problem]:
    """Jobs (input -> output) and problems for the INPUT arguments, streamed (see the module
    docstring for the rules). Call :func:`check_output_dir` first. ``codec`` names videos'
    outputs; with ``sequence`` every INPUT folder is one clip (a video named after it)."""
    output_dir = Path(output_dir)
    out_id = _identity(output_dir)
    skip = {out_id} if out_id is not None else set()
    # Identities and hashes, not paths: a few dozen bytes an input, not a path string.
    seen_sources: set[int] = set()  # only with several INPUTs: one folder lists a file once
    taken: set[int] = set()  # output names given so far, letter case folded
    for arg in inputs:
        for item in (_clips if sequence else _sources)(str(arg), skip):
            if isinstance(item, Problem):
                yield item
                continue
            src, rel = item
            if len(inputs) > 1:  # the same file reached twice (e.g. a folder and a glob)
                ident = _identity(src)
                if ident is not None:  # (a file that vanished fails later, when decoded)
                    key = (ident[0] << 64) | ident[1]  # exact: a false match would drop a file
                    if key in seen_sources:
                        continue
                    seen_sources.add(key)
            if sequence and src.is_dir():
                dst = output_dir / video_output_name(rel, codec, sequence=True)
            else:
                dst = output_dir / output_name(rel, fmt, codec)
            # Letter case folded: the results may live on (or be copied to) a disk where
            # x.png and X.png are one file. A hash collision (odds ~1e-9 at 10^5 inputs)
            # would only refuse one input, with this message; it never overwrites anything.
            name = hash(str(dst).casefold())
            if name in taken:
                yield Problem(
                    str(src),
                    f"its output {dst} is also the output of an input earlier in this run "
                    "(the first keeps it); translate them in separate runs (or rename one)",
                )
                continue
            taken.add(name)
            yield Job(src, dst)


def plan_jobs(
    inputs: Sequence[str], output_dir: str | os.PathLike, fmt: str | None = None
) -> tuple[list[Job], list[tuple[str, str]]]:
    """:func:`iter_plan` as lists (jobs, (source, reason) problems), after the folder checks."""
    output_dir = Path(output_dir)
    check_output_dir(inputs, output_dir)
    jobs: list[Job] = []
    problems: list[tuple[str, str]] = []
    for item in iter_plan(inputs, output_dir, fmt):
        if isinstance(item, Problem):
            problems.append((item.source, item.reason))
        else:
            jobs.append(item)
    return jobs, problems
