"""Weight initialisation as the official ``init_weights``, but from an explicit generator."""

from __future__ import annotations

import torch
from torch import nn

from cyclekit.choices import INITS


def init_weights(
    net: nn.Module,
    init_type: str = "normal",
    gain: float = 0.02,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Initialise conv/linear weights by ``init_type`` (biases 0); batch-norm weights N(1, gain).

    Call on CPU parameters: the same ``generator`` seed then gives the same weights on any device.
    """
    if init_type not in INITS:
        raise ValueError(f"unknown init {init_type!r}; choose one of {', '.join(INITS)}")
    for m in net.modules():
        weight = getattr(m, "weight", None)
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init_type == "normal":
                nn.init.normal_(weight, 0.0, gain, generator=generator)
            elif init_type == "xavier":
                nn.init.xavier_normal_(weight, gain=gain, generator=generator)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(weight, a=0, mode="fan_in", generator=generator)
            else:
                nn.init.orthogonal_(weight, gain=gain, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(weight, 1.0, gain, generator=generator)
            nn.init.zeros_(m.bias)
    return net
