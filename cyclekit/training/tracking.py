"""Experiment tracking behind a small interface; wandb is imported only when a run uses it.

W&B must never cost a run: ``auto`` falls back to offline within seconds when the W&B host
cannot be reached (instead of wandb's own 90 s wait and a traceback), and a W&B failure in the
middle of a run turns tracking off with one warning while training goes on.
"""

from __future__ import annotations

import netrc
import os
import shlex
import socket
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cyclekit.errors import UsageError

WANDB_MODES = ("auto", "online", "offline", "disabled")
DEFAULT_WANDB_URL = "https://api.wandb.ai"
# Seconds to wait for a TCP connection to the W&B host before ``auto`` gives up on it.
PROBE_TIMEOUT = 3.0
# wandb.init's own limit (its default is 90 s) for an ``auto`` run whose probe succeeded.
AUTO_INIT_TIMEOUT = 20.0


class Tracker(Protocol):
    run_id: str | None

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_images(self, images: dict[str, str | os.PathLike], step: int) -> None: ...

    def alert(self, title: str, text: str, every_s: float) -> None: ...

    def finish(self) -> None: ...


class NullTracker:
    """Tracking switched off: every call does nothing."""

    run_id: str | None = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_images(self, images: dict[str, str | os.PathLike], step: int) -> None:
        pass

    def alert(self, title: str, text: str, every_s: float) -> None:
        pass

    def finish(self) -> None:
        pass


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def wandb_base_url() -> str:
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_WANDB_URL


def wandb_credentials_configured() -> bool:
    """True when an API key is in the environment or in ~/.netrc for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = urllib.parse.urlsplit(wandb_base_url()).hostname or ""
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _uses_proxy(host: str) -> bool:
    # Behind a proxy a direct connection says nothing about whether wandb can get through.
    proxies = urllib.request.getproxies()
    return bool(proxies.get("https") or proxies.get("http") or proxies.get("all")) and not (
        urllib.request.proxy_bypass(host)
    )


def probe_wandb_host(url: str | None = None, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why the W&B host cannot be reached (e.g. "connection refused"), or None if it can.

    One TCP connection, with name resolution included in the time limit (a thread, since
    ``getaddrinfo`` has no timeout of its own). None as well when a proxy is configured.
    """
    parts = urllib.parse.urlsplit(url or wandb_base_url())
    host = parts.hostname
    if not host:
        return f"bad WANDB_BASE_URL {url or wandb_base_url()!r}"
    if _uses_proxy(host):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return f"bad port in WANDB_BASE_URL {url or wandb_base_url()!r}"
    result: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except socket.gaierror:
            result.append(f"{host}: host not found")
        except ConnectionRefusedError:
            result.append(f"{host}:{port}: connection refused")
        except TimeoutError:
            result.append(f"{host}:{port}: no answer in {timeout:g} s")
        except OSError as e:
            result.append(f"{host}:{port}: {e.strerror or e}")

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return result[0] if result else f"{host}: no answer in {timeout:g} s"


def check_wandb_mode(mode: str) -> None:
    """Refuse a mode that cannot work: ``online`` without a key or with the host unreachable.

    Cheap (at most a few seconds, for ``online`` only): commands call it before they write
    anything, :func:`start_tracker` calls it again.
    """
    if mode not in WANDB_MODES:
        raise UsageError(f"unknown --wandb-mode {mode!r}; choose one of {', '.join(WANDB_MODES)}")
    if mode != "online":
        return
    if not wandb_credentials_configured():
        raise UsageError(
            "--wandb-mode online needs W&B credentials: run `wandb login` or set WANDB_API_KEY "
            "(or use --wandb-mode offline and `wandb sync` later)"
        )
    why = probe_wandb_host()
    if why is not None:
        raise UsageError(
            f"--wandb-mode online: W&B is not reachable ({why}); use --wandb-mode auto or "
            "offline to log locally and `wandb sync` later"
        )


def resolve_wandb_mode(mode: str) -> str:
    """``auto``: online when credentials are configured and the host answers, else offline.

    An explicit ``WANDB_MODE`` in the environment decides ``auto`` too. Falling back because
    the host is unreachable prints one line saying so.
    """
    check_wandb_mode(mode)
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    if not wandb_credentials_configured():
        return "offline"
    why = probe_wandb_host()
    if why is not None:
        _warn(f"W&B is not reachable ({why}); logging offline instead")
        return "offline"
    return "online"


class WandbTracker:
    """A wandb run. After any wandb failure mid-run, tracking stops (one warning); training
    goes on."""

    def __init__(
        self,
        mode: str,
        project: str,
        entity: str | None,
        name: str,
        config: dict[str, Any],
        run_dir: Path,
        tags: list[str] | None = None,
        run_id: str | None = None,
        init_timeout: float | None = None,
    ) -> None:
        import wandb  # lazy: costs ~1 s and starts a service process

        self._wandb = wandb
        settings = wandb.Settings(init_timeout=init_timeout) if init_timeout else None
        self.run = wandb.init(
            project=project,
            entity=entity,
            name=name,
            config=config,
            # Absolute: the wandb service process may run in another working directory.
            dir=str(Path(run_dir).resolve()),
            mode=mode,
            tags=tags or None,
            id=run_id,
            resume="allow" if run_id else None,
            settings=settings,
        )
        self.run_id = self.run.id
        self.mode = mode
        self._broken = False
        if mode == "offline":
            # run.dir is <run folder>/wandb/offline-run-*/files; sync takes the folder above.
            folder = shlex.quote(str(Path(self.run.dir).parent))
            print(f"W&B is offline; upload later with: wandb sync {folder}", file=sys.stderr)

    def _call(self, what: str, fn: Callable[[], Any]) -> None:
        if self._broken:
            return
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - any wandb failure: stop tracking, keep training
            self._broken = True
            _warn(f"W&B {what} failed ({_first_line(e)}); tracking is off for the rest of this run")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._call("log", lambda: self.run.log(metrics, step=step))

    def log_images(self, images: dict[str, str | os.PathLike], step: int) -> None:
        def log() -> None:
            self.run.log({k: self._wandb.Image(str(v)) for k, v in images.items()}, step=step)

        self._call("image log", log)

    def alert(self, title: str, text: str, every_s: float) -> None:
        """A W&B alert (e-mail/Slack, as the user set up in W&B), online runs only; W&B itself
        drops repeats of one title within ``every_s`` seconds."""
        if getattr(self, "mode", None) != "online":
            return
        level = self._wandb.AlertLevel.WARN
        self._call(
            "alert", lambda: self.run.alert(title=title[:63], text=text, level=level,
                                            wait_duration=every_s)
        )  # fmt: skip

    def finish(self) -> None:
        # Once broken, finishing is still worth a try (it flushes what was logged), but quietly.
        if self._broken:
            try:
                self.run.finish()
            except Exception:  # noqa: BLE001, S110 - already reported once
                pass
            return
        self._call("finish", self.run.finish)


def _reset_wandb() -> None:
    """Shut down wandb's service after a failed start: some versions (0.17) otherwise hang
    the next ``wandb.init`` in this process until its timeout."""
    try:
        import wandb

        wandb.teardown()
    except Exception:  # noqa: BLE001, S110 - best effort; the retry reports its own failure
        pass


def start_tracker(
    mode: str,
    project: str,
    entity: str | None,
    name: str,
    config: dict[str, Any],
    run_dir: Path,
    tags: list[str] | None = None,
    run_id: str | None = None,
) -> Tracker:
    """Start W&B in ``mode`` (auto/online/offline/disabled); ``run_id`` continues a run.

    ``online`` that cannot start is a one-line :class:`UsageError` (before any step runs);
    ``auto`` and ``offline`` never stop a run: they fall back to offline, then to no tracking.
    """
    asked = mode
    mode = resolve_wandb_mode(mode)  # for "online": checks the key and the host
    if mode == "disabled":
        return NullTracker()
    args = (project, entity, name, config, run_dir, tags, run_id)
    if asked == "online":
        try:
            return WandbTracker(mode, *args)
        except Exception as e:  # noqa: BLE001 - wandb raises many types; the user asked for it
            why = _first_line(e)
            raise UsageError(f"--wandb-mode online: W&B run did not start ({why})") from None
    if mode == "online":
        try:
            return WandbTracker(mode, *args, init_timeout=AUTO_INIT_TIMEOUT)
        except Exception as e:  # noqa: BLE001 - any failure: fall back, never stop the run
            _warn(f"W&B online run did not start ({_first_line(e)}); logging offline instead")
            mode = "offline"
            _reset_wandb()
    try:
        return WandbTracker(
            mode, *args, init_timeout=AUTO_INIT_TIMEOUT if asked == "auto" else None
        )
    except Exception as e:  # noqa: BLE001
        _warn(f"W&B could not start ({_first_line(e)}); training without tracking")
        return NullTracker()
