"""The official CycleGAN datasets: the registry, a resumable download, and safe extraction.

Only the standard library talks HTTP (urllib). The archive is checked (a zip whose CRCs match),
every entry is vetted before anything is written (no absolute paths, no ``..``, no symlinks), it
is extracted into a temporary folder beside the target and renamed into place at the end, so an
interrupted or refused download never leaves a half dataset behind.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cyclekit.errors import CyclekitError

# The official download script's host. Tests (and mirrors) point this elsewhere.
DEFAULT_BASE_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets"
URL_ENV = "CYCLEKIT_DATASETS_URL"
CHUNK = 1 << 16


class DatasetError(CyclekitError):
    """A download, archive or dataset-folder problem; ``str()`` is one line naming the URL or
    file."""


class DatasetExistsError(DatasetError):
    """The dataset folder is already there (and ``force`` was not given)."""


@dataclass(frozen=True)
class OfficialDataset:
    description: str
    approx_size: str  # of the zip, as a human reads it; a guide, not a check
    manual: str | None = None  # set when it cannot be downloaded from the official host
    needs: tuple[str, ...] = ("trainA", "trainB")  # folders the unpacked dataset must have


CITYSCAPES_HOWTO = (
    "cityscapes cannot be redistributed (license): register at https://www.cityscapes-dataset.com,"
    " download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip, and arrange the photos"
    " as {root}/cityscapes/trainA (or testA) and the label images as trainB (testB)"
    " (the official repo's datasets/prepare_cityscapes_dataset.py does this)"
)

OFFICIAL: dict[str, OfficialDataset] = {
    "apple2orange": OfficialDataset("apples <-> oranges (ImageNet photos)", "~75 MB"),
    "summer2winter_yosemite": OfficialDataset("Yosemite in summer <-> winter (Flickr)", "~130 MB"),
    "horse2zebra": OfficialDataset("horses <-> zebras (ImageNet photos)", "~115 MB"),
    "monet2photo": OfficialDataset("Monet paintings <-> landscape photos", "~290 MB"),
    "cezanne2photo": OfficialDataset("Cezanne paintings <-> landscape photos", "~270 MB"),
    "ukiyoe2photo": OfficialDataset("Ukiyo-e prints <-> landscape photos", "~280 MB"),
    "vangogh2photo": OfficialDataset("Van Gogh paintings <-> landscape photos", "~290 MB"),
    "maps": OfficialDataset("aerial photos <-> Google Maps tiles", "~1.4 GB"),
    "cityscapes": OfficialDataset(
        "street photos <-> semantic label maps", "~11 GB", manual=CITYSCAPES_HOWTO
    ),
    "facades": OfficialDataset("building facades <-> label maps (CMP)", "~35 MB"),
    "iphone2dslr_flower": OfficialDataset("iPhone <-> DSLR flower photos (shallow DoF)", "~320 MB"),
    "ae_photos": OfficialDataset(
        "a few photos to try the pretrained models on (no training split)",
        "~10 MB",
        needs=(),
    ),
    "grumpifycat": OfficialDataset("cat faces <-> Grumpy Cat", "~20 MB"),
    "mini": OfficialDataset("a tiny subset for smoke tests", "~2 MB"),
}


def base_url() -> str:
    return os.environ.get(URL_ENV, DEFAULT_BASE_URL).rstrip("/")


def dataset_url(name: str) -> str:
    return f"{base_url()}/{name}.zip"


def is_present(root: str | os.PathLike, name: str) -> bool:
    """True when ``root/name`` looks unpacked: it has the folders the dataset needs."""
    folder = Path(root) / name
    needs = OFFICIAL[name].needs if name in OFFICIAL else ("trainA", "trainB")
    return folder.is_dir() and all((folder / sub).is_dir() for sub in needs)


def manual_layout(root: str | os.PathLike, name: str) -> str:
    r = Path(root) / name
    return f"{r}/trainA, {r}/trainB (and optionally {r}/testA, {r}/testB) holding the images"


# ------------------------------------------------------------------------------------------------
# Download


def _offline_reason(err: BaseException) -> str | None:
    """A short reason when ``err`` means "the host cannot be reached", else None."""
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, socket.gaierror):
        return "host not found (offline?)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, OSError):
        return reason.strerror or str(reason)
    return None


def download(url: str, dest: Path, progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest``, resuming ``dest.part`` when the server honours HTTP Range.

    The file appears at ``dest`` only once complete (``.part`` + ``os.replace``). Raises
    :class:`DatasetError` for HTTP errors; network failures propagate as ``OSError``.

    Not :func:`cyclekit.files.atomic_path`: its temporary file vanishes on failure, while here
    the partial file must survive an interruption, under a fixed name, so that the next run
    resumes it.
    """
    from tqdm import tqdm

    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "cyclekit"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            # Nothing left to send: the .part is already whole (the zip check decides).
            os.replace(part, dest)
            return dest
        raise DatasetError(f"{url}: HTTP {e.code} {e.reason}") from None
    with resp:
        if have and resp.status != 206:
            have = 0  # the server ignored Range and sends everything: start over
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        with (
            open(part, "ab" if have else "wb") as f,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not progress,
            ) as bar,
        ):
            try:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
            except http.client.IncompleteRead as e:  # the server hung up early: keep what came
                f.write(e.partial)
    got = part.stat().st_size
    if total is not None and got != total:
        raise DatasetError(
            f"{url}: connection closed at {got} of {total} bytes; run again to resume"
        )
    os.replace(part, dest)
    return dest


# ------------------------------------------------------------------------------------------------
# Archive checks and extraction


def check_zip(path: Path) -> None:
    """Raise :class:`DatasetError` unless ``path`` is a readable zip whose CRCs all match."""
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{path}: not a zip archive (corrupt or incomplete download)")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise DatasetError(f"{path}: corrupt zip archive ({e})") from None
    if bad is not None:
        raise DatasetError(f"{path}: corrupt zip archive (CRC mismatch in {bad})")


def unsafe_member(info: zipfile.ZipInfo) -> str | None:
    """Why extracting this entry could write outside the target folder, or None if it is safe."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "'..' in the path"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link"
    return None


def safe_extract(zip_path: Path, dest: Path) -> None:
    """Extract ``zip_path`` into ``dest`` after vetting every entry; refuse the whole archive
    (writing nothing) if any entry is unsafe."""
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
        for info in infos:
            why = unsafe_member(info)
            if why:
                raise DatasetError(
                    f"{zip_path}: refusing archive, entry {info.filename!r} is unsafe ({why})"
                )
        dest_real = dest.resolve()
        for info in infos:
            # Belt and braces: the resolved destination must stay inside dest.
            out = (dest / info.filename.replace("\\", "/")).resolve()
            if out != dest_real and dest_real not in out.parents:
                raise DatasetError(f"{zip_path}: refusing archive, {info.filename!r} escapes")
            zf.extract(info, dest)


def _dataset_folder(extracted: Path, name: str) -> Path:
    """The official zips hold ``name/trainA ...``; accept a bare ``trainA ...`` too."""
    entries = [p for p in extracted.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if (extracted / name).is_dir():
        return extracted / name
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return extracted


def download_dataset(
    name: str,
    root: str | os.PathLike = "datasets",
    force: bool = False,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download, check and unpack official dataset ``name`` into ``root/name``; return it.

    Raises :class:`DatasetError` (one line, with the URL and what to do) on any failure, and
    :class:`DatasetExistsError` when the dataset is already there and not ``force``.
    """
    if name not in OFFICIAL:
        raise DatasetError(f"unknown dataset {name!r}; choose from {', '.join(OFFICIAL)}")
    root = Path(root)
    entry, target = OFFICIAL[name], root / name
    if entry.manual:
        raise DatasetError(entry.manual.format(root=root))
    if target.exists() and not force:
        raise DatasetExistsError(f"{target} already exists (use --force to download it again)")
    make_root(root)
    url, zip_path = dataset_url(name), root / f"{name}.zip"
    try:
        if not zip_path.exists():
            download(url, zip_path, progress=progress, timeout=timeout)
    except (OSError, urllib.error.URLError) as e:
        reason = _offline_reason(e) or str(e)
        part = zip_path.with_name(zip_path.name + ".part")
        resume = " (run again to resume)" if part.exists() else ""
        raise DatasetError(
            f"cannot download {url}: {reason}{resume}. To install it by hand, download that zip "
            f"and unpack it so that there are {manual_layout(root, name)}"
        ) from None
    try:
        check_zip(zip_path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".extract", dir=root))
        try:
            safe_extract(zip_path, tmp)
            folder = _dataset_folder(tmp, name)
            missing = [sub for sub in entry.needs if not (folder / sub).is_dir()]
            if missing:
                raise DatasetError(f"{url}: the archive has no {', '.join(missing)} folder")
            replace_dir(folder, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except DatasetError:
        zip_path.unlink(missing_ok=True)  # a bad archive must not be reused by the next run
        raise
    except OSError as e:  # disk full, permissions: the zip is fine, keep it for the next run
        raise DatasetError(
            f"{root}: cannot unpack {zip_path.name} ({e.strerror or e}); free some space and "
            "run again (the downloaded zip is kept)"
        ) from None
    zip_path.unlink(missing_ok=True)
    return target


def make_root(root: Path) -> None:
    """Create the datasets folder; a file in the way or no permission is a one-line error."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"--root {root}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise DatasetError(f"--root {root}: folder is not writable")


def replace_dir(new: Path, target: Path) -> None:
    """Rename folder ``new`` to ``target``; an existing ``target`` is moved aside first and then
    deleted, so ``target`` is at every moment either the old complete folder or the new one."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
