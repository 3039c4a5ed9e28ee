"""What the MNIST baselines share beyond :mod:`cyclekit.training.rundir`: batch order, the
start of a run (fresh or resumed, merge-or-refuse), and the grids, PNGs and GIF they write.

The run-folder safeguards themselves (lock, fresh-run check, ``--resume`` lookup, format
check, Ctrl-C) are ``cyclekit train``'s, imported from :mod:`cyclekit.training.rundir`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from cyclekit.errors import CyclekitError, UsageError
from cyclekit.files import (
    FORMAT_VERSION,
    CheckpointError,
    atomic_path,
    check_writable_dir,
    refuse_overwrite,
    safe_load,
)
from cyclekit.training.config import ConfigError
from cyclekit.training.rundir import (
    RunFolderError,
    RunLock,
    check_checkpoint_format,
    check_fresh,
    resolve_resume,
)

C = TypeVar("C")

# Limits belong to one invocation: a run stopped by --max-steps resumes without it.
RESUME_LIMITS = frozenset({"max_steps", "max_minutes"})
GRID_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
SAMPLE_MARK = "cyclekit gan sample"  # in each file `gan sample` writes: it may replace those


class MnistOutputError(CyclekitError):
    """An output path that cannot be written (read-only folder, full disk)."""


# --- batches -------------------------------------------------------------------------------------


def batch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The shuffled indices of one epoch, from a generator seeded by (seed, epoch).

    Deriving each epoch's order from its number (instead of one running generator) lets a run
    stopped mid-epoch resume at the exact batch where it stopped.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def epoch_batches(seed: int, epoch: int, n: int, batch_size: int) -> list[torch.Tensor]:
    """The index batches of one epoch; a short last batch is dropped (equal-weight steps)."""
    steps = n // batch_size
    return list(batch_order(seed, epoch, n)[: steps * batch_size].split(batch_size))


def resume_position(epoch_step: int, saved_steps_per_epoch: int, steps_per_epoch: int) -> int:
    """Where in the epoch to continue when an epoch now has another number of steps.

    Happens when the data in ``--data-dir`` changed; the same fraction of the epoch is kept,
    and a position past the end can never leave an epoch without batches.
    """
    if saved_steps_per_epoch == steps_per_epoch:
        return epoch_step
    return min(steps_per_epoch - 1, round(epoch_step * steps_per_epoch / saved_steps_per_epoch))


# --- fresh or resumed run ------------------------------------------------------------------------


@dataclass
class Resumed:
    """The checkpoint a run continues from."""

    path: Path
    state: dict[str, Any]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value) if value else "(none)"
    return str(value) if value not in ("", None) else repr(value)


def merge_resumed(saved: C, current: C, explicit: set[str] | None, resumable: frozenset[str]) -> C:
    """The saved config, with the explicitly given settings that may change on resume.

    The rule of ``cyclekit train``: a setting the user did not give comes from the checkpoint
    (so ``--digits 3`` survives ``--resume auto``); one they gave that may change (epochs,
    limits, device, where the data and files live, W&B) is taken; one that would make the
    checkpoint mean something else (architecture, data selection, optimiser, seed) and differs
    is refused, with every such flag listed. ``explicit`` None: every field of ``current``.
    """
    old, new = asdict(saved), asdict(current)  # type: ignore[call-overload]
    names = (set(new) if explicit is None else set(explicit) & set(new)) | RESUME_LIMITS
    changes, conflicts = {}, []
    for name in sorted(names):
        if old[name] == new[name]:
            continue
        if name in resumable or name in RESUME_LIMITS:
            changes[name] = new[name]
        else:
            conflicts.append(f"{flag(name)} {_shown(new[name])} (run has {_shown(old[name])})")
    if conflicts:
        raise ConfigError(
            "cannot resume with changed settings: " + "; ".join(conflicts)
            + ". Drop these flags, or start a new run with another --name"
        )  # fmt: skip
    return replace(saved, **changes)  # type: ignore[type-var]


def load_run_checkpoint(path: Path, fmt: str) -> dict[str, Any]:
    """A ``last.pt`` of format ``fmt``, loaded with weights_only=True and version-checked."""
    return check_checkpoint_format(safe_load(path), path, fmt, FORMAT_VERSION)


def config_from_checkpoint(cls: type[C], state: dict[str, Any], path: Path) -> C:
    """The run's config as saved in its checkpoint (keys of older versions are dropped)."""
    values = state.get("config")
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: holds no run config")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in values.items() if k in known})
    except (ConfigError, TypeError, ValueError) as e:  # a damaged or hand-edited file
        raise CheckpointError(f"{path}: its saved config is not usable ({e})") from None


def start_run(
    cfg: C,
    fmt: str,
    resume: str | None,
    overwrite: bool,
    explicit: set[str] | None,
    resumable: frozenset[str],
) -> tuple[C, Resumed | None]:
    """Decide fresh or resumed, and the final config, before anything is written.

    A fresh run over an existing ``last.pt`` needs ``overwrite``; a resumed one gets the
    merged config. Resuming a checkpoint into another run's folder (``--resume PATH --name
    other``) would replace that run's ``last.pt``: refused.
    """
    if resume is not None and overwrite:
        raise ConfigError(
            "--overwrite starts a run afresh and --resume continues one: give only one"
        )
    run_dir = run_folder(cfg)
    if resume is None:
        check_fresh(run_dir, None, overwrite)
        return _preflight(cfg), None
    path = resolve_resume(run_dir, resume)
    if path is None:  # --resume auto with nothing there: a new run (resolve_resume says so)
        return _preflight(cfg), None
    state = load_run_checkpoint(path, fmt)
    saved = config_from_checkpoint(type(cfg), state, path)
    if explicit is not None:
        # Where this invocation keeps runs is its own; with --resume auto so is the name, which
        # picked the folder (it may have been renamed since it was saved).
        explicit = explicit | {"checkpoints_dir"} | ({"name"} if resume == "auto" else set())
    cfg = merge_resumed(saved, cfg, explicit, resumable)
    target = run_folder(cfg) / "last.pt"
    if target.exists() and not _same_file(target, path):
        raise RunFolderError(
            f"{target} holds another run; continuing {path} there would replace it. Pick "
            "another --name"
        )
    return _preflight(cfg), Resumed(path, state)


def _preflight(cfg: C) -> C:
    """What can be refused before anything is written: the run folder's parent, W&B online."""
    from cyclekit.training.tracking import check_wandb_mode

    check_writable_dir(Path(cfg.checkpoints_dir), "--checkpoints-dir", ConfigError)
    check_wandb_mode(cfg.wandb_mode)  # type: ignore[attr-defined]
    return cfg


def run_folder(cfg: Any) -> Path:
    return Path(cfg.checkpoints_dir) / cfg.name


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def clear_old_run(run_dir: Path) -> None:
    """``--overwrite``: the replaced run's grids and GIF go (they would join the new GIF)."""
    for old in [*(run_dir / "samples").glob("step_*.png"), run_dir / "samples.gif"]:
        old.unlink(missing_ok=True)


@contextlib.contextmanager
def hold_run_folder(run_dir: Path) -> Iterator[None]:
    """:class:`RunLock` on ``run_dir`` for the block; a folder that cannot be made is named."""
    lock = RunLock(run_dir)
    with writing(run_dir):
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """A write that fails in the user's file system (read-only, full) names the path."""
    try:
        yield
    except OSError as e:
        raise MnistOutputError(f"{path}: cannot write ({e.strerror or e})") from None


# --- images --------------------------------------------------------------------------------------


def _pixels(images: torch.Tensor, value_range: str) -> torch.Tensor:
    if value_range == "tanh":
        images = images * 0.5 + 0.5
    return images.clamp(0, 1).mul(255).add(0.5).floor().to(torch.uint8)


def _save_image(array: Any, path: Path, mark: str | None) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    fmt = GRID_FORMATS.get(path.suffix.lower(), "PNG")
    options: dict[str, Any] = {}
    if mark and fmt == "PNG":
        options["pnginfo"] = PngInfo()
        options["pnginfo"].add_text("Software", mark)
    elif mark:
        options["comment"] = mark.encode()
    with writing(path), atomic_path(path, suffix=path.suffix or ".png") as tmp:
        Image.fromarray(array, mode="L").save(tmp, format=fmt, **options)


def save_grid(
    images: torch.Tensor,
    path: Path,
    nrow: int = 8,
    value_range: str = "tanh",
    mark: str | None = None,
) -> Path:
    """Save ``(N, 1, H, W)`` images in [-1, 1] (or [0, 1] for ``unit``) as one grayscale grid.

    2-pixel grey borders, ``nrow`` images a row; PNG or JPEG by the suffix; written atomically.
    ``mark`` is recorded in the file (PNG text / JPEG comment).
    """
    from torchvision.utils import make_grid

    grid = make_grid(_pixels(images.cpu(), value_range), nrow=nrow, padding=2, pad_value=128)
    path = Path(path)
    _save_image(grid[0].numpy(), path, mark)
    return path


def save_individual(images: torch.Tensor, folder: Path, mark: str | None = None) -> list[Path]:
    """Save ``(N, 1, 28, 28)`` images in [-1, 1] as ``folder/00000.png`` ... (8-bit grayscale)."""
    pixels = _pixels(images.cpu(), "tanh")[:, 0].numpy()
    paths = individual_paths(folder, len(pixels))
    for p, path in zip(pixels, paths, strict=True):
        _save_image(p, path, mark)
    return paths


def individual_paths(folder: Path, n: int) -> list[Path]:
    return [Path(folder) / f"{i:05d}.png" for i in range(n)]


def save_gif(frames: Sequence[Path], path: Path, ms_per_frame: int = 250) -> Path | None:
    """An animated GIF of the grids over training (the last frame held longer)."""
    from PIL import Image

    if not frames:
        return None
    images = []
    for f in frames:
        with Image.open(f) as im:
            images.append(im.convert("P"))
    durations = [ms_per_frame] * (len(images) - 1) + [ms_per_frame * 8]
    with writing(path), atomic_path(path, suffix=".gif") as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations,
            loop=0, optimize=False,
        )  # fmt: skip
    return Path(path)


# --- `gan sample -o`: what may be written where ---------------------------------------------------


def sample_output_kind(path: Path) -> str:
    """``grid`` for a .png/.jpg/.jpeg name, ``folder`` for a folder or a name without suffix.

    Any other suffix is refused: ``-o out.gif`` must not quietly become a folder named
    out.gif.
    """
    suffix = path.suffix.lower()
    if path.is_dir():
        if suffix in GRID_FORMATS:
            raise UsageError(f"-o {path}: is a folder; give a new file name for the grid")
        return "folder"
    if suffix in GRID_FORMATS:
        return "grid"
    if not suffix:
        return "folder"
    raise UsageError(
        f"-o {path}: cannot write {suffix} files; give a .png or .jpg name for one grid, or a "
        "name without suffix for a folder of PNGs"
    )


def check_replaceable(paths: Sequence[Path], checkpoint: Path) -> None:
    """Refuse (:class:`cyclekit.files.OverwriteError`) when writing any of ``paths`` would
    replace the checkpoint or any existing file that is not an image ``gan sample`` wrote.

    Such a file may be an input, a checkpoint or someone's picture: it is never replaced.
    """
    for path in paths:
        refuse_overwrite(
            path, "-o", inputs=[checkpoint], is_own=written_by_sample,
            own_kind="an image an earlier `cyclekit gan sample` wrote",
        )  # fmt: skip


def written_by_sample(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format == "PNG":
                return im.text.get("Software") == SAMPLE_MARK  # type: ignore[attr-defined]
            return im.info.get("comment") == SAMPLE_MARK.encode()
    except Exception:  # noqa: BLE001 - unreadable or not an image: certainly not ours
        return False


def grid_rows(n: int) -> int:
    """Images per row of a square-ish grid of ``n``."""
    return math.ceil(math.sqrt(n))
