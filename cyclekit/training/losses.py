"""GAN objectives (LSGAN, vanilla, WGAN-GP, hinge) and the gradient penalty. Pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cyclekit.training.config import GAN_MODES  # the one list (the CLI needs it without torch)


def generator_adv_loss(pred_fake: torch.Tensor, mode: str) -> torch.Tensor:
    """Adversarial loss for the generator: make the discriminator call its fakes real."""
    pred_fake = pred_fake.float()
    if mode == "lsgan":
        return F.mse_loss(pred_fake, torch.ones_like(pred_fake))
    if mode == "vanilla":
        # Non-saturating form: maximise log D(G(z)); D outputs logits.
        return F.binary_cross_entropy_with_logits(pred_fake, torch.ones_like(pred_fake))
    if mode in ("wgangp", "hinge"):
        return -pred_fake.mean()
    raise ValueError(f"unknown gan mode {mode!r}; choose one of {', '.join(GAN_MODES)}")


def discriminator_adv_loss(
    pred_real: torch.Tensor, pred_fake: torch.Tensor, mode: str
) -> torch.Tensor:
    """0.5 x (loss on real + loss on fake), the official CycleGAN scaling (slows D down)."""
    pred_real, pred_fake = pred_real.float(), pred_fake.float()
    if mode == "lsgan":
        real = F.mse_loss(pred_real, torch.ones_like(pred_real))
        fake = F.mse_loss(pred_fake, torch.zeros_like(pred_fake))
    elif mode == "vanilla":
        real = F.binary_cross_entropy_with_logits(pred_real, torch.ones_like(pred_real))
        fake = F.binary_cross_entropy_with_logits(pred_fake, torch.zeros_like(pred_fake))
    elif mode == "wgangp":
        real, fake = -pred_real.mean(), pred_fake.mean()
    elif mode == "hinge":
        real, fake = F.relu(1.0 - pred_real).mean(), F.relu(1.0 + pred_fake).mean()
    else:
        raise ValueError(f"unknown gan mode {mode!r}; choose one of {', '.join(GAN_MODES)}")
    return 0.5 * (real + fake)


def gradient_penalty(
    D: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
    target_norm: float = 1.0,
) -> torch.Tensor:
    """WGAN-GP penalty E[(||grad D(x_hat)||_2 - 1)^2] at random interpolates x_hat.

    One mixing weight per image, drawn from ``generator`` on the CPU (so seeds reproduce
    across devices). The official CycleGAN code defines this but never calls it.
    """
    n = real.shape[0]
    alpha = torch.rand(n, 1, 1, 1, generator=generator).to(real.device, real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = D(x_hat)
    (grad,) = torch.autograd.grad(
        outputs=out, inputs=x_hat, grad_outputs=torch.ones_like(out), create_graph=True
    )
    norms = (grad.reshape(n, -1).float() + 1e-16).norm(2, dim=1)
    return ((norms - target_norm) ** 2).mean()
