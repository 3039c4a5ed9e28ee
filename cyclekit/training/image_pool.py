"""History of generated images for the discriminators (Shrivastava et al.), seeded.

Behaves as the official ``ImagePool``: until full, every fake is stored and returned; after
that each fake is, with probability 1/2, swapped for a random stored one (the stored one is
returned, the new one kept). Randomness comes from the pool's own generator, whose state is
checkpointed with the pool so a resumed run draws the same numbers.
"""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    def __init__(self, size: int, seed: int = 0) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []  # each (1, C, H, W), detached
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) fakes in -> (N, C, H, W) images for the discriminator, detached."""
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images.split(1):
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif torch.rand((), generator=self.generator).item() > 0.5:
                idx = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[idx])
                self.images[idx] = image
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "images": [t.cpu() for t in self.images],
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        if state["size"] != self.size:
            raise ValueError(f"pool size {state['size']} in checkpoint, {self.size} configured")
        self.images = [t.to(device) for t in state["images"]]
        self.generator.set_state(state["generator"])
