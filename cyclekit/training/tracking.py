"""Experiment tracking behind a small interface; wandb is imported only when a run uses it."""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any, Protocol

WANDB_MODES = ("auto", "online", "offline", "disabled")


class Tracker(Protocol):
    run_id: str | None

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_images(self, images: dict[str, str | os.PathLike], step: int) -> None: ...

    def finish(self) -> None: ...


class NullTracker:
    """Tracking switched off: every call does nothing."""

    run_id: str | None = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_images(self, images: dict[str, str | os.PathLike], step: int) -> None:
        pass

    def finish(self) -> None:
        pass


def wandb_credentials_configured() -> bool:
    """True when an API key is in the environment or in ~/.netrc for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1]
        return netrc.netrc().authenticators(host.split("/")[0]) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto``: online when credentials are configured, otherwise offline (with a hint)."""
    if mode not in WANDB_MODES:
        raise ValueError(f"unknown --wandb-mode {mode!r}; choose one of {', '.join(WANDB_MODES)}")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if wandb_credentials_configured() else "offline"


class WandbTracker:
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
    ) -> None:
        import wandb  # lazy: costs ~1 s and starts a service process

        self._wandb = wandb
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
        )
        self.run_id = self.run.id
        if mode == "offline":
            # run.dir is <run folder>/wandb/offline-run-*/files; sync takes the folder above.
            print(
                f"W&B is offline; upload later with: wandb sync {Path(self.run.dir).parent}",
                file=sys.stderr,
            )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_images(self, images: dict[str, str | os.PathLike], step: int) -> None:
        self.run.log({k: self._wandb.Image(str(v)) for k, v in images.items()}, step=step)

    def finish(self) -> None:
        self.run.finish()


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
    """Start W&B in ``mode`` (auto/online/offline/disabled); ``run_id`` continues a run."""
    mode = resolve_wandb_mode(mode)
    if mode == "disabled":
        return NullTracker()
    return WandbTracker(mode, project, entity, name, config, run_dir, tags, run_id)
