"""The ResNet generator of CycleGAN (Johnson et al. style), layer for layer as the official code.

The module tree (``self.model`` as one ``nn.Sequential``, blocks with ``conv_block``) is kept
exactly so that ``state_dict`` keys equal the official ``latest_net_G.pth`` keys, for
CycleGAN's strided convs and transposed convs as for CUT's anti-aliased variants.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cyclekit.choices import DOWNSAMPLES, UPSAMPLES
from cyclekit.models.antialias import Downsample, Upsample
from cyclekit.models.norm import conv_bias, norm_layer

# Nearest, not bilinear: the Distill article the FAQ cites ("Deconvolution and Checkerboard
# Artifacts", Odena et al. 2016) reports its best results with nearest-neighbour resizing, and
# the FAQ's own text says nearest-neighbour (its snippet shows bilinear). Each output pixel of a
# nearest x2 followed by a 3x3 conv sees an evenly weighted neighbourhood, so no checkerboard can
# come from uneven kernel overlap, and it is the cheaper of the two.
RESIZE_MODE = "nearest"


class ResnetBlock(nn.Module):
    """x + conv(norm(relu(conv(x)))), reflection padded; dropout between the convs if asked."""

    def __init__(self, dim: int, norm: str, use_dropout: bool) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=bias),
            make_norm(dim),
            nn.ReLU(True),
        ]
        if use_dropout:
            # Shifts the second conv's key from conv_block.5 to conv_block.6, as official.
            layers.append(nn.Dropout(0.5))
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=bias),
            make_norm(dim),
        ]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d2ngf, d4ngf, n_blocks x R4ngf, u2ngf, ungf, c7s1-out, tanh.

    Input (N, input_nc, H, W) with H, W multiples of 4 -> output (N, output_nc, H, W) in [-1, 1].
    ``downsample``/``upsample`` pick how the d and u layers resample (see DOWNSAMPLES and
    UPSAMPLES); the defaults are the official CycleGAN generator, ``"antialias"`` for both the
    official CUT one (its ``no_antialias``/``no_antialias_up`` False), each key for key.
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        use_dropout: bool = False,
        downsample: str = "conv",
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        if downsample not in DOWNSAMPLES:
            raise ValueError(f"unknown downsample {downsample!r}; choose one of {DOWNSAMPLES}")
        if upsample not in UPSAMPLES:
            raise ValueError(f"unknown upsample {upsample!r}; choose one of {UPSAMPLES}")
        self.input_nc, self.downsample, self.upsample = input_nc, downsample, upsample
        make_norm, bias = norm_layer(norm), conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=bias),
            make_norm(ngf),
            nn.ReLU(True),
        ]
        # Two halvings: (H, W) -> (H/2, W/2) -> (H/4, W/4), channels x2 each.
        for i in range(2):
            c_in, c_out = ngf * 2**i, ngf * 2 ** (i + 1)
            if downsample == "conv":
                layers += [
                    nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=bias),
                    make_norm(c_out),
                    nn.ReLU(True),
                ]
            else:
                layers += [
                    nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=bias),
                    make_norm(c_out),
                    nn.ReLU(True),
                    Downsample(c_out),
                ]
        layers += [ResnetBlock(ngf * 4, norm, use_dropout) for _ in range(n_blocks)]
        # Two doublings back up to (H, W), channels /2 each.
        for i in range(2):
            c_in, c_out = ngf * 2 ** (2 - i), ngf * 2 ** (1 - i)
            if upsample == "transpose":
                layers.append(
                    nn.ConvTranspose2d(
                        c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=bias
                    )
                )
            elif upsample == "antialias":
                layers += [Upsample(c_in), nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)]
            else:
                layers += [
                    nn.Upsample(scale_factor=2, mode=RESIZE_MODE),
                    nn.ReflectionPad2d(1),
                    nn.Conv2d(c_in, c_out, 3, padding=0, bias=bias),
                ]
            layers += [make_norm(c_out), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        # Set only inside `keeping`; None (a TorchScript constant) for scripting and export.
        self.keep_layers: list[int] | None = None
        self.kept: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.keep_layers is not None and not torch.jit.is_scripting():
            return self._forward_keeping(x, self.keep_layers)
        return self.model(x)

    @torch.jit.unused
    def _forward_keeping(self, x: torch.Tensor, keep: list[int]) -> torch.Tensor:
        """The translation; the activations :meth:`encode` would give for ``keep`` are left
        in ``self.kept``, detached. CUT's PatchNCE keys come from this same pass (the
        official code runs the encoder a second time on the same input for them). A side
        channel, not a second output, so that DDP and torch.compile wrap ``forward`` as is."""
        out, feats = self._run(x, keep, len(self.model))
        self.kept = [f.detach() for f in feats]
        return out

    def _run(
        self, x: torch.Tensor, keep: Sequence[int], depth: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The first ``depth`` layers on ``x``: their output and the activations of ``keep``."""
        feats: list[torch.Tensor] = []
        h = x
        for i, layer in enumerate(self.model[:depth]):
            h = layer(h)
            if i in keep:
                feats.append(h)
        return h, feats

    def keeping(self, layers: Sequence[int]) -> _Keeping:
        """``with G.keeping(layers): G_wrapped(x)`` leaves those layers' activations in
        ``G.kept`` (see :meth:`keeps_intact` for which layers can be kept)."""
        wanted = self.check_layers(layers)
        if not self.keeps_intact(wanted):
            raise ValueError(f"layers {wanted}: an in-place layer follows one of them")
        return _Keeping(self, wanted)

    def keeps_intact(self, layers: Sequence[int]) -> bool:
        """Whether the activations of ``layers`` survive the rest of the pass unchanged.

        Not so where an in-place ReLU comes next (directly or after a no-op norm): it would
        overwrite the kept tensor. CUT's default layers (a pad, convs, blocks) are intact.
        """
        mods = list(self.model)
        for i in layers:
            j = i + 1
            while j < len(mods) and isinstance(mods[j], nn.Identity):
                j += 1
            if j < len(mods) and isinstance(mods[j], nn.ReLU) and mods[j].inplace:
                return False
        return True

    def check_layers(self, layers: Sequence[int]) -> list[int]:
        """``layers`` as a list if they can be encoded, else ValueError saying why.

        Valid: a non-empty, strictly increasing sequence of indices into ``self.model``
        (``0 .. len(self.model) - 1``). CUT's default 0,4,8,12,16 needs at least 5 blocks
        with anti-aliased downsampling.
        """
        out = [int(i) for i in layers]
        if not out:
            raise ValueError("no encoder layers given")
        if any(b <= a for a, b in zip(out, out[1:], strict=False)):
            raise ValueError(f"encoder layers must be strictly increasing, got {out}")
        if out[0] < 0 or out[-1] >= len(self.model):
            raise ValueError(
                f"encoder layers must lie in 0..{len(self.model) - 1} for this generator, got {out}"
            )
        return out

    def encode(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """The activations right after ``self.model[i]`` for each ``i`` in ``layers``.

        As the official ``forward(x, layers, encode_only=True)``: layer 0 is the reflect-padded
        input itself (``model[0]`` is the pad), and the pass stops after the last requested
        layer, so the rest of the network costs nothing.
        """
        wanted = self.check_layers(layers)
        return self._run(x, wanted, wanted[-1] + 1)[1]

    def feature_channels(self, layers: Sequence[int]) -> list[int]:
        """The channel count of :meth:`encode`'s output for each layer, without running it.

        Lets a sample head be built (and a checkpoint restored into it) before any forward.
        """
        wanted = self.check_layers(layers)
        channels, c = [], self.input_nc
        for i, layer in enumerate(self.model[: wanted[-1] + 1]):
            # Only convs change the channel count; blocks, norms, pads and blurs keep it.
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                c = layer.out_channels
            if i in wanted:
                channels.append(c)
        return channels


class _Keeping:
    """The context of :meth:`ResnetGenerator.keeping`: sets, then always clears, the layers."""

    def __init__(self, gen: ResnetGenerator, layers: list[int]) -> None:
        self.gen, self.layers = gen, layers

    def __enter__(self) -> ResnetGenerator:
        self.gen.keep_layers, self.gen.kept = self.layers, []
        return self.gen

    def __exit__(self, *exc: object) -> None:
        self.gen.keep_layers = None
