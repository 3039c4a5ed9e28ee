"""The MNIST baselines' networks: MLP and DCGAN generators/discriminators, autoencoders, and the
small classifier whose features the evaluation uses.

Every network is a plain ``nn.Module`` whose keyword arguments are its saved spec
(:func:`model_spec` / :func:`model_from_spec`), so a checkpoint rebuilds without flags.
Images are ``(B, 1, 28, 28)``; generators output tanh in [-1, 1], discriminators output logits
(paired with ``BCEWithLogitsLoss``: the same loss as sigmoid + BCE, but numerically stable).

Randomness never comes from torch's global generator when a ``torch.Generator`` is given:
:func:`model_from_spec` draws the initial weights from it (PyTorch's default distributions),
and :class:`SeededDropout` draws its masks from one set with :func:`use_generator`. A run is
then fixed by its seed alone, and a program that trains a baseline keeps its own random stream.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE  # 784


class MLPGenerator(nn.Module):
    """The lecture GAN's generator: z -> 256 -> 256 -> 784, ReLU, tanh output."""

    def __init__(self, latent_dim: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),  # (B, latent) -> (B, hidden)
            nn.ReLU(),
            nn.Linear(hidden, hidden),  # (B, hidden) -> (B, hidden)
            nn.ReLU(),
            nn.Linear(hidden, IMAGE_PIXELS),  # (B, hidden) -> (B, 784)
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, IMAGE_SIDE, IMAGE_SIDE)  # (B, 1, 28, 28)


class MLPDiscriminator(nn.Module):
    """The lecture GAN's discriminator: 784 -> 256 -> 256 -> 1 logit, LeakyReLU(0.2)."""

    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),  # (B, 1, 28, 28) -> (B, 784)
            nn.Linear(IMAGE_PIXELS, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),  # (B, hidden) -> (B, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)  # (B,) logits


class DCGANGenerator(nn.Module):
    """z -> 7x7 -> 14x14 -> 28x28 with transposed convs and batch norm (DCGAN for MNIST)."""

    def __init__(self, latent_dim: int = 64, hidden: int = 64) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        c = hidden
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 2 * c * 7 * 7, bias=False),  # (B, z) -> (B, 2c*49)
            nn.BatchNorm1d(2 * c * 7 * 7),
            nn.ReLU(),
        )
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1, bias=False),  # (B, 2c, 7, 7) -> (B, c, 14, 14)
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.ConvTranspose2d(c, 1, 4, 2, 1),  # (B, c, 14, 14) -> (B, 1, 28, 28)
            nn.Tanh(),
        )
        self._c = c

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(-1, 2 * self._c, 7, 7)
        return self.net(h)


class SeededDropout(nn.Module):
    """``nn.Dropout`` that draws its masks from ``self.generator`` when one is set.

    ``nn.Dropout`` can only use the global generator; a generator of the run's own (whose
    state goes into ``last.pt``) makes a resumed run draw the masks an unbroken one would.
    Without a generator it behaves exactly like ``nn.Dropout``. No parameters or buffers:
    the state_dict keys are those of ``nn.Dropout``.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.generator is None:
            return F.dropout(x, self.p, training=True)
        keep = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return x * (keep >= self.p) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DCGANDiscriminator(nn.Module):
    """28x28 -> 14x14 -> 7x7 -> 1 logit with strided convs, LeakyReLU(0.2) and dropout."""

    def __init__(self, hidden: int = 64, dropout: float = 0.3) -> None:
        super().__init__()
        c = hidden
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1),  # (B, 1, 28, 28) -> (B, c, 14, 14)
            nn.LeakyReLU(0.2),
            SeededDropout(dropout),
            nn.Conv2d(c, 2 * c, 4, 2, 1),  # (B, c, 14, 14) -> (B, 2c, 7, 7)
            nn.LeakyReLU(0.2),
            SeededDropout(dropout),
            nn.Flatten(),
            nn.Linear(2 * c * 7 * 7, 1),  # (B, 2c*49) -> (B, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)  # (B,) logits


class MLPAutoencoder(nn.Module):
    """784 -> hidden -> code -> hidden -> 784; sigmoid output, images in [0, 1]."""

    def __init__(self, code_dim: int = 32, hidden: int = 0) -> None:
        super().__init__()
        # hidden=0 is the textbook single-layer 784 -> 32 -> 784 autoencoder.
        enc: list[nn.Module] = [nn.Flatten()]
        dec: list[nn.Module] = []
        if hidden:
            enc += [nn.Linear(IMAGE_PIXELS, hidden), nn.ReLU(), nn.Linear(hidden, code_dim)]
            dec += [nn.Linear(code_dim, hidden), nn.ReLU(), nn.Linear(hidden, IMAGE_PIXELS)]
        else:
            enc += [nn.Linear(IMAGE_PIXELS, code_dim)]
            dec += [nn.Linear(code_dim, IMAGE_PIXELS)]
        self.encoder = nn.Sequential(*enc, nn.ReLU())  # (B, 1, 28, 28) -> (B, code)
        self.decoder = nn.Sequential(*dec, nn.Sigmoid())  # (B, code) -> (B, 784)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)).view(-1, 1, IMAGE_SIDE, IMAGE_SIDE)


class ConvAutoencoder(nn.Module):
    """28x28 -> 14x14 -> 7x7 feature maps and back; sigmoid output, images in [0, 1]."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        c = hidden
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c, 3, 2, 1),  # (B, 1, 28, 28) -> (B, c, 14, 14)
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, 2, 1),  # (B, c, 14, 14) -> (B, 2c, 7, 7)
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1),  # (B, 2c, 7, 7) -> (B, c, 14, 14)
            nn.ReLU(),
            nn.ConvTranspose2d(c, 1, 4, 2, 1),  # (B, c, 14, 14) -> (B, 1, 28, 28)
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class MNISTClassifier(nn.Module):
    """A small CNN; its penultimate layer is the feature space of the Fréchet distance."""

    def __init__(self, width: int = 16, features: int = 128) -> None:
        super().__init__()
        c = width
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1),  # (B, 1, 28, 28) -> (B, c, 28, 28)
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> (B, c, 14, 14)
            nn.Conv2d(c, 2 * c, 3, padding=1),  # -> (B, 2c, 14, 14)
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> (B, 2c, 7, 7)
            nn.Flatten(),
            nn.Linear(2 * c * 7 * 7, features),  # -> (B, features)
            nn.ReLU(),
        )
        self.head = nn.Linear(features, 10)  # (B, features) -> (B, 10) logits

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


# spec name -> class; the rest of a spec is the class's keyword arguments.
MNIST_MODELS: dict[str, type[nn.Module]] = {
    "mlp_g": MLPGenerator,
    "mlp_d": MLPDiscriminator,
    "dcgan_g": DCGANGenerator,
    "dcgan_d": DCGANDiscriminator,
    "mlp_ae": MLPAutoencoder,
    "conv_ae": ConvAutoencoder,
    "classifier": MNISTClassifier,
}
# --arch -> (generator, discriminator) spec names
GAN_ARCHS: dict[str, tuple[str, str]] = {"mlp": ("mlp_g", "mlp_d"), "dcgan": ("dcgan_g", "dcgan_d")}


def model_spec(kind: str, **kwargs: Any) -> dict[str, Any]:
    """A model's constructor arguments as a plain dict (saved beside its weights)."""
    if kind not in MNIST_MODELS:
        raise ValueError(f"unknown MNIST model {kind!r}; choose one of {', '.join(MNIST_MODELS)}")
    return {"kind": kind, **kwargs}


def model_from_spec(spec: dict[str, Any], generator: torch.Generator | None = None) -> nn.Module:
    """Build a model from :func:`model_spec` output (no weights loaded).

    With ``generator`` (a CPU one) the initial weights are drawn from it and torch's global
    generator is neither used nor advanced; without, PyTorch initialises as usual.
    """
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in MNIST_MODELS:
        raise ValueError(f"unknown MNIST model {kind!r}; choose one of {', '.join(MNIST_MODELS)}")
    if generator is None:
        return MNIST_MODELS[kind](**spec)
    with torch.device("meta"):  # shapes only: PyTorch's own init would draw global randomness
        model = MNIST_MODELS[kind](**spec)
    return init_weights(model.to_empty(device="cpu"), generator)


def init_weights(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """PyTorch's default initialisation of every layer, drawn from ``generator``.

    Linear and (transposed) convolution weights and biases: uniform in +-1/sqrt(fan_in), which
    is what their ``reset_parameters`` draws (kaiming_uniform with a=sqrt(5)); batch norm:
    weight 1, bias 0, fresh running statistics.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                w = m.weight
                fan_in = w.shape[1] * math.prod(w.shape[2:])  # as torch.nn.init computes it
                bound = 1 / math.sqrt(fan_in) if fan_in else 0.0
                w.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_parameters()
    return model


def use_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Make every :class:`SeededDropout` in ``model`` draw from ``generator`` (None: global)."""
    for m in model.modules():
        if isinstance(m, SeededDropout):
            m.generator = generator
