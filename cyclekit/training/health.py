"""Is the run healthy? Cheap alarms from what training computes anyway, and the NaN stop.

Signals, per direction the model translates (``a2b``, and ``b2a`` for CycleGAN):

- from the fixed **sample batch**, translated for the sample grids every ``--sample-every``
  steps, plus one discriminator forward on it (a few images: milliseconds):

  - ``corr``: Pearson correlation of each translation's luminance with its input's, averaged.
    A translation keeps the input's layout, so this is positive; strongly negative means the
    generators learnt to invert colours (a cycle is satisfied by inverting twice).
  - ``change``: mean absolute difference between translation and input, in [-1, 1] pixel
    units (2 = black to white).
  - ``d_auc``: how well the discriminator tells real target-domain images from the
    translations: the probability that a random real patch scores above a random translated
    one (Mann-Whitney AUC over the PatchGAN's outputs). 0.5: it cannot tell; 1: always.
    Rank-based, so it means the same under every ``--gan-mode``.
  - ``spread``: mean pairwise distance between the translations of different inputs, over
    the same between the inputs. About 1 when outputs differ as much as inputs do; near 0
    when every input maps to nearly the same image (mode collapse).

- from the **losses** of each log window: ``d_ratio``, the discriminator's loss over its
  chance level (its loss when it outputs "undecided" everywhere: 0.25 for LSGAN, ln 2 for
  vanilla, 1 for hinge), and the generator's adversarial loss.

- from **every step's losses**, checked on the device without a host sync, so the step is
  named exactly: a NaN or infinite loss (see :class:`NanWatch`).

Alarms (each a one-line warning saying what it means and what to try, logged to W&B as
``health/alarm/*`` and sent as a W&B alert when online, at most once per alarm and direction
every :data:`REPEAT_STEPS` steps; the run goes on unless ``--stop-on-alarm``):

- **inversion**: ``corr`` < :data:`INVERSION_CORR` (a task that *is* an inversion, e.g.
  negatives to positives, warns too: ignore it there);
- **does nothing**: ``change`` < :data:`NOTHING_CHANGE` while the discriminator separates
  (``d_ratio`` < :data:`NOTHING_D_RATIO`; where the loss has no chance level, WGAN-GP, the
  sample ``d_auc`` > :data:`NOTHING_AUC`). When D cannot tell either, the domains are alike
  and doing little is right;
- **collapse**: ``spread`` < :data:`COLLAPSE_SPREAD`;
- **discriminator wins**: ``d_ratio`` < :data:`D_WINS_FRACTION` in every log window for at
  least :data:`D_WINS_STEPS` steps, while G's adversarial loss stays above its own chance
  level and does not come down (not for WGAN-GP, whose critic loss has no floor);
- **not a number**: stops the run at once, always, keeping the last good ``last.pt``.

The sample alarms fire only when their condition holds at :data:`CONSECUTIVE` sample checks
in a row, so one odd batch never raises one.

Thresholds, measured on the demo's setting (day2night 64 px, ngf/ndf 16, batch 4, lr 4e-4,
bf16 on a CPU, 8 sample images, a check every 25 steps). Healthy: 300 steps of normal
training. Unhealthy on purpose, 150 steps each (400 for the frozen G): G_ab replaced by -x,
by the identity, by a constant, and G's optimiser step disabled (D trains alone)::

    signal       healthy (min..max)      unhealthy                         threshold
    corr         +0.09 .. +0.41          -1.00 (G_ab = -x); G_ba, trained    < -0.5
                                         beside it, learnt -0.88 by step 75
    change       0.70 .. 0.79            0.000 (identity)                   < 0.02
    d_ratio      0.67 .. 1.6             0.04..0.14 from step 40 (identity) < 0.3 (with change)
    spread       0.36 .. 1.53            0.000 (constant)                   < 0.1
    d_ratio, G   0.67 .. 1.6, G_ab       D: < 0.10 from step 100, < 0.05    < 0.1 for 1000
                 0.23 .. 0.62            from step 200 (0.017 at 400);      steps, G not
                                         G_ab flat at 1.00 (4x chance)      coming down

``d_auc`` (logged, the does-nothing fallback) was 0.41..0.57 healthy and 0.95 with the frozen
G, but only 0.65 with the identity G: the demo's samples are upscaled to 256 px while D was
trained at 64, so D's own training loss judges it better wherever it has a chance level.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from cyclekit.errors import CyclekitError
from cyclekit.training.distributed import any_rank, unwrap
from cyclekit.training.tracking import NullTracker

if TYPE_CHECKING:
    from cyclekit.training.model import TrainModel
    from cyclekit.training.run import Run

INVERSION_CORR = -0.5
NOTHING_CHANGE = 0.02  # ~2.5 of 255 grey levels: an invisible change
NOTHING_D_RATIO = 0.3  # D's loss under 0.3x its chance level: it separates, it does not guess
NOTHING_AUC = 0.9  # the same from the sample batch, where the loss has no chance level
COLLAPSE_SPREAD = 0.1
D_WINS_FRACTION = 0.1
D_WINS_STEPS = 1000
CONSECUTIVE = 2
REPEAT_STEPS = 5000
# Each objective's losses when D outputs "undecided" everywhere (0.5 for LSGAN, logit 0 for
# vanilla, 0 for hinge): D's is 0.5 x (real + fake) as in losses.discriminator_adv_loss.
D_CHANCE = {"lsgan": 0.25, "vanilla": math.log(2), "hinge": 1.0}
G_CHANCE = {"lsgan": 0.25, "vanilla": math.log(2), "hinge": 0.0}
# Which sample-grid images make one direction: (input, translation, real target).
SAMPLE_KEYS = {"a2b": ("real_a", "fake_b", "real_b"), "b2a": ("real_b", "fake_a", "real_a")}
# BT.601 luma, as cyclekit.evaluate.metrics.luminance.
_LUMA = (0.299, 0.587, 0.114)


class NonFiniteLossError(CyclekitError):
    """A loss became NaN or infinite: the run stopped without saving the broken state."""


class AlarmStopError(CyclekitError):
    """``--stop-on-alarm``: an alarm fired; last.pt was saved and the run stopped."""


# -- not a number ---------------------------------------------------------------------------


class NanWatch:
    """The first step with a non-finite loss, kept on the device (no host sync per step).

    :meth:`update` adds a handful of tiny kernels to a step; :meth:`first_bad` syncs once.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.at: torch.Tensor | None = None  # the first bad step, -1 while all is well
        self.values: torch.Tensor | None = None  # the losses at that step

    def update(self, losses: dict[str, torch.Tensor], step: int) -> None:
        values = torch.stack([v.float() for v in losses.values()])
        if self.at is None or self.values is None or len(self.names) != len(values):
            self.names = list(losses)
            self.at = torch.full((), -1, dtype=torch.long, device=values.device)
            self.values = torch.zeros_like(values)
        first = (~torch.isfinite(values)).any() & (self.at < 0)
        self.at = torch.where(first, step, self.at)
        self.values = torch.where(first, values, self.values)

    def first_bad(self) -> tuple[int, dict[str, float]] | None:
        """(step, the non-finite losses at it), or None."""
        if self.at is None or self.values is None:
            return None
        step = int(self.at)
        if step < 0:
            return None
        bad = {n: float(v) for n, v in zip(self.names, self.values.tolist(), strict=True)}
        return step, {n: v for n, v in bad.items() if not math.isfinite(v)}


def weights_finite(model: TrainModel) -> bool:
    """Every weight of every network is a finite number (one host sync)."""
    nets = model.networks().values()
    flags = [torch.isfinite(p).all() for net in nets for p in net.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def check_finite(run: Run, model: TrainModel) -> None:
    """Raise :class:`NonFiniteLossError` if any loss since the start was NaN or infinite, or
    the weights are. Called at each log and before anything is saved, so a broken state is
    never written; every rank calls it (the decision is shared under torch.distributed)."""
    found = run.nan_watch.first_bad()
    weights_ok = found is None and weights_finite(model)
    if not any_rank(found is not None or not weights_ok, run.dist, run.device):
        return
    if found is not None:
        step, bad = found
        what = ", ".join(f"{n} = {v}" for n, v in bad.items())
        where = f"step {step}: loss {what}"
    else:
        where = f"step {run.step}: " + (
            "the weights are not finite numbers"
            if not weights_ok
            else "another rank's loss is not a finite number"
        )
    kept = (
        f"{run.run_dir / 'last.pt'} (step {run.saved_step}) is the last good state, kept as it was"
        if run.saved_step is not None
        else "nothing was saved (no good state yet)"
    )
    low = run.precision in ("bf16", "fp16")
    hint = (
        "resume it with --resume auto --precision fp32" if low else "start again with a lower --lr"
    )
    msg = f"{where}; training stopped, {kept}. Try: {hint}, or another --gan-mode"
    run.tracker.log({"health/nonfinite_step": float(found[0] if found else run.step)}, run.step)
    run.tracker.alert(f"cyclekit {run.cfg.name}: not a number", msg, every_s=60)
    run.tracker.finish()  # the run ends here: W&B keeps what was logged
    run.tracker = NullTracker()
    raise NonFiniteLossError(msg)


# -- signals --------------------------------------------------------------------------------


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W) luminance (C = 1 or 3)."""
    if x.shape[1] == 3:
        w = x.new_tensor(_LUMA).view(1, 3, 1, 1)
        x = (x * w).sum(1, keepdim=True)
    return x.flatten(1)


def correlation(inputs: torch.Tensor, outputs: torch.Tensor) -> float:
    """Mean per-image Pearson correlation of the luminances (0 where an image is flat)."""
    a, b = _luma(inputs.float()), _luma(outputs.float())
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    den = (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return float(((a * b).sum(1) / den).mean())


def mean_change(inputs: torch.Tensor, outputs: torch.Tensor) -> float:
    """Mean |output - input| per pixel and channel (luminance when the channels differ)."""
    a, b = inputs.float(), outputs.float()
    if a.shape[1] != b.shape[1]:
        a, b = _luma(a), _luma(b)
    return float((b - a).abs().mean())


def spread(inputs: torch.Tensor, outputs: torch.Tensor) -> float | None:
    """Mean pairwise L1 distance between outputs over that between inputs; None when there
    are fewer than 2 images or the inputs are (nearly) all the same."""
    if len(inputs) < 2:
        return None
    pairwise = lambda x: torch.cdist(x.float().flatten(1), x.float().flatten(1), p=1)  # noqa: E731
    n, numel_in, numel_out = len(inputs), inputs[0].numel(), outputs[0].numel()
    d_in = pairwise(inputs).sum() / (n * (n - 1) * numel_in)
    d_out = pairwise(outputs).sum() / (n * (n - 1) * numel_out)
    if float(d_in) < 1e-3:
        return None
    return float(d_out / d_in)


def separation(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> float:
    """P(a random real score > a random fake score), ties counted half (Mann-Whitney AUC)."""
    real = real_scores.detach().float().flatten().cpu()
    fake = torch.sort(fake_scores.detach().float().flatten().cpu()).values
    below = torch.searchsorted(fake, real, right=False)
    at_or_below = torch.searchsorted(fake, real, right=True)
    wins = below.double() + 0.5 * (at_or_below - below).double()
    return float(wins.mean() / len(fake))


@dataclass(frozen=True)
class Signals:
    corr: float
    change: float
    spread: float | None
    d_auc: float | None  # None: the model exposes no discriminator

    def record(self, direction: str) -> dict[str, float]:
        out = {f"health/{direction}/{k}": v for k, v in vars(self).items() if v is not None}
        return out


@torch.no_grad()
def sample_signals(
    inputs: torch.Tensor,
    outputs: torch.Tensor,
    d_real: torch.Tensor | None = None,
    d_fake: torch.Tensor | None = None,
) -> Signals:
    """The signals of one direction from the sample batch (tensors in [-1, 1]) and the
    discriminator's outputs on real target images and on the translations."""
    auc = separation(d_real, d_fake) if d_real is not None and d_fake is not None else None
    return Signals(
        correlation(inputs, outputs), mean_change(inputs, outputs), spread(inputs, outputs), auc
    )


# -- judging --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alarm:
    kind: str  # inversion | nothing | collapse | d_wins
    direction: str
    step: int
    message: str  # one line: what it means and what to try

    @property
    def key(self) -> str:
        return f"{self.kind}_{self.direction}"


def _hints(model: str) -> dict[str, str]:
    one_sided = model in ("cut", "fastcut")
    return {
        "inversion": "try the identity loss (--nce-idt)" if one_sided
        else "try --lambda-identity 0.5 or more (a generator fed its own domain must then "
        "leave it alone), or another --seed",
        "nothing": "try a lower --lambda-nce or a higher --lambda-gan" if one_sided
        else "try a lower --lambda-identity, or lower --lambda-a/--lambda-b (the cycle and "
        "identity losses outweigh the adversarial one)",
        "collapse": "try a higher --lambda-nce, or a lower --lr" if one_sided
        else "try higher --lambda-a/--lambda-b (the cycle keeps inputs apart), --pool-size 50, "
        "or a lower --lr",
        "d_wins": "try a weaker discriminator (--ndf 32, or --netD n_layers --n-layers-D 2), "
        + ("a higher --lambda-gan" if one_sided else "--pool-size 50")
        + ", or --gan-mode lsgan",
    }  # fmt: skip


class Judge:
    """Turns signals into alarms: thresholds, persistence, the loss trend. No side effects."""

    def __init__(
        self,
        model: str,
        gan_mode: str,
        adversarial: dict[str, tuple[str, str, float]],
        log_every: int,
        d_wins_steps: int | None = None,
    ) -> None:
        self.hints = _hints(model)
        self.gan_mode = gan_mode
        self.adversarial = adversarial  # direction -> (D loss key, G adv loss key, G weight)
        steps = D_WINS_STEPS if d_wins_steps is None else d_wins_steps
        self.windows = max(3, math.ceil(steps / log_every))
        self.history: dict[str, deque[tuple[int, float, float]]] = {
            d: deque(maxlen=self.windows) for d in adversarial
        }
        self.streak: dict[str, int] = {}
        self.d_ratio: dict[str, float] = {}  # the latest D loss / its chance level

    def _persistent(self, key: str, holds: bool) -> bool:
        self.streak[key] = self.streak.get(key, 0) + 1 if holds else 0
        return self.streak[key] >= CONSECUTIVE

    def samples(self, step: int, direction: str, s: Signals) -> list[Alarm]:
        d, found = direction, []
        if self._persistent(f"inversion_{d}", s.corr < INVERSION_CORR):
            found.append(Alarm("inversion", d, step, (
                f"{d} translations look colour-inverted (correlation with their inputs "
                f"{s.corr:+.2f}; a cycle is satisfied by inverting twice); "
                + self.hints["inversion"]
            )))  # fmt: skip
        confident, how = self._d_confident(d, s)
        if self._persistent(f"nothing_{d}", confident and s.change < NOTHING_CHANGE):
            found.append(Alarm("nothing", d, step, (
                f"{d} translations are nearly their inputs (mean change {s.change:.3f}) while "
                f"the discriminator still tells them from real images ({how}): the generator "
                "is stuck doing nothing; " + self.hints["nothing"]
            )))  # fmt: skip
        collapsed = s.spread is not None and s.spread < COLLAPSE_SPREAD
        if self._persistent(f"collapse_{d}", collapsed):
            found.append(Alarm("collapse", d, step, (
                f"{d} translations of different inputs are nearly identical (they differ "
                f"{s.spread:.2f}x as much as the inputs): mode collapse; " + self.hints["collapse"]
            )))  # fmt: skip
        return found

    def _d_confident(self, direction: str, s: Signals) -> tuple[bool, str]:
        """Does the discriminator separate real images from this direction's translations?
        Its training loss says it best (measured on what it was trained on); the sample
        AUC stands in where there is no loss with a chance level (WGAN-GP)."""
        ratio = self.d_ratio.get(direction)
        if ratio is not None:
            return ratio < NOTHING_D_RATIO, f"its loss is {ratio:.2f}x its chance level"
        if s.d_auc is not None:
            return s.d_auc > NOTHING_AUC, f"AUC {s.d_auc:.2f}"
        return False, ""

    def losses(self, step: int, means: dict[str, float]) -> list[Alarm]:
        if self.gan_mode not in D_CHANCE:
            return []  # WGAN-GP: the critic's loss has no floor to compare with
        found = []
        for d, (d_key, g_key, weight) in self.adversarial.items():
            if d_key in means:
                self.d_ratio[d] = means[d_key] / D_CHANCE[self.gan_mode]
            if d_key not in means or g_key not in means or weight <= 0:
                continue
            hist = self.history[d]
            hist.append((step, means[d_key], means[g_key] / weight))
            if len(hist) < self.windows:
                continue
            d_losses = [h[1] for h in hist]
            g = [h[2] for h in hist]
            half = len(g) // 2
            first, second = sum(g[:half]) / half, sum(g[-half:]) / half
            floor = D_WINS_FRACTION * D_CHANCE[self.gan_mode]
            # G is not catching up: its loss did not come down by more than 10 % (a plateau at
            # "always caught" counts, noise around it must not hide it) and is above chance.
            not_falling = second >= first - 0.1 * abs(first)
            if max(d_losses) < floor and not_falling and g[-1] > G_CHANCE[self.gan_mode]:
                steps = step - hist[0][0]
                found.append(Alarm("d_wins", d, step, (
                    f"{d}: the discriminator wins (its loss stayed below {floor:.3g}, chance "
                    f"{D_CHANCE[self.gan_mode]:.3g}, for {steps} steps while the generator's "
                    f"adversarial loss went {g[0]:.2f} -> {g[-1]:.2f}): the generator gets no "
                    "useful gradient; " + self.hints["d_wins"]
                )))  # fmt: skip
        return found


# -- the run's side -------------------------------------------------------------------------


def _discriminator_scores(
    model: TrainModel, direction: str, real: torch.Tensor, fake: torch.Tensor, autocast: Callable
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """D's outputs on real target images and on translations, in eval mode (a batch-norm D
    must not update its running statistics from these), or None without a discriminator."""
    nets = getattr(model, "discriminators", None)
    net = nets().get(direction) if nets is not None else None
    if net is None:
        return None
    net = unwrap(net)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), autocast():
            return net(real).float(), net(fake).float()
    finally:
        net.train(was_training)


@dataclass
class Health:
    """The alarms of one run: fed by the loop, warns, logs, and stops when asked."""

    run: Run
    model: TrainModel
    judge: Judge
    last_warned: dict[str, int] = field(default_factory=dict)
    stop_reason: Alarm | None = None
    stopped: bool = False  # the run left its loop because of an alarm (any rank's)
    fired: int = 0

    @classmethod
    def start(cls, run: Run, model: TrainModel) -> Health:
        cfg = run.cfg
        pairs = getattr(model, "adversarial_losses", None)
        judge = Judge(cfg.model, cfg.gan_mode, pairs() if pairs else {}, cfg.log_every)
        return cls(run, model, judge)

    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        self.run.nan_watch.update(losses, self.run.step)

    def on_log(self, means: dict[str, float]) -> None:
        """At each log: the NaN check (stops at once), then the loss-trend alarms."""
        check_finite(self.run, self.model)
        self._deliver(self.judge.losses(self.run.step, means))

    def on_samples(self, images: dict[str, torch.Tensor] | None) -> None:
        """After each sample grid (rank 0): the sample-batch signals and their alarms."""
        if images is None:
            return
        record, found = {}, []
        for d, (src, out, target) in SAMPLE_KEYS.items():
            if src not in images or out not in images:
                continue
            x, y = images[src], images[out]
            scores = (
                _discriminator_scores(self.model, d, images[target], y, self.run.autocast)
                if target in images
                else None
            )
            s = sample_signals(x, y, *(scores or (None, None)))
            record |= s.record(d)
            found += self.judge.samples(self.run.step, d, s)
        self.run.tracker.log(record, self.run.step)
        self._deliver(found)

    def _deliver(self, alarms: list[Alarm]) -> None:
        from tqdm import tqdm

        run = self.run
        for alarm in alarms:
            last = self.last_warned.get(alarm.key)
            if last is not None and alarm.step - last < REPEAT_STEPS:
                continue
            self.last_warned[alarm.key] = alarm.step
            self.fired += 1
            if run.main:
                # tqdm.write keeps an active progress bar intact.
                tqdm.write(f"warning: step {alarm.step}: {alarm.message}", file=sys.stderr)
            run.tracker.log(
                {f"health/alarm/{alarm.key}": 1.0, "health/alarms": self.fired}, run.step
            )
            run.tracker.alert(
                f"cyclekit {run.cfg.name}: {alarm.kind} ({alarm.direction})", alarm.message,
                every_s=60,
            )  # fmt: skip
            if run.cfg.stop_on_alarm and self.stop_reason is None:
                self.stop_reason = alarm

    def stop_requested(self, log_now: bool) -> bool:
        """``--stop-on-alarm`` and an alarm fired (decided together at log steps under DDP)."""
        if not self.run.cfg.stop_on_alarm:
            return False
        fired = self.stop_reason is not None
        if self.run.dist.enabled:
            fired = log_now and any_rank(fired, self.run.dist, self.run.device)
        self.stopped = self.stopped or fired
        return fired

    def raise_if_stopped(self) -> None:
        """After last.pt is saved: a run stopped by an alarm ends with a one-line error."""
        if self.stop_reason is None and not self.stopped:
            return
        why = self.stop_reason.message if self.stop_reason else "an alarm on another rank"
        raise AlarmStopError(
            f"stopped at step {self.run.step} by --stop-on-alarm: {why}. "
            f"{self.run.run_dir / 'last.pt'} is saved; continue with --resume auto"
        )
