"""CUT / FastCUT: the anti-aliased discriminator, the training step, resume, translate."""

from __future__ import annotations

import pytest
import torch

from cyclekit.models import build_discriminator
from cyclekit.models.discriminator import patch_output_size


def test_antialiased_patchgan_has_the_official_cut_layout():
    D = build_discriminator("basic", input_nc=3, ndf=8, antialias=True)
    # Official CUT (no_antialias=False): conv s1, LeakyReLU, Downsample per level; instance
    # norm convs keep their bias there (use_bias is True for InstanceNorm2d).
    assert list(D.state_dict()) == [
        "model.0.weight", "model.0.bias", "model.2.filt",
        "model.3.weight", "model.3.bias", "model.6.filt",
        "model.7.weight", "model.7.bias", "model.10.filt",
        "model.11.weight", "model.11.bias", "model.14.weight", "model.14.bias",
    ]  # fmt: skip
    assert D.state_dict()["model.6.filt"].shape == (16, 1, 3, 3)
    plain = build_discriminator("basic", input_nc=3, ndf=8)
    assert "model.2.filt" not in plain.state_dict()  # CycleGAN's stays as it was


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("side", [24, 30, 33, 64, 100])
def test_patch_output_size_predicts_the_discriminator(antialias, side):
    D = build_discriminator("basic", input_nc=3, ndf=4, antialias=antialias)
    out = D(torch.zeros(1, 3, side, side))
    assert out.shape[-1] == patch_output_size(side, 3, antialias)
