"""What every command shares: turning user errors into one line, and the common flag types."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import click

from cyclekit.errors import CyclekitError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# True when `cyclekit` runs as its own process (cyclekit.cli.run), not inside a test's.
OWN_PROCESS = False


def leave(code: int) -> NoReturn:
    """End a command that has closed every file it wrote, with exit status ``code``.

    In a process of its own this skips the interpreter's teardown: with torch and OpenVINO
    loaded, tearing their modules down took 0.5-0.9 s after `cyclekit translate` had finished
    (2-core AMD EPYC), a fifth of a ten-photo run. Inside another program it is ``sys.exit``.
    """
    if OWN_PROCESS:
        for stream in (sys.stdout, sys.stderr):
            # (None or closed when the caller closed it: nothing left to lose there.)
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stream.flush()
        os._exit(code)
    sys.exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """A :class:`CyclekitError` becomes ``Error: <one line>`` and exit 1; bugs keep tracebacks."""
    try:
        yield
    except CyclekitError as e:
        raise click.ClickException(str(e)) from None


class DeviceType(click.ParamType):
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, in any case; checked before any work."""

    name = "device"
    _PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().lower()
        if not self._PATTERN.match(text):
            self.fail(
                f"{value!r} is not a device; choose auto, cpu, cuda, cuda:N or mps", param, ctx
            )
        return text

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[auto|cpu|cuda|cuda:N|mps]"


DEVICE = DeviceType()


def choice(values: Any) -> click.Choice:
    """A choice list that accepts any case (``--format JPG``, ``--direction A2B``)."""
    return click.Choice(list(values), case_sensitive=False)
