"""Saving and loading generators in every format cyclekit accepts, without architecture flags.

- ``cyclekit-generator``: an exported generator (``G_ab.pt``): its spec + state_dict.
- ``cyclekit-train``: a training checkpoint (``last.pt``): holds both directions.
- an official ``latest_net_G*.pth`` / pretrained ``<name>.pth``: a bare state_dict; the
  architecture (ResNet blocks, ngf, dropout, norm, U-Net depth) is read off its keys.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cyclekit.files import FORMAT_VERSION, CheckpointError, atomic_save, safe_load
from cyclekit.models import generator_from_spec, resnet_variant_from_state

GENERATOR_FORMAT = "cyclekit-generator"
TRAIN_FORMAT = "cyclekit-train"
DIRECTIONS = ("a2b", "b2a")
# Official naming: netG_A maps A->B, netG_B maps B->A.
_DIRECTION_KEYS = {"a2b": "G_ab", "b2a": "G_ba"}


def save_generator(
    path: str | os.PathLike,
    model: nn.Module,
    spec: dict[str, Any],
    direction: str,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write an exported generator that :func:`load_generator` rebuilds with no flags."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": GENERATOR_FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": dict(spec),
        "direction": direction,
        "meta": dict(meta or {}),
        "state_dict": state,
    }
    return atomic_save(payload, path)


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DataParallel / torch.compile wrappers prefix every key.
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def official_spec(state: dict[str, torch.Tensor], source: str = "state_dict") -> dict[str, Any]:
    """Read a generator spec off the keys and shapes of an official state_dict."""
    # ResNet layouts (official CycleGAN, official CUT/FastCUT with anti-aliased sampling, and
    # cyclekit's own variants) are recognised by building each candidate on the meta device.
    try:
        spec = resnet_variant_from_state(state)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None
    if spec is not None:
        return spec
    if "model.model.0.weight" in state:
        depth = 0
        for k in range(1, 16):
            # level k's downconv: the outer block's submodule sits at index 1, inner ones at 3
            if f"model.model.1.model.{'3.model.' * (k - 1)}1.weight" in state:
                depth = k
        num_downs = depth + 1
        if num_downs not in (7, 8):
            raise CheckpointError(f"{source}: U-Net with {num_downs} levels is not supported")
        first = state["model.model.0.weight"]
        outer = state["model.model.3.weight"]  # ConvTranspose2d(2*ngf, output_nc): (in, out, k, k)
        norm = _norm_of(state, "model.model.1.model.2.weight", "model.model.0.bias")
        dropout = False  # dropout layers hold no weights; irrelevant at eval time
        return {
            "arch": f"unet_{2**num_downs}",
            "input_nc": int(first.shape[1]),
            "output_nc": int(outer.shape[1]),
            "ngf": int(first.shape[0]),
            "norm": norm,
            "use_dropout": dropout,
        }
    raise CheckpointError(f"{source}: keys do not look like a CycleGAN generator")


def _norm_of(state: dict[str, torch.Tensor], norm_weight: str, conv_bias: str) -> str:
    # Batch norm has weights; instance norm has none but its convs keep their bias; with no
    # norm at all the official code builds the convs without bias.
    if norm_weight in state:
        return "batch"
    return "instance" if conv_bias in state else "none"


def _drop_stale_instance_norm_keys(state: dict[str, torch.Tensor], model: nn.Module) -> dict:
    # Files saved by PyTorch < 0.4 carry running stats for InstanceNorm layers that have none
    # now; the official loader deletes them too.
    wanted = set(model.state_dict())
    return {
        k: v
        for k, v in state.items()
        if k in wanted
        or k.rsplit(".", 1)[-1] not in ("running_mean", "running_var", "num_batches_tracked")
    }


def _check_spec(spec: Any, source: str) -> None:
    # A checkpoint is untrusted input: refuse odd values before allocating anything.
    if not isinstance(spec, dict) or not isinstance(spec.get("arch"), str):
        raise CheckpointError(f"{source}: generator spec is missing or malformed")
    for key, top in (("ngf", 1024), ("input_nc", 4), ("output_nc", 4)):
        value = spec.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
            raise CheckpointError(f"{source}: generator spec has a bad {key!r}: {value!r}")


def _build(spec: dict[str, Any], state: dict[str, torch.Tensor], source: str) -> nn.Module:
    _check_spec(spec, source)
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: generator weights are missing or malformed")
    try:
        model = generator_from_spec(spec)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: bad generator spec ({e})") from None
    state = _drop_stale_instance_norm_keys(state, model)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{source}: weights do not fit the generator ({first})") from None
    return model.eval()


def load_generator(
    path: str | os.PathLike, direction: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load any supported generator file; returns (model in eval mode on CPU, info dict).

    ``info`` has ``spec``, ``direction`` and ``format`` (``cyclekit-generator``,
    ``cyclekit-train`` or ``official``). A training checkpoint needs ``direction``.
    """
    path = Path(path)
    return generator_from(read_checkpoint(path), path, direction)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents (``weights_only``), once, for :func:`generator_from`: a
    training checkpoint holds optimisers and discriminators too, and is slow to read twice."""
    if _is_torchscript(path):
        # torch.load would warn, hand it to torch.jit.load (which runs its code) and fail.
        raise CheckpointError(
            f"{path}: a TorchScript file (an export, which runs without cyclekit); give the "
            "checkpoint it was exported from"
        )
    obj = safe_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a generator checkpoint (holds a {type(obj).__name__})")
    return obj


def generator_from(
    obj: dict[str, Any], path: Path, direction: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`load_generator` on contents already read by :func:`read_checkpoint`."""
    try:
        return _load_any(obj, path, direction)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: malformed checkpoint ({type(e).__name__}: {e})") from None


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n or n.endswith("/constants.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _load_any(
    obj: dict[str, Any], path: Path, direction: str | None
) -> tuple[nn.Module, dict[str, Any]]:
    fmt = obj.get("format")
    if fmt == GENERATOR_FORMAT:
        _check_version(obj, path)
        if direction is not None and obj.get("direction") not in (None, direction):
            raise CheckpointError(
                f"{path}: this generator translates {obj.get('direction')}, not {direction}"
            )
        model = _build(obj["spec"], obj["state_dict"], str(path))
        info = {"format": fmt, "spec": obj["spec"], "direction": obj.get("direction")}
        return model, info
    if fmt == TRAIN_FORMAT:
        _check_version(obj, path)
        if set(obj["specs"]) == {"G_ab"}:
            # A one-sided model (CUT, FastCUT) learns A -> B only.
            model_name = str((obj.get("config") or {}).get("model", "one-sided"))
            if direction == "b2a":
                raise CheckpointError(
                    f"{path}: a {model_name} model translates one way only (A to B); "
                    "--direction b2a needs a model trained the other way round, or a CycleGAN"
                )
            direction = "a2b"
        if direction not in DIRECTIONS:
            raise CheckpointError(
                f"{path}: a training checkpoint holds both generators; pass --direction a2b or b2a"
            )
        key = _DIRECTION_KEYS[direction]
        spec = obj["specs"][key]
        model = _build(spec, obj["models"][key], str(path))
        return model, {"format": fmt, "spec": spec, "direction": direction}
    if fmt is not None:
        raise CheckpointError(f"{path}: unknown checkpoint format {fmt!r}")
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a generator state_dict")
    state = _strip_prefixes(obj)
    spec = official_spec(state, str(path))
    model = _build(spec, state, str(path))
    return model, {"format": "official", "spec": spec, "direction": direction}


def _check_version(obj: dict[str, Any], path: Path) -> None:
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this cyclekit "
            f"understands ({FORMAT_VERSION}); upgrade cyclekit"
        )
