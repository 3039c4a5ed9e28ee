"""A generator that ``cyclekit translate`` can run without importing torch.

Importing torch takes 1.2-2 s on a 2-core CPU, more than the model needs for a dozen photos on
OpenVINO. So when a checkpoint's OpenVINO conversion is already cached, translate starts from
an index kept beside those conversions instead of reading the checkpoint: the index maps the
checkpoint file's bytes (and the ``--direction`` asked for) to what loading it gave (spec,
direction, format) and to its conversion's name. The torch modules then load only if something
needs them: a tiled image, a video, a fallback to torch.

The index is written by a run that loaded the checkpoint the usual way and made its OpenVINO
runner (:func:`remember`), so a file that would not load never gets an entry: the errors a
user sees for a bad checkpoint are the same either way.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DeferredGenerator:
    """The generator in ``path``, known from the index; :meth:`load` reads the file."""

    path: Path
    direction: str | None  # as asked for on the command line
    info: dict[str, Any]  # what generator_io.load_generator gave: spec, direction, format
    weights_key: str  # the name of its cached OpenVINO conversion (backends.weights_key)
    key: str  # file_key of the file when the run started
    _module: Any = field(default=None, repr=False)

    def load(self) -> Any:
        """The torch generator (eval mode, CPU), read from the file once; a file that changed
        since the run started is an error (its whole images ran with the indexed weights)."""
        if self._module is None:
            from cyclekit.errors import CyclekitError
            from cyclekit.generator_io import load_generator

            module, _ = load_generator(self.path, self.direction)
            if file_key(self.path, self.direction) != self.key:
                raise CyclekitError(
                    f"{self.path}: the checkpoint changed during the run; run again"
                )
            self._module = module
        return self._module


def torch_module(model: Any) -> Any:
    """``model``'s torch modules: loaded now for a :class:`DeferredGenerator`."""
    return model.load() if isinstance(model, DeferredGenerator) else model


def file_key(path: Path, direction: str | None) -> str:
    """A hash of the file's bytes, the direction asked for and cyclekit's version (a new
    version may read a checkpoint differently)."""
    from cyclekit import __version__

    h = hashlib.sha256(f"{__version__}\n{direction}\n".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:32]


def _entry_path(folder: Path, key: str) -> Path:
    return folder / "checkpoints" / f"{key}.json"


def remember(folder: Path, key: str, info: dict[str, Any], weights_key: str) -> None:
    """Note in ``folder`` (the OpenVINO cache) that the file whose :func:`file_key` is ``key``
    loads as ``info`` and converts to ``weights_key``. Best effort: a cache that cannot be
    written only costs the next start."""
    from cyclekit.files import atomic_write

    entry = {
        "weights_key": weights_key,
        "info": {k: info[k] for k in ("format", "spec", "direction")},
    }
    try:
        target = _entry_path(folder, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, "w") as f:
            json.dump(entry, f, sort_keys=True)
    except (OSError, TypeError, ValueError):  # unwritable cache, a spec JSON cannot hold
        pass


def recall(
    folder: Path, path: Path, direction: str | None, key: str | None = None
) -> DeferredGenerator | None:
    """The generator in ``path`` (whose :func:`file_key` is ``key``, computed if not given)
    from the index in ``folder``, if it is there and its conversion is too; else None (then
    the file is loaded the usual way)."""
    try:
        if not path.is_file():
            return None
        key = key or file_key(path, direction)
        entry = json.loads(_entry_path(folder, key).read_text())
        entry_key, info = entry["weights_key"], entry["info"]
        spec = info["spec"]
        if not (isinstance(entry_key, str) and isinstance(spec, dict) and "arch" in spec):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(os.path.isfile(folder / f"{entry_key}{ext}") for ext in (".xml", ".bin")):
        return None
    return DeferredGenerator(Path(path), direction, {**info, "path": Path(path)}, entry_key, key)
