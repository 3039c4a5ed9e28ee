"""CUT and FastCUT (Park et al., ECCV 2020): one generator, one discriminator, PatchNCE.

One-sided: only ``G_ab`` (A -> B) and ``D_b`` (real B vs G_ab's fakes). Instead of a cycle,
a patchwise contrastive loss keeps each output patch closer to the input patch at the same
place than to other patches of the same image, measured on the generator's own encoder
features passed through a small MLP head ``F``. The step follows the official order: the
discriminator first, then the generator and the head together. No image pool.

FastCUT is the same model with other defaults (no NCE identity, lambda_NCE 10, flip
equivariance, a shorter schedule); see ``MODEL_DEFAULTS`` in :mod:`cyclekit.training.config`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cyclekit.models import build_discriminator, generator_from_spec, generator_spec, init_weights
from cyclekit.models.patch_sample import PatchSampleMLP
from cyclekit.training.config import ConfigError, TrainConfig
from cyclekit.training.cyclegan import make_adam, set_requires_grad
from cyclekit.training.distributed import unwrap
from cyclekit.training.losses import discriminator_adv_loss, generator_adv_loss
from cyclekit.training.patchnce import mean_patch_nce
from cyclekit.training.rng import rng_state, set_rng_state


def cut_generator_spec(cfg: TrainConfig) -> dict[str, Any]:
    return generator_spec(
        cfg.netG, cfg.input_nc, cfg.output_nc, ngf=cfg.ngf, norm=cfg.norm,
        use_dropout=cfg.dropout, downsample=cfg.downsample, upsample=cfg.upsample,
    )  # fmt: skip


@dataclass
class CUT:
    G_ab: nn.Module
    D_b: nn.Module
    F: PatchSampleMLP  # the MLP head; its layers are built on the first batch (data-dependent)
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    opt_F: torch.optim.Optimizer | None  # created once the head exists, as the official code
    sampler: torch.Generator  # patch positions and flip coin: one seeded stream per rank
    cfg: TrainConfig
    specs: dict[str, dict[str, Any]]

    summary_names = ("G", "D_b", "NCE")

    @property
    def nce_layers(self) -> list[int]:
        return [int(i) for i in str(self.cfg.nce_layers).split(",")]

    @property
    def loss_names(self) -> tuple[str, ...]:
        names = ("G_ab", "NCE") + (("NCE_Y",) if self.cfg.nce_idt else ()) + ("G", "D_b")
        return names

    # -- the interface of cyclekit.training.model -------------------------------------------

    def networks(self) -> dict[str, nn.Module]:
        nets = {"G_ab": self.G_ab, "D_b": self.D_b}
        if self.F.built:
            nets["F"] = self.F
        return nets

    def wrap_networks(self, fn: Callable[[str, nn.Module], nn.Module]) -> None:
        # The head stays unwrapped: it runs twice per step (keys and queries), which a
        # DistributedDataParallel module does not allow; its gradients are averaged by hand.
        self.G_ab = fn("G_ab", self.G_ab)
        self.D_b = fn("D_b", self.D_b)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"G": self.opt_G, "D": self.opt_D}
        if self.opt_F is not None:
            opts["F"] = self.opt_F
        return opts

    def prepare_restore(self, models: dict[str, dict[str, torch.Tensor]]) -> None:
        """Build the head (and its optimiser) from a checkpoint's shapes before loading it."""
        if "F" in models and not self.F.built:
            self.F.build(PatchSampleMLP.channels_in_state(models["F"]), self._device())
            self._make_head_optimizer()

    def train_step(
        self,
        batch: dict[str, torch.Tensor],
        autocast: Callable[[], Any],
        scaler: torch.amp.GradScaler,
    ) -> dict[str, torch.Tensor]:
        return cut_step(self, batch["a"], batch["b"], autocast, scaler)

    def rank_state(self) -> dict[str, Any]:
        return {"rng": rng_state() | {"sampler": self.sampler.get_state()}}

    def load_rank_state(self, state: dict[str, Any], device: torch.device) -> None:
        self.sampler.set_state(state["rng"]["sampler"])
        set_rng_state(state["rng"])

    @torch.no_grad()
    def sample(
        self, real_a: torch.Tensor, real_b: torch.Tensor, autocast: Callable[[], Any]
    ) -> dict[str, torch.Tensor]:
        G = unwrap(self.G_ab)
        was_training = G.training
        G.eval()
        try:
            with autocast():
                fake_b = G(real_a)
                idt_b = G(real_b)
        finally:
            G.train(was_training)
        out = {"real_a": real_a, "fake_b": fake_b, "real_b": real_b, "idt_b": idt_b}
        return {k: v.float() for k, v in out.items()}

    def generators(self) -> dict[str, tuple[nn.Module, dict[str, Any], str]]:
        return {"G_ab": (unwrap(self.G_ab), self.specs["G_ab"], "a2b")}

    def discriminators(self) -> dict[str, nn.Module]:
        return {"a2b": self.D_b}

    def adversarial_losses(self) -> dict[str, tuple[str, str, float]]:
        return {"a2b": ("D_b", "G_ab", self.cfg.lambda_gan)}  # G_ab is logged x lambda_gan

    # -- helpers ------------------------------------------------------------------------------

    def _device(self) -> torch.device:
        return next(unwrap(self.G_ab).parameters()).device

    def _make_head_optimizer(self) -> None:
        cfg = self.cfg
        self.opt_F = make_adam(cfg, self._device(), self.F.parameters())

    def ensure_head(self) -> None:
        """The head's layers are made at the first step, and its optimiser after them, as the
        official data-dependent initialisation does (their sizes are the encoder's channels).

        Its initial weights come from its own seeded generator: the same on every rank.
        """
        if self.F.built:
            return
        self.F.build(unwrap(self.G_ab).feature_channels(self.nce_layers), self._device())
        self._make_head_optimizer()


def build_cut(cfg: TrainConfig, device: torch.device, rank: int = 0) -> CUT:
    """G_ab, D_b and the (not yet built) head, all initialised from ``cfg.seed``."""
    init_gen = torch.Generator().manual_seed(cfg.seed)
    spec = cut_generator_spec(cfg)
    G_ab = generator_from_spec(spec)
    try:
        G_ab.check_layers([int(i) for i in cfg.nce_layers.split(",")])
    except ValueError as e:
        raise ConfigError(f"--nce-layers {cfg.nce_layers}: {e} for --netG {cfg.netG}") from None
    D_b = build_discriminator(
        cfg.netD, input_nc=cfg.output_nc, ndf=cfg.ndf, n_layers=cfg.n_layers_D, norm=cfg.norm,
        antialias=cfg.downsample == "antialias",
    )  # fmt: skip
    for net in (G_ab, D_b):  # fixed order: init draws from one stream
        init_weights(net, cfg.init_type, cfg.init_gain, generator=init_gen)
        net.to(device).train()
    # The official head: 256-d, initialised like the networks (xavier 0.02 by CUT's defaults).
    head = PatchSampleMLP(
        nc=256, init_type=cfg.init_type, init_gain=cfg.init_gain, init_seed=cfg.seed + 4
    )
    return CUT(
        G_ab=G_ab,
        D_b=D_b,
        F=head,
        opt_G=make_adam(cfg, device, G_ab.parameters()),
        opt_D=make_adam(cfg, device, D_b.parameters()),
        opt_F=None,
        sampler=torch.Generator().manual_seed(cfg.seed + 5 + 100 * rank),
        cfg=cfg,
        specs={"G_ab": spec},
    )


def nce_loss(
    m: CUT,
    src: torch.Tensor,
    tgt: torch.Tensor,
    flipped: bool,
    feat_k: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """PatchNCE between the source image and its translation, averaged over the layers.

    Queries come from the translation, keys (and the sampled positions) from the source; a
    translation made from a flipped input is flipped back so that positions line up.
    ``feat_k``: the source's encoder activations if the caller has them already (detached);
    else the encoder runs on ``src`` here, as in the official code.
    """
    cfg = m.cfg
    G = unwrap(m.G_ab)
    layers = m.nce_layers
    feat_q = G.encode(tgt, layers)
    if flipped:
        feat_q = [torch.flip(f, [3]) for f in feat_q]
    if feat_k is None:
        feat_k = G.encode(src, layers)
    pooled_k, ids = m.F(feat_k, cfg.num_patches, None, generator=m.sampler)
    pooled_q, _ = m.F(feat_q, cfg.num_patches, ids)
    # Negatives come from the same image only (batch_size splits the rows per image).
    return mean_patch_nce(pooled_q, pooled_k, src.shape[0], cfg.nce_t) * cfg.lambda_nce


def cut_step(
    m: CUT,
    real_a: torch.Tensor,
    real_b: torch.Tensor,
    autocast: Callable[[], Any],
    scaler: torch.amp.GradScaler,
) -> dict[str, torch.Tensor]:
    """One CUT/FastCUT iteration in the official order; returns detached losses (no sync)."""
    cfg = m.cfg
    m.ensure_head()
    n = real_a.shape[0]
    # With the NCE identity, B images go through G too (G(B) should stay B, patch by patch).
    real = torch.cat((real_a, real_b)) if cfg.nce_idt else real_a
    flipped = False
    if cfg.flip_equivariance:
        # FastCUT: half the time translate the mirrored input; NCE compares it flipped back.
        flipped = bool(torch.rand((), generator=m.sampler) < 0.5)
        if flipped:
            real = torch.flip(real, [3])
    # The PatchNCE keys are the encoder's activations on the unflipped inputs, which the
    # forward pass computes anyway: keep them from it rather than run the encoder again (the
    # official code does; same weights, same inputs, so the same keys). Their gradient is
    # never used (PatchNCE detaches the keys), so they are kept detached. A flipped pass saw
    # mirrored inputs, and the network is not mirror-symmetric: then the encoder runs again.
    G = unwrap(m.G_ab)
    reuse = cfg.lambda_nce > 0 and not flipped and G.keeps_intact(m.nce_layers)
    keys_a = keys_b = None
    with autocast():
        if reuse:
            with G.keeping(m.nce_layers):
                fake = m.G_ab(real)
            keys_a = [f[:n] for f in G.kept]
            keys_b = [f[n:] for f in G.kept] if cfg.nce_idt else None
            G.kept = []
        else:
            fake = m.G_ab(real)
    fake_b = fake[:n]
    idt_b = fake[n:] if cfg.nce_idt else None

    # (1) Update D_b on real B and on G_ab's fakes (detached: no gradient reaches G).
    set_requires_grad([m.D_b], True)
    m.opt_D.zero_grad(set_to_none=True)
    with autocast():
        loss_D = discriminator_adv_loss(m.D_b(real_b), m.D_b(fake_b.detach()), cfg.gan_mode)
    scaler.scale(loss_D).backward()
    scaler.step(m.opt_D)

    # (2) Update G_ab and the head: fool the (frozen) D, and keep the input's patches.
    set_requires_grad([m.D_b], False)
    assert m.opt_F is not None  # built by ensure_head
    m.opt_G.zero_grad(set_to_none=True)
    m.opt_F.zero_grad(set_to_none=True)
    zero = real_a.new_zeros(())
    with autocast():
        loss_G_ab = generator_adv_loss(unwrap(m.D_b)(fake_b), cfg.gan_mode) * cfg.lambda_gan
        loss_nce = nce_loss(m, real_a, fake_b, flipped, keys_a) if cfg.lambda_nce > 0 else zero
        if cfg.nce_idt and cfg.lambda_nce > 0:
            loss_nce_y = nce_loss(m, real_b, idt_b, flipped, keys_b)
            loss_nce_both = (loss_nce + loss_nce_y) * 0.5
        else:
            loss_nce_y, loss_nce_both = zero, loss_nce
        loss_G = loss_G_ab + loss_nce_both
    scaler.scale(loss_G).backward()
    _average_head_gradients(m)
    scaler.step(m.opt_G)
    scaler.step(m.opt_F)
    scaler.update()
    set_requires_grad([m.D_b], True)

    losses = {"G_ab": loss_G_ab, "NCE": loss_nce, "G": loss_G, "D_b": loss_D}
    if cfg.nce_idt:
        losses["NCE_Y"] = loss_nce_y
    return {k: v.detach().float() for k, v in losses.items()}


def _average_head_gradients(m: CUT) -> None:
    """Under torch.distributed, average the head's gradients over ranks (it is not DDP)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    for p in m.F.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= world
