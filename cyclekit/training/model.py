"""The interface between the shared training run and one model (CycleGAN today, CUT next).

The loop in :mod:`cyclekit.training.loop` knows nothing about generators, pools or losses: it
calls a model through the methods below. A new model is a class with these members plus one
line in :data:`BUILDERS`; the loop, checkpoints, resume, samples, W&B and DDP come for free.

Members a model provides:

``build(cfg, device, rank) -> model`` (a function in :data:`BUILDERS`)
    Networks initialised from ``cfg.seed`` (identical on every rank), optimisers, and any
    per-rank state (image pools, private generators) seeded from ``(cfg.seed, rank)``.
``loss_names: tuple[str, ...]``
    The keys :meth:`train_step` returns, in logging order (``loss/<name>`` in W&B).
``summary_names: tuple[str, ...]``
    The few losses shown on the progress bar and in each epoch's summary line.
``train_step(batch, autocast, scaler) -> dict[str, Tensor]``
    One full iteration (every forward, backward and optimiser step). ``batch`` is the data
    loader's dict of tensors, already on the device. Returns detached 0-d losses on the device:
    the loop sums them there and syncs only when it logs.
``networks() -> dict[str, nn.Module]``
    Everything with weights, by checkpoint key. The loop may replace entries with wrapped
    modules (DDP, ``torch.compile``) through :meth:`wrap_networks`.
``wrap_networks(fn)``
    Replace each network by ``fn(name, module)``; the model must keep using the wrapped ones.
``optimizers() -> dict[str, Optimizer]``
    By checkpoint key; the loop sets their learning rate from the schedule.
``prepare_restore(models)``
    Called with a checkpoint's state_dicts before they are loaded: a model whose parts are
    built lazily (CUT's head) builds them here so that the load finds them.
``rank_state() -> dict`` / ``load_rank_state(state, device)``
    What differs between ranks and must survive a resume (pools, random streams), as
    ``weights_only``-safe values.
``sample(batch_a, batch_b, autocast) -> dict[str, Tensor]``
    Images for the sample grid, keyed by :data:`cyclekit.training.samples.COLUMNS` names that
    the model can fill (real and translated at least).
``generators() -> dict[str, tuple[nn.Module, dict, str]]``
    The generators ``cyclekit translate`` loads: file stem -> (plain module, constructor spec,
    direction ``a2b``/``b2a``).
``specs: dict[str, dict]``
    Constructor specs of the generators, saved in every checkpoint.

Optional (health alarms that need them are skipped without; see
:mod:`cyclekit.training.health`):

``discriminators() -> dict[str, nn.Module]``
    Direction (``a2b``/``b2a``) -> the discriminator judging that direction's translations.
``adversarial_losses() -> dict[str, tuple[str, str, float]]``
    Direction -> (its discriminator's loss name, its generator's adversarial loss name, the
    weight that loss is logged with).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from cyclekit.training.config import TrainConfig


class TrainModel(Protocol):
    loss_names: tuple[str, ...]
    summary_names: tuple[str, ...]
    specs: dict[str, dict[str, Any]]

    def train_step(
        self,
        batch: dict[str, torch.Tensor],
        autocast: Callable[[], Any],
        scaler: torch.amp.GradScaler,
    ) -> dict[str, torch.Tensor]: ...

    def networks(self) -> dict[str, nn.Module]: ...

    def wrap_networks(self, fn: Callable[[str, nn.Module], nn.Module]) -> None: ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...

    def prepare_restore(self, models: dict[str, dict[str, torch.Tensor]]) -> None: ...

    def rank_state(self) -> dict[str, Any]: ...

    def load_rank_state(self, state: dict[str, Any], device: torch.device) -> None: ...

    def sample(
        self, real_a: torch.Tensor, real_b: torch.Tensor, autocast: Callable[[], Any]
    ) -> dict[str, torch.Tensor]: ...

    def generators(self) -> dict[str, tuple[nn.Module, dict[str, Any], str]]: ...


def _build_cyclegan(cfg: TrainConfig, device: torch.device, rank: int) -> TrainModel:
    from cyclekit.training.cyclegan import build_cyclegan

    return build_cyclegan(cfg, device, rank)


# Model name -> builder. Imported lazily so a model's code loads only when it is trained.
def _build_cut(cfg: TrainConfig, device: torch.device, rank: int) -> TrainModel:
    from cyclekit.training.cut import build_cut

    return build_cut(cfg, device, rank)


BUILDERS: dict[str, Callable[[TrainConfig, torch.device, int], TrainModel]] = {
    "cyclegan": _build_cyclegan,
    "cut": _build_cut,  # FastCUT is CUT with other defaults
    "fastcut": _build_cut,
}


def build_model(cfg: TrainConfig, device: torch.device, rank: int = 0) -> TrainModel:
    return BUILDERS[getattr(cfg, "model", "cyclegan")](cfg, device, rank)
