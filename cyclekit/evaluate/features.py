"""Image features for FID and KID: the FID Inception network, and a weight-free stand-in.

FID and KID are only comparable between papers and tools when they are computed on the same
features: the 2048-d pool features of the TensorFlow Inception graph of 2015-12-05 that the
original FID code used, fed 299x299 images resized the way TensorFlow 1 resized them. The
network here is torch-fidelity's port of that graph (torchmetrics computes FID on the very
same module), loaded with the ported weights, 95.6 MB, downloaded once into cyclekit's cache
(:func:`cyclekit.files.cache_dir`: ``$CYCLEKIT_CACHE``, else ``$XDG_CACHE_HOME/cyclekit``, else
``~/.cache/cyclekit``) and checked against their sha256 every time they are loaded.
``CYCLEKIT_INCEPTION_URL`` replaces the download address (a mirror, or a test server).

Every extractor takes a batch of uint8 images, (N, H, W, C) with C = 3 (or 1, repeated to
RGB), any H and W, and returns (N, D) float64 features: see :class:`Extractor`.
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cyclekit import files
from cyclekit.evaluate import EvalError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
# The file torch-fidelity publishes; byte for byte the one pytorch-fid publishes as
# pt_inception-2015-12-05-6726825d.pth (the name ends in the first digits of its sha256).
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INCEPTION_BYTES = 95_628_359
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
)
URL_ENV = "CYCLEKIT_INCEPTION_URL"


class Extractor(Protocol):
    """What the metrics need from a feature network."""

    dims: int

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 -> (N, dims) float64."""
        ...

    def protocol(self) -> dict[str, Any]:
        """What to record beside the numbers: the network, its weights' sha256, its input."""
        ...


# -- the weights file ------------------------------------------------------------------------


def weights_url() -> str:
    return os.environ.get(URL_ENV) or INCEPTION_URL


def weights_path() -> Path:
    return files.cache_dir("inception") / INCEPTION_FILE


def _offline_hint(dst: Path) -> str:
    return (
        f"Without internet access, download {INCEPTION_FILE} ({INCEPTION_BYTES / 1e6:.1f} MB, "
        f"sha256 {INCEPTION_SHA256}) from {INCEPTION_URL} on another machine and save it as "
        f"{dst}"
    )


def fetch_weights(
    url: str | None = None,
    dst: Path | None = None,
    sha256: str = INCEPTION_SHA256,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Path of the cached weights file, downloading it first if it is not there.

    The download goes to a temporary name beside ``dst`` and is renamed only once complete and
    of the right sha256, so neither an interrupted download nor a proxy's error page is ever
    taken for the weights. A file already at ``dst`` is returned as it is: :func:`read_weights`
    checks its hash when it is loaded. Raises :class:`EvalError` (one line: the URL, and the
    file and path to put it by hand) when the download fails.
    """
    from tqdm import tqdm

    url = url or weights_url()
    dst = dst or weights_path()
    if dst.is_file():
        return dst
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        files.check_writable_dir(dst.parent, "cache folder", EvalError)
    except OSError as e:
        raise EvalError(
            f"cache folder {dst.parent}: cannot be created ({e.strerror or e}); set "
            "CYCLEKIT_CACHE to a writable folder"
        ) from None
    digest = hashlib.sha256()
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
                desc="downloading the FID Inception weights",
                disable=not progress,
                leave=False,
            )
            with bar:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if total is not None and f.tell() != total:
                raise OSError(f"connection closed after {f.tell()} of {total} bytes")
            if digest.hexdigest() != sha256:
                # Raised inside atomic_path: the temporary file is removed, nothing is cached.
                raise EvalError(
                    f"{url}: the file downloaded has sha256 {digest.hexdigest()}, not {sha256} "
                    f"(the FID Inception weights); it was not kept. {_offline_hint(dst)}"
                )
    except (urllib.error.URLError, OSError, ValueError) as e:
        # ValueError: a malformed CYCLEKIT_INCEPTION_URL, or a bad header from the server.
        reason = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", None) or e
        raise EvalError(
            f"cannot download the FID Inception weights from {url} ({reason}). {_offline_hint(dst)}"
        ) from None
    return dst


def read_weights(path: Path, sha256: str = INCEPTION_SHA256) -> dict[str, Any]:
    """The state dict in ``path``, after checking the sha256 of the very bytes loaded.

    Loaded with ``weights_only=True``, like every file cyclekit reads."""
    import torch

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise EvalError(f"{path}: cannot read the FID Inception weights ({e.strerror})") from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise EvalError(
            f"{path}: sha256 {got} is not that of the FID Inception weights ({sha256}); "
            "delete the file (it is downloaded again) or put the right one there"
        )
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EvalError(f"{path}: not a state dict of tensors")
    return state


# -- extractors -----------------------------------------------------------------------------


def _nchw(images: np.ndarray) -> Any:
    import torch

    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        raise ValueError(f"expected (N, H, W, 1 or 3) uint8 images, got {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class InceptionExtractor:
    """The FID Inception network's 2048-d pool features (torch-fidelity's module), in fp32."""

    dims = 2048

    def __init__(self, weights: Path, device: Any = "cpu", sha256: str = INCEPTION_SHA256) -> None:
        import torch
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        state = read_weights(weights, sha256)
        # torch-fidelity reads its weights with torch.load(weights_only=False). It is handed
        # bytes written here from the tensors just loaded with weights_only=True, never the
        # file itself.
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        del state
        net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=buf
        )
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.weights = Path(weights)
        self.sha256 = sha256

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            (features,) = self.net(_nchw(images).to(self.device))
        return features.double().cpu().numpy()

    def protocol(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {
            "feature_extractor": "InceptionV3, the TensorFlow FID graph of 2015-12-05, 2048-d "
            f"pool features (torch-fidelity {version('torch-fidelity')}, fp32)",
            "weights_file": self.weights.name,
            "weights_sha256": self.sha256,
            "extractor_input": "uint8 RGB, resized inside the network to 299x299 by "
            "TensorFlow-1-compatible bilinear interpolation",
        }


class PixelStatsExtractor:
    """A stand-in with no weights: per-channel mean and spread, and a 4x4 thumbnail.

    For tests and dry runs only: its "FID" is comparable with nothing published."""

    dims = 54

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = _nchw(images).double() / 255.0
        thumb = F.adaptive_avg_pool2d(x, 4).flatten(1)
        stats = [x.mean((2, 3)), x.std((2, 3), unbiased=False)]
        return torch.cat([thumb, *stats], dim=1).numpy()

    def protocol(self) -> dict[str, Any]:
        return {
            "feature_extractor": "stand-in: pixel statistics (for tests; comparable with "
            "nothing published)",
            "weights_file": None,
            "weights_sha256": None,
            "extractor_input": "uint8 RGB at the evaluation size",
        }


def load_inception(device: Any = "cpu", progress: bool = True) -> InceptionExtractor:
    """The FID Inception extractor on ``device``, its weights downloaded first if needed."""
    return InceptionExtractor(fetch_weights(progress=progress), device)


def extract(images: np.ndarray, extractor: Extractor, batch_size: int = 32) -> np.ndarray:
    """Features of (N, H, W, C) uint8 images, ``batch_size`` at a time: (N, D) float64."""
    if len(images) == 0:
        return np.zeros((0, extractor.dims))
    return np.concatenate(
        [extractor(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )
