"""The official pretrained CycleGAN generators, by name: downloaded once into a user cache.

The names and the URL pattern are those of the official ``scripts/download_cyclegan_model.sh``
(junyanz/pytorch-CycleGAN-and-pix2pix). ``CYCLEKIT_PRETRAINED_URL`` replaces the base URL (a
mirror, or a local test server). Files go to ``pretrained/`` in cyclekit's cache folder
(:func:`cyclekit.files.cache_dir`: ``$CYCLEKIT_CACHE``, else ``$XDG_CACHE_HOME/cyclekit``, else
``~/.cache/cyclekit``).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from cyclekit import files
from cyclekit.errors import CyclekitError

OFFICIAL_BASE_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models"
PRETRAINED_MODELS = (
    "apple2orange",
    "orange2apple",
    "summer2winter_yosemite",
    "winter2summer_yosemite",
    "horse2zebra",
    "zebra2horse",
    "monet2photo",
    "style_monet",
    "style_cezanne",
    "style_ukiyoe",
    "style_vangogh",
    "sat2map",
    "map2sat",
    "cityscapes_photo2label",
    "cityscapes_label2photo",
    "facades_photo2label",
    "facades_label2photo",
    "iphone2dslr_flower",
)


class PretrainedError(CyclekitError):
    """A pretrained model that cannot be had; ``str()`` says what to do instead."""


def base_url() -> str:
    return os.environ.get("CYCLEKIT_PRETRAINED_URL", OFFICIAL_BASE_URL).rstrip("/")


def model_url(name: str) -> str:
    return f"{base_url()}/{name}.pth"


def cache_dir() -> Path:
    return files.cache_dir("pretrained")


def cached_path(name: str) -> Path:
    return cache_dir() / f"{name}.pth"


def _check_checkpoint(path: Path) -> None:
    from cyclekit.files import CheckpointError, safe_load

    try:
        safe_load(path)
    except CheckpointError:
        raise OSError("the server sent something that is not a PyTorch checkpoint") from None


def fetch_pretrained(name: str, progress: bool = True, timeout: float = 30.0) -> Path:
    """Path of the cached ``<name>.pth``, downloading it first if needed.

    The download goes to a temporary name and is renamed only once complete, so an
    interrupted download is never mistaken for a model.
    """
    if name.lower() not in PRETRAINED_MODELS:
        raise PretrainedError(
            f"unknown pretrained model {name!r}; choose one of: {', '.join(PRETRAINED_MODELS)}"
        )
    name = name.lower()  # --model Horse2Zebra is horse2zebra, as every other choice
    dst = cached_path(name)
    if dst.is_file() and dst.stat().st_size > 0:
        return dst
    url = model_url(name)
    try:
        with (
            files.atomic_path(dst, suffix=".download") as tmp,
            urllib.request.urlopen(url, timeout=timeout) as resp,
            open(tmp, "wb") as f,
        ):
            total = int(resp.headers.get("Content-Length") or 0) or None
            bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=f"downloading {name}",
                disable=not progress,
                leave=False,
            )
            with bar:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
            if total is not None and f.tell() != total:
                raise OSError(f"connection closed after {f.tell()} of {total} bytes")
            f.flush()
            _check_checkpoint(tmp)  # a proxy's HTML error page must not be cached as the model
    except (urllib.error.URLError, OSError, ValueError) as e:
        # ValueError: a malformed URL in CYCLEKIT_PRETRAINED_URL or header from the server.
        reason = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", None) or e
        raise PretrainedError(
            f"cannot download pretrained model {name!r} from {url} ({reason}). "
            f"Without internet access, download that file on another machine and save it as "
            f"{dst} (or pass it with --checkpoint)."
        ) from None
    return dst
