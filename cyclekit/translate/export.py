"""Exporting a generator to TorchScript, ONNX or an official-style state_dict.

The exported TorchScript and ONNX graphs take (N, C, H, W) in [-1, 1] with any H and W (1x1
included): they pad to a size the generator accepts exactly as ``cyclekit translate`` does
(reflecting the image as often as needed, bottom and right), run, and crop back, so callers
need not know about side multiples. The official format is a bare state_dict for the official
code, which does its own resizing.

An export never replaces its own checkpoint, a training checkpoint, or any file that is not an
earlier export in the same format.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cyclekit.errors import CyclekitError
from cyclekit.files import (
    OverwriteError,
    atomic_path,
    atomic_save,
    refuse_overwrite,
)

EXPORT_FORMATS = ("onnx", "torchscript", "official")


class ExportError(CyclekitError):
    """An export that cannot be done; ``str()`` is one line for the user."""


def _reflect_index(n: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Source index of each of ``total`` positions along a side of ``n`` pixels, reflected as
    often as needed: numpy's "reflect" padding (period 2(n-1)), which translate uses, for pads
    of any length; a 1-pixel side is repeated."""
    i = torch.arange(total)
    period = torch.clamp(2 * n - 2, min=1)
    r = torch.remainder(i, period)
    return torch.where(r < n, r, period - r)


class AnySizeGenerator(nn.Module):
    """Pads to a size the generator takes (a multiple of ``multiple``, at least ``smallest``),
    runs, crops back. Sizes are read as tensors so that the ONNX graph stays dynamic too."""

    def __init__(self, generator: nn.Module, multiple: int, smallest: int) -> None:
        super().__init__()
        self.generator = generator
        self.multiple = multiple
        self.smallest = smallest

    def _padded(self, n: torch.Tensor) -> torch.Tensor:
        m = self.multiple
        return torch.clamp(torch.div(n + m - 1, m, rounding_mode="floor") * m, min=self.smallest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = torch._shape_as_tensor(x)  # traced as Shape in ONNX, plain ints under script
        h, w = size[2], size[3]
        rows = _reflect_index(h, self._padded(h)).to(x.device)
        cols = _reflect_index(w, self._padded(w)).to(x.device)
        y = self.generator(x.index_select(2, rows).index_select(3, cols))
        return y[:, :, : x.shape[2], : x.shape[3]]


def any_size(model: nn.Module, spec: dict[str, Any]) -> AnySizeGenerator:
    """``model`` (eval mode) wrapped to take any H and W, as the exported graphs do."""
    from cyclekit.translate.batching import geometry

    return AnySizeGenerator(model.eval(), *geometry(spec)).eval()


# -- which existing files an export may replace -----------------------------------------------


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (OSError, zipfile.BadZipFile):
        return []


def _is_torchscript_export(path: Path) -> bool:
    return any(name.endswith("/extra/cyclekit.json") for name in _zip_names(path))


def _is_onnx_export(path: Path) -> bool:
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX at all (the parser raises several types)
        return False
    return any(p.key == "cyclekit" for p in proto.metadata_props)


def _is_official_export(path: Path) -> bool:
    # A bare generator state_dict: what this export writes, and what the official code saves.
    from cyclekit.files import CheckpointError, safe_load
    from cyclekit.generator_io import official_spec

    if any("/code/" in name for name in _zip_names(path)):
        return False  # TorchScript (torch.load would warn and hand it to torch.jit.load)
    try:
        state = safe_load(path)
        if not isinstance(state, dict) or not all(
            isinstance(v, torch.Tensor) for v in state.values()
        ):
            return False
        official_spec(state)
    except CheckpointError:
        return False
    return True


_IS_EXPORT = {
    "torchscript": (_is_torchscript_export, "a cyclekit TorchScript export"),
    "onnx": (_is_onnx_export, "a cyclekit ONNX export"),
    "official": (_is_official_export, "an official-format generator file"),
}


def check_export_target(
    dst: str | os.PathLike, fmt: str, checkpoint: str | os.PathLike | None = None
) -> Path:
    """Refuse (:class:`ExportError`) an output that is the checkpoint being exported, a folder,
    or an existing file other than an earlier export in format ``fmt``."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose {', '.join(EXPORT_FORMATS)}")
    is_own, kind = _IS_EXPORT[fmt]
    try:
        return refuse_overwrite(
            dst,
            "-o",
            inputs=[checkpoint] if checkpoint is not None else [],
            is_own=is_own,
            own_kind=kind,
        )
    except OverwriteError as e:
        raise ExportError(str(e)) from None


def export_generator(
    model: nn.Module, info: dict[str, Any], fmt: str, dst: str | os.PathLike
) -> Path:
    """Write ``model`` (eval mode) as ``fmt`` to ``dst`` atomically; returns ``dst``.

    Checks ``dst`` first with :func:`check_export_target` (``info["path"]``, when present,
    is the checkpoint the model came from)."""
    dst = check_export_target(dst, fmt, info.get("path"))
    try:
        return _write_export(model, info, fmt, dst)
    except OSError as e:  # the user's file system: read-only folder, disk full
        raise ExportError(f"-o {dst}: cannot write ({e.strerror or e})") from None


def _write_export(model: nn.Module, info: dict[str, Any], fmt: str, dst: Path) -> Path:
    spec = info["spec"]
    if fmt == "official":
        # A bare state_dict, as the official code's latest_net_G.pth: its test.py loads it with
        # --netG/--ngf/--norm/--no_dropout matching ``spec`` (our keys equal the official ones).
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        atomic_save(state, dst)
        return dst
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ExportError(
                "ONNX export needs the onnx extra: pip install 'cyclekit[onnx]'"
            ) from None
    wrapped = any_size(model.cpu(), spec)
    meta = json.dumps(
        {
            "spec": spec,
            "direction": info.get("direction"),
            "input": "NCHW float32 in [-1, 1], any H and W",
        }
    )
    with atomic_path(dst, suffix=".partial") as tmp, warnings.catch_warnings():
        # Known and harmless here, and noise to a user: torch.jit's deprecation notice (it
        # still loads without Python code, the point of an export); the legacy ONNX
        # exporter's deprecation and tracer notices (the onnx extra has no onnxscript,
        # which the new exporter needs; parity tests check that H and W stay dynamic).
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            scripted = torch.jit.script(wrapped)  # scripted, not traced: H, W stay dynamic
            torch.jit.save(scripted, str(tmp), _extra_files={"cyclekit.json": meta})
        else:
            _export_onnx(wrapped, spec, tmp, {"cyclekit": meta})
    return dst


def _export_onnx(wrapped: nn.Module, spec: dict[str, Any], tmp: Path, meta: dict[str, str]) -> None:
    import onnx

    x = torch.zeros(1, spec["input_nc"], 64, 96)
    torch.onnx.export(
        wrapped,
        (x,),
        str(tmp),
        input_names=["image"],
        output_names=["translated"],
        dynamic_axes={
            "image": {0: "batch", 2: "height", 3: "width"},
            "translated": {0: "batch", 2: "height", 3: "width"},
        },
        opset_version=17,
        dynamo=False,
    )
    proto = onnx.load(str(tmp))
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(tmp))
