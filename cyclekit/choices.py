"""The allowed values of settings whose code lives beside torch, kept here without torch.

``cyclekit train --help`` lists every choice, and config checks validate against them; with
the lists in the torch modules, help took 3 s (importing torch) instead of a blink. The
modules that implement each choice import its list from here, so it is still written once.
"""

from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
NORMS = ("instance", "batch", "none")
INITS = ("normal", "xavier", "kaiming", "orthogonal")
# "conv": stride-2 conv (CycleGAN). "antialias": stride-1 conv, norm, ReLU, blur-pool (CUT).
DOWNSAMPLES = ("conv", "antialias")
# "transpose": stride-2 transposed conv (CycleGAN). "antialias": fixed [1,3,3,1] blur upsampling
# then a 3x3 conv (CUT). "resize-conv": nearest-neighbour x2 then a reflect-padded 3x3 conv,
# the CycleGAN FAQ's fix for checkerboard artifacts (see models.resnet.RESIZE_MODE).
UPSAMPLES = ("transpose", "resize-conv", "antialias")
# Video flicker reduction (cyclekit.translate.temporal).
TEMPORAL_MODES = ("none", "stats", "flow")

# U-Net generators: how many times each halves the image.
UNET_DOWNS = {"unet_128": 7, "unet_256": 8}


def side_multiple(arch: str) -> int:
    """Image sides a generator needs for output size == input size (here, not beside the
    models, so that translate can pad images without importing torch).

    4 for every ResNet variant: each of its two halvings (strided conv or blur-pool) gives
    ceil(H / 2) and each doubling exactly 2 H, whatever ``downsample``/``upsample`` say.
    """
    if arch.startswith("unet"):
        return 2 ** UNET_DOWNS[arch]
    return 4
