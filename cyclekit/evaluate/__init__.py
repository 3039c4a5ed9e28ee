"""Scoring translations: FID and KID on Inception features, SSIM structure, ``cyclekit eval``.

- :mod:`cyclekit.evaluate.features`: the FID Inception network (weights downloaded once into
  the cyclekit cache, sha256-checked) and a weight-free stand-in for tests;
- :mod:`cyclekit.evaluate.metrics`: FID, KID and SSIM on in-memory features and images,
  cheap enough to call during training;
- :mod:`cyclekit.evaluate.run`: translate test folders with a checkpoint (or read two plain
  folders), compute everything, the table and the JSON.
"""

from __future__ import annotations

from cyclekit.errors import CyclekitError


class EvalError(CyclekitError):
    """An evaluation that cannot run as asked; the message names the flag, folder or file."""
