"""Normalisation layers by name, as the official code's ``get_norm_layer``."""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from cyclekit.choices import NORMS


def norm_layer(name: str) -> Callable[[int], nn.Module]:
    """Return a constructor ``f(num_features) -> nn.Module`` for the norm called ``name``.

    ``instance`` has no affine parameters and no running stats (the official default), so it
    contributes no state_dict keys; ``batch`` is affine with running stats.
    """
    if name == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if name == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    if name == "none":
        return lambda num_features: nn.Identity()
    raise ValueError(f"unknown norm {name!r}; choose one of {', '.join(NORMS)}")


def conv_bias(name: str) -> bool:
    # Batch norm has its own shift, so the official code drops the conv bias only for it.
    # (Official: use_bias = norm is InstanceNorm2d; for 'none' it is False there too.)
    return name == "instance"
