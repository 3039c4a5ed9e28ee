"""cyclekit: unpaired image-to-image translation with CycleGAN.

Importing the package is cheap on purpose: heavy dependencies (torch, wandb, albumentations)
are imported by the modules that use them, so ``cyclekit --help`` starts fast.
"""

__version__ = "0.1.0"
