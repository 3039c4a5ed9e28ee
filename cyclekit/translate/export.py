"""Exporting a generator to TorchScript or ONNX, for use without cyclekit.

The exported graph takes (N, C, H, W) in [-1, 1] with any H and W: it reflect-pads to the
generator's side multiple itself and crops back, so callers need not know about it.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cyclekit.errors import CyclekitError
from cyclekit.models import side_multiple

EXPORT_FORMATS = ("onnx", "torchscript", "official")


class ExportError(CyclekitError):
    """An export that cannot be done; ``str()`` is one line for the user."""


class AnySizeGenerator(nn.Module):
    """Pads to a multiple of ``multiple`` (reflect, bottom/right), runs, crops back."""

    def __init__(self, generator: nn.Module, multiple: int) -> None:
        super().__init__()
        self.generator = generator
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        ph = (self.multiple - h % self.multiple) % self.multiple
        pw = (self.multiple - w % self.multiple) % self.multiple
        y = self.generator(F.pad(x, (0, pw, 0, ph), mode="reflect"))
        return y[:, :, :h, :w]


def _atomic_path(dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent)
    os.close(fd)
    return Path(tmp)


def export_generator(
    model: nn.Module, info: dict[str, Any], fmt: str, dst: str | os.PathLike
) -> Path:
    """Write ``model`` (eval mode) as ``fmt`` to ``dst`` atomically; returns ``dst``."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose {', '.join(EXPORT_FORMATS)}")
    dst = Path(dst)
    spec = info["spec"]
    if fmt == "official":
        # A bare state_dict, as the official code's latest_net_G.pth: its test.py loads it with
        # --netG/--ngf/--norm/--no_dropout matching ``spec`` (our keys equal the official ones).
        from cyclekit.files import atomic_save

        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return atomic_save(state, dst)
    wrapped = AnySizeGenerator(model.eval().cpu(), side_multiple(spec["arch"])).eval()
    meta = {
        "cyclekit": json.dumps(
            {
                "spec": spec,
                "direction": info.get("direction"),
                "input": "NCHW float32 in [-1, 1], any H and W",
            }
        )
    }
    tmp = _atomic_path(dst)
    try:
        with warnings.catch_warnings():
            # Known and harmless here, and noise to a user: torch.jit's deprecation notice (it
            # still loads without Python code, the point of an export); the legacy ONNX
            # exporter's deprecation and tracer notices (the onnx extra has no onnxscript,
            # which the new exporter needs; parity tests check that H and W stay dynamic).
            warnings.simplefilter("ignore")
            if fmt == "torchscript":
                scripted = torch.jit.script(wrapped)  # scripted, not traced: H, W stay dynamic
                extra = {"cyclekit.json": meta["cyclekit"]}
                torch.jit.save(scripted, str(tmp), _extra_files=extra)
            else:
                _export_onnx(wrapped, spec, tmp, meta)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def _export_onnx(wrapped: nn.Module, spec: dict[str, Any], tmp: Path, meta: dict[str, str]):
    try:
        import onnx
    except ImportError:
        raise ExportError(
            "ONNX export needs the onnx extra: pip install 'cyclekit[onnx]'"
        ) from None
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
