"""The CycleGAN model state and one training step, written out in full.

Naming is by direction: ``G_ab`` maps A -> B, ``G_ba`` maps B -> A, ``D_a`` judges domain-A
images (real A vs G_ba's fakes), ``D_b`` judges domain-B images. The official code's G_A/G_B
are our G_ab/G_ba, but its D_A judges G_A's output, i.e. it is our D_b.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cyclekit.models import build_discriminator, generator_from_spec, generator_spec, init_weights
from cyclekit.training.config import TrainConfig
from cyclekit.training.distributed import unwrap
from cyclekit.training.image_pool import ImagePool
from cyclekit.training.losses import discriminator_adv_loss, generator_adv_loss, gradient_penalty
from cyclekit.training.rng import rng_state, set_rng_state

LOSS_NAMES = (
    "G_ab", "G_ba", "cycle_a", "cycle_b", "idt_a", "idt_b", "G", "D_a", "D_b", "gp_a", "gp_b",
)  # fmt: skip


def generator_specs(cfg: TrainConfig) -> dict[str, dict[str, Any]]:
    """Constructor args of both generators; saved in checkpoints so loading needs no flags."""
    common = {
        "ngf": cfg.ngf, "norm": cfg.norm, "use_dropout": cfg.dropout,
        "downsample": cfg.downsample, "upsample": cfg.upsample,
    }  # fmt: skip
    return {
        "G_ab": generator_spec(cfg.netG, cfg.input_nc, cfg.output_nc, **common),
        "G_ba": generator_spec(cfg.netG, cfg.output_nc, cfg.input_nc, **common),
    }


@dataclass
class CycleGAN:
    G_ab: nn.Module
    G_ba: nn.Module
    D_a: nn.Module
    D_b: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    pool_a: ImagePool  # G_ba's fakes (domain A), fed to D_a
    pool_b: ImagePool  # G_ab's fakes (domain B), fed to D_b
    gp_generator: torch.Generator  # WGAN-GP interpolation weights

    cfg: TrainConfig
    specs: dict[str, dict[str, Any]]

    # What the shared run calls (the interface is described in cyclekit.training.model).
    summary_names = ("G", "D_a", "D_b", "cycle_a", "cycle_b")

    @property
    def loss_names(self) -> tuple[str, ...]:
        # The penalty exists only for wgangp: other modes must not log a flat 0 as a loss.
        return LOSS_NAMES if self.cfg.gan_mode == "wgangp" else LOSS_NAMES[:-2]

    def networks(self) -> dict[str, nn.Module]:
        return {"G_ab": self.G_ab, "G_ba": self.G_ba, "D_a": self.D_a, "D_b": self.D_b}

    def wrap_networks(self, fn: Callable[[str, nn.Module], nn.Module]) -> None:
        for name, net in self.networks().items():
            setattr(self, name, fn(name, net))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.opt_G, "D": self.opt_D}

    def prepare_restore(self, models: dict[str, dict[str, torch.Tensor]]) -> None:
        pass  # every part exists from the start

    def train_step(
        self,
        batch: dict[str, torch.Tensor],
        autocast: Callable[[], Any],
        scaler: torch.amp.GradScaler,
    ) -> dict[str, torch.Tensor]:
        return train_step(self, batch["a"], batch["b"], self.cfg, autocast, scaler)

    def sample(
        self, real_a: torch.Tensor, real_b: torch.Tensor, autocast: Callable[[], Any]
    ) -> dict[str, torch.Tensor]:
        return translate_samples(self, real_a, real_b, autocast)

    def generators(self) -> dict[str, tuple[nn.Module, dict[str, Any], str]]:
        return {
            "G_ab": (unwrap(self.G_ab), self.specs["G_ab"], "a2b"),
            "G_ba": (unwrap(self.G_ba), self.specs["G_ba"], "b2a"),
        }

    def discriminators(self) -> dict[str, nn.Module]:
        """Direction -> the discriminator that judges its translations (for health checks)."""
        return {"a2b": self.D_b, "b2a": self.D_a}

    def adversarial_losses(self) -> dict[str, tuple[str, str, float]]:
        """Direction -> (its D's loss, its G's adversarial loss, that loss's weight)."""
        return {"a2b": ("D_b", "G_ab", 1.0), "b2a": ("D_a", "G_ba", 1.0)}

    def rank_state(self) -> dict[str, Any]:
        """What differs between ranks: the pools and the random streams."""
        return {
            "pools": {"a": self.pool_a.state_dict(), "b": self.pool_b.state_dict()},
            "rng": rng_state() | {"gp": self.gp_generator.get_state()},
        }

    def load_rank_state(self, state: dict[str, Any], device: torch.device) -> None:
        self.pool_a.load_state_dict(state["pools"]["a"], device)
        self.pool_b.load_state_dict(state["pools"]["b"], device)
        self.gp_generator.set_state(state["rng"]["gp"])
        set_rng_state(state["rng"])


def make_adam(cfg: TrainConfig, device: torch.device, params: Any) -> torch.optim.Optimizer:
    """Adam with the run's lr and betas: fused on CUDA (one kernel for all tensors),
    multi-tensor "foreach" elsewhere. Every model's optimisers come from here."""
    fused = device.type == "cuda"
    return torch.optim.Adam(
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused,
        foreach=None if fused else True,
    )  # fmt: skip


def build_cyclegan(cfg: TrainConfig, device: torch.device, rank: int = 0) -> CycleGAN:
    """Four freshly initialised networks and their optimisers, all from ``cfg.seed``.

    Weights are the same on every rank; pools and the penalty's generator differ per rank.
    """
    init_gen = torch.Generator().manual_seed(cfg.seed)
    specs = generator_specs(cfg)
    nets = {name: generator_from_spec(spec) for name, spec in specs.items()}
    d_kwargs = {"ndf": cfg.ndf, "n_layers": cfg.n_layers_D, "norm": cfg.norm}
    nets["D_a"] = build_discriminator(cfg.netD, input_nc=cfg.input_nc, **d_kwargs)
    nets["D_b"] = build_discriminator(cfg.netD, input_nc=cfg.output_nc, **d_kwargs)
    for name in ("G_ab", "G_ba", "D_a", "D_b"):  # fixed order: init draws from one stream
        init_weights(nets[name], cfg.init_type, cfg.init_gain, generator=init_gen)
        nets[name].to(device).train()
    g_params = itertools.chain(nets["G_ab"].parameters(), nets["G_ba"].parameters())
    d_params = itertools.chain(nets["D_a"].parameters(), nets["D_b"].parameters())
    return CycleGAN(
        G_ab=nets["G_ab"],
        G_ba=nets["G_ba"],
        D_a=nets["D_a"],
        D_b=nets["D_b"],
        opt_G=make_adam(cfg, device, g_params),
        opt_D=make_adam(cfg, device, d_params),
        pool_a=ImagePool(cfg.pool_size, seed=cfg.seed + 1 + 100 * rank),
        pool_b=ImagePool(cfg.pool_size, seed=cfg.seed + 2 + 100 * rank),
        gp_generator=torch.Generator().manual_seed(cfg.seed + 3 + 100 * rank),
        cfg=cfg,
        specs=specs,
    )


def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def train_step(
    m: CycleGAN,
    real_a: torch.Tensor,
    real_b: torch.Tensor,
    cfg: TrainConfig,
    autocast: Callable[[], Any],
    scaler: torch.amp.GradScaler,
) -> dict[str, torch.Tensor]:
    """One CycleGAN iteration in the official order; returns detached losses (no sync).

    real_a: (N, input_nc, H, W), real_b: (N, output_nc, H, W), both in [-1, 1].
    """
    lam_a, lam_b, lam_idt = cfg.lambda_a, cfg.lambda_b, cfg.lambda_identity
    zero = real_a.new_zeros(())

    # Generators' forward: both translations and both reconstructions.
    with autocast():
        fake_b = m.G_ab(real_a)  # A -> B
        rec_a = m.G_ba(fake_b)  # A -> B -> A
        fake_a = m.G_ba(real_b)  # B -> A
        rec_b = m.G_ab(fake_a)  # B -> A -> B

    # (1) Update G_ab and G_ba; the discriminators are frozen so no gradient reaches them.
    set_requires_grad([m.D_a, m.D_b], False)
    m.opt_G.zero_grad(set_to_none=True)
    with autocast():
        if lam_idt > 0:
            # A generator fed an image already in its target domain should leave it alone.
            loss_idt_b = F.l1_loss(m.G_ab(real_b).float(), real_b) * lam_b * lam_idt
            loss_idt_a = F.l1_loss(m.G_ba(real_a).float(), real_a) * lam_a * lam_idt
        else:
            loss_idt_a = loss_idt_b = zero
        # The plain modules, not their DDP wrappers: a frozen D must not expect a gradient sync.
        loss_G_ab = generator_adv_loss(unwrap(m.D_b)(fake_b), cfg.gan_mode)
        loss_G_ba = generator_adv_loss(unwrap(m.D_a)(fake_a), cfg.gan_mode)
        loss_cycle_a = F.l1_loss(rec_a.float(), real_a) * lam_a
        loss_cycle_b = F.l1_loss(rec_b.float(), real_b) * lam_b
        loss_G = loss_G_ab + loss_G_ba + loss_cycle_a + loss_cycle_b + loss_idt_a + loss_idt_b
    scaler.scale(loss_G).backward()
    scaler.step(m.opt_G)

    # (2) Update D_a and D_b on real images and on fakes from the history pools (detached).
    set_requires_grad([m.D_a, m.D_b], True)
    m.opt_D.zero_grad(set_to_none=True)
    pooled_b = m.pool_b.query(fake_b)
    pooled_a = m.pool_a.query(fake_a)
    with autocast():
        loss_D_b = discriminator_adv_loss(m.D_b(real_b), m.D_b(pooled_b), cfg.gan_mode)
        loss_D_a = discriminator_adv_loss(m.D_a(real_a), m.D_a(pooled_a), cfg.gan_mode)
    if cfg.gan_mode == "wgangp":
        # Penalty in fp32: second-order gradients in low precision are unstable.
        gp_b = gradient_penalty(m.D_b, real_b, pooled_b, m.gp_generator) * cfg.lambda_gp
        gp_a = gradient_penalty(m.D_a, real_a, pooled_a, m.gp_generator) * cfg.lambda_gp
    else:
        gp_a = gp_b = zero
    scaler.scale(loss_D_a + loss_D_b + gp_a + gp_b).backward()
    scaler.step(m.opt_D)
    scaler.update()

    losses = {
        "G_ab": loss_G_ab, "G_ba": loss_G_ba, "cycle_a": loss_cycle_a, "cycle_b": loss_cycle_b,
        "idt_a": loss_idt_a, "idt_b": loss_idt_b, "G": loss_G, "D_a": loss_D_a, "D_b": loss_D_b,
    }  # fmt: skip
    if cfg.gan_mode == "wgangp":
        losses |= {"gp_a": gp_a, "gp_b": gp_b}
    return {k: v.detach().float() for k, v in losses.items()}


@torch.no_grad()
def translate_samples(
    m: CycleGAN, real_a: torch.Tensor, real_b: torch.Tensor, autocast: Callable[[], Any]
) -> dict[str, torch.Tensor]:
    """Translations and reconstructions for sample grids (generators in eval mode)."""
    G_ab, G_ba = unwrap(m.G_ab), unwrap(m.G_ba)
    was_training = G_ab.training
    G_ab.eval()
    G_ba.eval()
    try:
        with autocast():
            fake_b = G_ab(real_a)
            rec_a = G_ba(fake_b)
            fake_a = G_ba(real_b)
            rec_b = G_ab(fake_a)
    finally:
        G_ab.train(was_training)
        G_ba.train(was_training)
    out = {"real_a": real_a, "fake_b": fake_b, "rec_a": rec_a}
    out |= {"real_b": real_b, "fake_a": fake_a, "rec_b": rec_b}
    return {k: v.float() for k, v in out.items()}
