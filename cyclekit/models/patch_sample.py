"""CUT's sample head (the official ``PatchSampleF`` with ``use_mlp=True``): picks the same
random spatial positions in the encoder features of the input and of the output, passes each
picked feature through a small per-layer MLP and L2-normalises it for PatchNCE.

Unlike the official head, every random draw comes from a ``torch.Generator`` the caller passes
in (positions) or seeds (the lazily built MLPs' initial weights), so a run can be replayed and
resumed bit for bit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cyclekit.models.init import init_weights


def l2_normalize(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Rows of ``x`` divided by their L2 norm plus ``eps`` (the official ``Normalize(2)``).

    The official norm, ``x.pow(2).sum(1).pow(0.5)``, has an infinite derivative at a zero row
    (a patch whose hidden ReLUs are all off), which turns the step's gradients to NaN for
    good. Here the square root is taken of nonzero sums only: the same values, bit for bit,
    and a zero derivative of the norm at a zero row.
    """
    sq = x.pow(2).sum(1, keepdim=True)
    nonzero = sq > 0
    norm = torch.where(nonzero, torch.where(nonzero, sq, 1.0).pow(0.5), 0.0)
    return x / (norm + eps)


class PatchSampleMLP(nn.Module):
    """Per layer: Linear(C, nc), ReLU, Linear(nc, nc), on ``num_patches`` sampled positions.

    Official defaults: ``nc`` 256, xavier-normal init with gain 0.02, biases 0. The MLPs are
    named ``mlp_0``, ``mlp_1``, ... as in the official ``latest_net_F.pth``.

    The MLPs need the feature channel counts, so they are built on the first :meth:`forward`
    (as the official head) or by :meth:`build`; either way their initial weights come from a
    CPU generator seeded with ``init_seed`` unless ``build`` is given another generator, and are
    then moved to the features' device, so they are the same on every device. To restore a
    checkpoint, ``build`` first (channels from :meth:`channels_in_state` or the generator's
    ``feature_channels``), then ``load_state_dict``; create the head's optimiser only once it is
    built, as the official code does after its first data-dependent pass.
    """

    def __init__(
        self, nc: int = 256, init_type: str = "xavier", init_gain: float = 0.02, init_seed: int = 0
    ) -> None:
        super().__init__()
        self.nc, self.init_type, self.init_gain, self.init_seed = (
            nc,
            init_type,
            init_gain,
            init_seed,
        )
        self._channels: list[int] = []

    @property
    def built(self) -> bool:
        return bool(self._channels)

    @property
    def channels(self) -> list[int]:
        """Input channel count of each layer's MLP ([] before it is built)."""
        return list(self._channels)

    def build(
        self,
        channels: Sequence[int],
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Create and initialise one MLP per feature layer with ``channels[i]`` inputs."""
        if self.built:
            raise RuntimeError("the sample head is already built")
        if not channels:
            raise ValueError("the sample head needs at least one feature layer")
        for i, c in enumerate(channels):
            # skip_init: nn.Linear's own reset would draw from the global RNG (and a build in
            # the middle of a run would shift every later global draw); init_weights below
            # sets every weight and bias from the seeded generator instead.
            first = nn.utils.skip_init(nn.Linear, int(c), self.nc)
            second = nn.utils.skip_init(nn.Linear, self.nc, self.nc)
            self.add_module(f"mlp_{i}", nn.Sequential(first, nn.ReLU(), second))
        if generator is None:
            generator = torch.Generator().manual_seed(self.init_seed)
        # Initialised on the CPU, where the generator lives, then moved.
        init_weights(self, self.init_type, self.init_gain, generator=generator)
        self._channels = [int(c) for c in channels]
        if device is not None:
            self.to(device)

    @staticmethod
    def channels_in_state(state: Mapping[str, Any]) -> list[int]:
        """The ``channels`` a saved head's state_dict was built with (for :meth:`build`)."""
        found = {}
        for key, value in state.items():
            m = re.fullmatch(r"mlp_(\d+)\.0\.weight", key)
            if m and isinstance(value, torch.Tensor) and value.dim() == 2:
                found[int(m.group(1))] = int(value.shape[1])
        if sorted(found) != list(range(len(found))):
            raise ValueError(f"sample head layers are not numbered 0..n-1: {sorted(found)}")
        return [found[i] for i in range(len(found))]

    def sample_ids(
        self, feats: Sequence[torch.Tensor], num_patches: int, generator: torch.Generator
    ) -> list[torch.Tensor]:
        """For each layer, ``min(num_patches, H*W)`` distinct flat positions (row-major), drawn
        from ``generator`` and put on that layer's device; the same for every image of the
        batch, as in the official head."""
        if num_patches < 1:
            raise ValueError(f"num_patches must be >= 1, got {num_patches}")
        ids = []
        for feat in feats:
            hw = feat.shape[2] * feat.shape[3]
            perm = torch.randperm(hw, generator=generator, device=generator.device)
            ids.append(perm[: min(num_patches, hw)].to(feat.device))
        return ids

    def forward(
        self,
        feats: Sequence[torch.Tensor],
        num_patches: int = 256,
        patch_ids: Sequence[torch.Tensor] | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Sample, project and normalise: ``(projected, ids)``, one entry per layer.

        ``projected[i]`` has shape ``(N * P, nc)``, image-major (the P patches of image 0,
        then those of image 1, ...), L2-normalised rows. Pass the ``ids`` returned for the keys
        (the input's features) as ``patch_ids`` for the queries (the output's features), so both
        use the same positions; without ``patch_ids``, ``generator`` draws new ones.
        """
        if not self.built:
            self.build([f.shape[1] for f in feats], device=feats[0].device)
        if len(feats) != len(self._channels):
            raise ValueError(f"got {len(feats)} feature layers, the head has {len(self._channels)}")
        if patch_ids is None:
            if generator is None:
                raise ValueError("pass a torch.Generator to draw patch positions, or patch_ids")
            patch_ids = self.sample_ids(feats, num_patches, generator)
        elif len(patch_ids) != len(feats):
            raise ValueError(f"got {len(patch_ids)} patch id sets for {len(feats)} layers")
        out = []
        for i, (feat, ids) in enumerate(zip(feats, patch_ids, strict=True)):
            # (N, C, H*W) -> the chosen positions (N, C, P) -> (N * P, C). Picking before
            # the transpose copies P columns instead of the whole map (forward and backward).
            picked = feat.flatten(2)[:, :, ids].transpose(1, 2).flatten(0, 1)
            out.append(l2_normalize(getattr(self, f"mlp_{i}")(picked)))
        return out, list(patch_ids)
