"""GAN objectives, the gradient penalty and the seeded image pool."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cyclekit.training.image_pool import ImagePool
from cyclekit.training.losses import discriminator_adv_loss, generator_adv_loss, gradient_penalty


def test_lsgan_and_vanilla_values():
    ones, zeros = torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
    assert generator_adv_loss(ones, "lsgan").item() == 0.0
    assert generator_adv_loss(zeros, "lsgan").item() == 1.0
    # Perfect D under LSGAN: 0; fully fooled D: 0.5 * (1 + 1).
    assert discriminator_adv_loss(ones, zeros, "lsgan").item() == 0.0
    assert discriminator_adv_loss(zeros, ones, "lsgan").item() == 1.0
    # Logit 0 means p = 0.5 everywhere: BCE = log 2 for each half.
    assert math.isclose(generator_adv_loss(zeros, "vanilla").item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(
        discriminator_adv_loss(zeros, zeros, "vanilla").item(), math.log(2), rel_tol=1e-6
    )


def test_wgan_and_hinge_signs():
    real, fake = torch.full((4, 1), 2.0), torch.full((4, 1), -1.0)
    assert discriminator_adv_loss(real, fake, "wgangp").item() == pytest.approx(0.5 * (-2 - 1))
    assert generator_adv_loss(fake, "wgangp").item() == 1.0
    assert discriminator_adv_loss(real, fake, "hinge").item() == 0.0  # both margins met
    assert discriminator_adv_loss(fake, real, "hinge").item() == pytest.approx(0.5 * (2 + 3))
    with pytest.raises(ValueError, match="unknown gan mode"):
        generator_adv_loss(real, "nope")


def test_gradient_penalty_zero_for_unit_gradient_and_positive_otherwise():
    class Linear(nn.Module):
        def __init__(self, scale: float):
            super().__init__()
            w = torch.randn(1, 3, 4, 4)
            self.w = nn.Parameter(w / w.norm() * scale)

        def forward(self, x):
            return (x * self.w).flatten(1).sum(1)

    real, fake = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    g = torch.Generator().manual_seed(0)
    assert gradient_penalty(Linear(1.0), real, fake, g).item() == pytest.approx(0.0, abs=1e-8)
    d = Linear(3.0)
    gp = gradient_penalty(d, real, fake, g)
    assert gp.item() == pytest.approx(4.0, rel=1e-5)  # (3 - 1)^2
    gp.backward()
    assert d.w.grad is not None and d.w.grad.abs().sum() > 0  # the penalty trains D


def test_pool_off_passes_images_through():
    pool = ImagePool(0)
    x = torch.randn(3, 3, 4, 4)
    assert torch.equal(pool.query(x), x)


def test_pool_fills_then_mixes_history_seeded():
    def run(seed):
        pool = ImagePool(4, seed=seed)
        outs = [pool.query(torch.full((2, 1, 2, 2), float(i))) for i in range(20)]
        return torch.stack([o[:, 0, 0, 0] for o in outs])

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(a[:2], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))  # filling: returned as is
    assert (a[2:] < torch.arange(2, 20).float()[:, None]).any()  # later: old fakes come back


def test_pool_state_round_trip_continues_identically():
    pool = ImagePool(3, seed=5)
    for i in range(6):
        pool.query(torch.full((1, 1, 2, 2), float(i)))
    state = pool.state_dict()
    clone = ImagePool(3, seed=999)
    clone.load_state_dict(state)
    for i in range(6, 16):
        x = torch.full((1, 1, 2, 2), float(i))
        assert torch.equal(pool.query(x), clone.query(x))
