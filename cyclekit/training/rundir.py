"""The run folder every trainer shares: one owner at a time, fresh-or-resume, signals.

Used by ``cyclekit train`` and the MNIST baselines alike, so the safeguards are written once:
- :class:`RunLock`: two processes never train in the same folder at once;
- :func:`check_fresh` and :func:`resolve_resume`: a rerun never silently replaces a run;
- :class:`StopFlag`: Ctrl-C / SIGTERM end in a saved ``last.pt``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from cyclekit.errors import CyclekitError
from cyclekit.files import CheckpointError


class RunFolderError(CyclekitError):
    """The run folder is in use, or already holds a run that would be replaced."""


class RunLock:
    """An exclusive lock on ``run_dir/.lock``, held for the life of the run.

    The lock is an OS file lock (``fcntl.flock``): the kernel drops it when the process ends,
    however it ends, so a crashed run never leaves a stale lock behind. The file itself stays
    and records who held it last (pid, host), for the message a second run gets.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        self._fd: int | None = None
        self._made_dir = False

    def acquire(self) -> RunLock:
        # A folder made only to hold the lock is removed again if the run never starts.
        self._made_dir = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # Windows: no flock; one run per folder is then up to the user
            self._fd = fd
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderError(
                f"{self.run_dir}: another run is using this folder ({holder}); wait for it to "
                "finish, or pick another --name"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        if self._made_dir and [p.name for p in self.run_dir.iterdir()] == [".lock"]:
            # Nothing was written (e.g. a bad flag stopped the run): leave no empty folder.
            self.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_fresh(run_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Refuse to start a new run over an existing one unless ``--overwrite`` was given.

    Forgetting ``--resume auto`` must not wipe out a long run.
    """
    last = run_dir / "last.pt"
    if resume is None and last.exists() and not overwrite:
        raise RunFolderError(
            f"{last} already holds a run; continue it with --resume auto, pick another "
            "--name, or pass --overwrite to start afresh"
        )


def resolve_resume(run_dir: Path, resume: str | None, log: bool = True) -> Path | None:
    """``None``: a fresh run; ``auto``: ``run_dir/last.pt`` if it exists; else a file that must.

    ``auto`` with nothing there starts a new run (so one command line serves the first start
    and every restart), and says so: a mistyped ``--name`` must not go unnoticed.
    """
    if resume is None:
        return None
    if resume == "auto":
        last = run_dir / "last.pt"
        if last.is_file():
            return last
        if log:
            print(
                f"--resume auto: nothing to resume at {last}; starting a new run", file=sys.stderr
            )
        return None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume {path}: no such file")
    return path


def check_checkpoint_format(
    state: Any, path: Path, fmt: str, version: int, what: str | None = None
) -> dict[str, Any]:
    """A loaded checkpoint must be a dict of format ``fmt`` at a version we can read.

    ``what`` names the expected kind in the message (default: the format's name).
    """
    what = what or f"{fmt} checkpoint"
    if not isinstance(state, dict) or state.get("format") != fmt:
        found = state.get("format") if isinstance(state, dict) else None
        seen = f" (it is a {found} file)" if isinstance(found, str) else ""
        raise CheckpointError(f"{path}: not a {what}{seen}")
    found_version = state.get("format_version")
    if not isinstance(found_version, int) or found_version > version:
        raise CheckpointError(
            f"{path}: format version {found_version!r} is newer than this cyclekit "
            f"reads ({version}); upgrade cyclekit"
        )
    return state


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves at the next step boundary and returns."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nstopping after this step (saving last.pt); press Ctrl-C again to abort",
            file=sys.stderr,
        )

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
