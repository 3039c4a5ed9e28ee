"""Files that are never half-written, checkpoints loaded as untrusted input, the cache folder.

Every file cyclekit writes goes through :func:`atomic_path` (or a wrapper of it): the bytes go
to a temporary name beside the target, are flushed to disk, and are renamed over the target in
one step. A process killed at any moment leaves either the old file or the new one, never half.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cyclekit.errors import CyclekitError, UsageError

if TYPE_CHECKING:  # torch is imported where it is used: translate may run without it
    import torch

FORMAT_VERSION = 1


class CheckpointError(CyclekitError):
    """A checkpoint file that cannot be used; the message names the file and the reason."""


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else vanishes.

    For writers that want a file name (Pillow, ONNX, zip extraction). ``suffix`` lets a
    library that picks its format from the extension see the right one (e.g. ``.png.tmp``
    would not do for Pillow: pass ``".png"``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync(tmp)
        # mkstemp made it 0o600; the finished file gets the permissions of any new file.
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """``open(path, mode)`` that only ever shows the finished file (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def write_yaml(path: str | os.PathLike, values: dict[str, Any]) -> Path:
    """A config as YAML (tuples as lists), written atomically."""
    import yaml

    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    with atomic_write(path, "w") as f:
        yaml.safe_dump(plain, f, sort_keys=False)
    return Path(path)


def remove_stale_temporaries(folder: Path) -> None:
    """Delete ``.*.tmp`` files that a killed process left beside the files it was writing."""
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load with ``weights_only=True``; any failure becomes a one-line :class:`CheckpointError`.

    PyTorch's own message for a refused file suggests ``weights_only=False``, which would run
    code from an untrusted file: it is never shown.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated/foreign files
        text = str(e)
        if "Unsupported global" in text:
            why = "it holds Python objects other than tensors, which cyclekit never loads"
        elif "zip archive" in text or "central directory" in text:
            why = "truncated or damaged"
        else:
            why = "not a PyTorch file"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({why})") from None


def cache_dir(*parts: str) -> Path:
    """``$CYCLEKIT_CACHE``, else ``$XDG_CACHE_HOME/cyclekit``, else ``~/.cache/cyclekit``."""
    if os.environ.get("CYCLEKIT_CACHE"):
        root = Path(os.environ["CYCLEKIT_CACHE"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cyclekit"
    return root.joinpath(*parts)


# -- never replacing what is not ours ------------------------------------------------------------


class OverwriteError(UsageError):
    """An output name that would replace an input or a file cyclekit did not write."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file: same resolved path, or (both existing) the same
    inode, which also catches hard links and case-insensitive file systems (IMG.jpg = img.JPG)."""
    if os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b)):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def refuse_overwrite(
    target: str | os.PathLike,
    flag: str,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    suffixes: Sequence[str] = (),
    is_own: Callable[[Path], bool] | None = None,
    own_kind: str = "a file cyclekit wrote",
) -> Path:
    """Check, before anything is written, that writing ``target`` loses nothing of the user's.

    Raises :class:`OverwriteError` (one line naming ``flag`` and ``target``) when ``target``

    - is an existing folder;
    - does not end in one of ``suffixes`` (when given; any letter case), e.g. a report
      named ``IMG_1.jpg`` because its name was forgotten on the command line;
    - is the same file as one of ``inputs`` (also through links; inputs need not exist);
    - already exists and ``is_own(target)`` is not true, i.e. it is not an earlier output of
      the same kind (``own_kind`` describes that kind in the message). Without ``is_own`` any
      existing file is refused.

    Returns ``Path(target)``. Callers: translate's ``--report`` and ``--gallery``, ``export -o``;
    meant for every command that writes a file the user names.
    """
    target = Path(target)
    if target.is_dir():
        raise OverwriteError(f"{flag} {target}: is a folder; give a file name")
    if suffixes and target.suffix.lower() not in {s.lower() for s in suffixes}:
        raise OverwriteError(f"{flag} {target}: expected a name ending in {' or '.join(suffixes)}")
    for item in inputs:
        if same_file(target, item):
            raise OverwriteError(f"{flag} {target}: is also an input ({item}); choose another name")
    if (target.exists() or target.is_symlink()) and not (is_own is not None and is_own(target)):
        raise OverwriteError(
            f"{flag} {target}: already exists and is not {own_kind}, so it is not replaced; "
            "choose another name or move it away"
        )
    return target


@functools.cache
def new_file_mode() -> int:
    """The permissions ``open()`` gives a new file here: 0o666 less the umask.

    ``tempfile.mkstemp`` (behind :func:`atomic_path`) creates 0o600 files; a result users
    share (an image, a gallery page) gets this mode back before it is renamed into place.
    """
    try:  # Linux: read, not set, so that no other thread ever sees a changed umask
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def check_writable_dir(path: Path, flag: str, error: type[CyclekitError] = UsageError) -> None:
    """``path`` is, or can be made, a writable folder: checked without creating anything.

    Raises ``error`` (the caller's kind of user error) naming the flag and the blocking path.
    """
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise error(f"{flag} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise error(f"{flag} {path}: {probe} is not writable")
