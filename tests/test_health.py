"""Training-health alarms: each fires on a constructed case (an inverting, an identity and a
constant generator, an over-strong discriminator, an injected NaN) and stays quiet on healthy
values and on a short healthy run; --stop-on-alarm; a NaN never overwrites last.pt."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cyclekit.cli import main
from cyclekit.files import safe_load
from cyclekit.training import health, tracking
from cyclekit.training import model as model_registry
from cyclekit.training.cyclegan import CycleGAN, build_cyclegan
from cyclekit.training.health import (
    AlarmStopError,
    Judge,
    NanWatch,
    NonFiniteLossError,
    sample_signals,
    separation,
)
from cyclekit.training.loop import train
from tests.helpers import TINY_TRAIN_FLAGS, make_image_tree, tiny_config
from tests.test_train_eval import Recorder, recorder  # noqa: F401 - a fixture


def smooth_images(n: int = 4, seed: int = 0, offset: float = 0.0) -> torch.Tensor:
    """(n, 3, 32, 32) in [-1, 1]: 4x4 noise upsampled, so images have structure."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear")
    return (x * 0.6 + offset).clamp(-1, 1)


def brightness_d(x: torch.Tensor) -> torch.Tensor:
    """A confident stand-in discriminator: "real B" = bright, scored per 8x8 patch."""
    return torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 8)


def healthy_translation(x: torch.Tensor) -> torch.Tensor:
    # A grade that keeps the layout: what a working generator's output looks like.
    return torch.tanh(1.3 * x + 0.4) * torch.tensor([0.9, 1.0, 0.8]).view(1, 3, 1, 1)


def judge(**kw) -> Judge:
    pairs = {"a2b": ("D_b", "G_ab", 1.0), "b2a": ("D_a", "G_ba", 1.0)}
    return Judge(kw.pop("model", "cyclegan"), kw.pop("gan_mode", "lsgan"), pairs, **kw)


def alarms_after_two_checks(signals) -> set[str]:
    j = judge(log_every=100)
    assert j.samples(1, "a2b", signals) == []  # one odd batch is never enough
    return {a.kind for a in j.samples(2, "a2b", signals)}


# -- signals and thresholds ----------------------------------------------------------------


def test_inverting_generator_fires_inversion_only():
    x, real_b = smooth_images(), smooth_images(seed=1, offset=0.3)
    y = -x
    s = sample_signals(x, y, brightness_d(real_b), brightness_d(y))
    assert s.corr == pytest.approx(-1.0, abs=1e-6)
    assert alarms_after_two_checks(s) == {"inversion"}


def test_identity_generator_with_a_confident_discriminator_fires_does_nothing():
    x, real_b = smooth_images(offset=-0.4), smooth_images(seed=1, offset=0.4)
    s = sample_signals(x, x, brightness_d(real_b), brightness_d(x))
    assert s.change == 0 and s.d_auc == pytest.approx(1.0)
    assert alarms_after_two_checks(s) == {"nothing"}  # judged by the sample AUC
    # Doing nothing is right when D cannot tell the domains apart either: no alarm.
    alike = smooth_images(seed=2, offset=-0.4)
    s_alike = sample_signals(x, x, brightness_d(alike), brightness_d(x))
    assert 0.2 < s_alike.d_auc < 0.8 and alarms_after_two_checks(s_alike) == set()
    # With D's training loss at hand, it decides (it measures D where D was trained).
    for d_loss, fires in ((0.01, True), (0.2, False)):
        j = judge(log_every=100)
        j.losses(100, {"D_b": d_loss, "G_ab": 0.9})
        found = j.samples(100, "a2b", s) + j.samples(200, "a2b", s)
        assert [a.kind for a in found] == (["nothing"] if fires else []), d_loss
        assert not fires or "its loss is 0.04x its chance level" in found[0].message


def test_constant_generator_fires_collapse():
    x = smooth_images()
    y = torch.full_like(x, 0.3) + 0.01 * smooth_images(seed=5)[:1]  # one image for every input
    s = sample_signals(x, y, brightness_d(smooth_images(seed=1)), brightness_d(y))
    assert s.spread is not None and s.spread < 0.05
    assert alarms_after_two_checks(s) == {"collapse"}


def test_healthy_translations_raise_nothing():
    x, real_b = smooth_images(offset=-0.3), smooth_images(seed=1, offset=0.3)
    y = healthy_translation(x)
    s = sample_signals(x, y, brightness_d(real_b), brightness_d(y))
    assert s.corr > 0.5 and s.change > 0.1 and s.spread > 0.5
    assert alarms_after_two_checks(s) == set()
    # One image, grayscale to RGB: what can be computed still is, nothing breaks.
    s = sample_signals(x[:1, :1], y[:1])
    assert s.spread is None and s.d_auc is None and s.corr > 0.5


def test_separation_is_the_pairwise_win_rate():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(7, generator=g), torch.randn(5, generator=g)
    real[0] = fake[2]  # a tie counts half
    wins = sum((r > f) + 0.5 * (r == f) for r in real.tolist() for f in fake.tolist())
    assert separation(real, fake) == pytest.approx(wins / 35)
    assert separation(torch.ones(4), torch.zeros(4)) == 1.0


def test_discriminator_winning_for_many_steps_fires_and_normal_losses_do_not():
    j = judge(log_every=100)  # 1000 steps = 10 log windows
    found = []
    for i in range(10):  # D near 0, G's adversarial loss climbing towards 1
        g = 0.5 + 0.05 * i
        found += j.losses(100 * (i + 1), {"D_b": 0.002, "G_ab": g, "D_a": 0.2, "G_ba": 0.3})
    assert [(a.kind, a.direction, a.step) for a in found] == [("d_wins", "a2b", 1000)]
    assert "--ndf 32" in found[0].message and "\n" not in found[0].message
    rng = np.random.default_rng(0)
    for mode, d_level, g_level in (("lsgan", 0.2, 0.35), ("vanilla", 0.6, 0.9)):
        j = judge(log_every=100, gan_mode=mode)
        for i in range(30):  # a healthy game: D around its chance level, noisy
            means = {"D_b": d_level + 0.05 * rng.standard_normal(), "G_ab": g_level,
                     "D_a": d_level, "G_ba": g_level + 0.1 * rng.standard_normal()}  # fmt: skip
            assert j.losses(100 * (i + 1), means) == []
    j = judge(log_every=100)
    for i in range(20):  # D near 0 but G catching up (its loss falling): not yet an alarm
        assert j.losses(100 * (i + 1), {"D_b": 0.001, "G_ab": 1.0 - 0.03 * i}) == []
    j = judge(log_every=100, gan_mode="wgangp")  # the critic's loss has no floor
    assert all(j.losses(100 * (i + 1), {"D_b": -5.0, "G_ab": 3.0 + i}) == [] for i in range(20))


def test_nan_watch_names_the_first_bad_step_and_loss():
    w = NanWatch()
    w.update({"G": torch.tensor(1.0), "D": torch.tensor(0.5)}, 1)
    assert w.first_bad() is None
    w.update({"G": torch.tensor(float("nan")), "D": torch.tensor(0.5)}, 2)
    w.update({"G": torch.tensor(float("inf")), "D": torch.tensor(float("nan"))}, 3)
    step, bad = w.first_bad()
    assert step == 2 and list(bad) == ["G"] and math.isnan(bad["G"])


# -- in a run -------------------------------------------------------------------------------


def health_data(root: Path) -> Path:
    """The tiny tree with dark test A and bright test B images (3 each)."""
    data = make_image_tree(root)
    rng = np.random.default_rng(7)
    for sub, lo, hi in (("testA", 0, 120), ("testB", 130, 256)):
        for i in range(3):
            Image.fromarray(rng.integers(lo, hi, (40, 48, 3), dtype=np.uint8)).save(
                data / sub / f"t{i}.png"
            )
    return data


def patched_cyclegan(monkeypatch, change) -> None:
    """Train the real CycleGAN with ``change(model)`` applied after it is built."""

    def build(cfg, device, rank):
        m = build_cyclegan(cfg, device, rank)
        change(m)
        return m

    monkeypatch.setitem(model_registry.BUILDERS, "cyclegan", build)


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: step")]


def test_a_short_healthy_run_raises_no_alarm(tmp_path, capsys, recorder):  # noqa: F811
    data = health_data(tmp_path / "data")
    train(tiny_config(data, tmp_path / "ck", sample_every=1, max_steps=12), progress=False)
    assert warnings_in(capsys.readouterr().err) == []
    assert len(recorder.values("health/a2b/corr")) == 12 and recorder.alerts == []
    assert not any(k.startswith("health/alarm") for _, r in recorder.records for k in r)


def test_inverting_generator_warns_once_and_reaches_wandb(
    tmp_path,
    monkeypatch,
    capsys,
    recorder,  # noqa: F811
):
    patched_cyclegan(monkeypatch, lambda m: setattr(m.G_ab, "forward", lambda x: -x))
    data = health_data(tmp_path / "data")
    train(tiny_config(data, tmp_path / "ck", sample_every=1, max_steps=8), progress=False)
    found = warnings_in(capsys.readouterr().err)
    # Rate-limited: one warning in 8 steps, on the second check in a row.
    assert len(found) == 1 and found[0].startswith("warning: step 2: a2b translations look colour")
    assert "--lambda-identity" in found[0]
    assert recorder.values("health/alarm/inversion_a2b") == [(2, 1.0)]
    assert recorder.alerts and "inversion (a2b)" in recorder.alerts[0][0]


def test_stop_on_alarm_saves_last_pt_and_exits_non_zero(tmp_path, monkeypatch):
    patched_cyclegan(monkeypatch, lambda m: setattr(m.G_ab, "forward", torch.zeros_like))
    data = health_data(tmp_path / "data")
    cfg = tiny_config(data, tmp_path / "ck", sample_every=1, stop_on_alarm=True)
    with pytest.raises(AlarmStopError, match=r"stopped at step 2 by --stop-on-alarm: a2b .*"
                       "nearly identical.*mode collapse"):  # fmt: skip
        train(cfg, progress=False)
    assert safe_load(cfg.run_dir / "last.pt")["step"] == 2
    args = ["train", "--data", str(data), "--checkpoints-dir", str(tmp_path / "ck2")]
    args += [*TINY_TRAIN_FLAGS, "--sample-every", "1", "--stop-on-alarm"]
    r = CliRunner().invoke(main, [*args, "--wandb-mode", "disabled"])
    assert r.exit_code == 1 and (r.exception is None or isinstance(r.exception, SystemExit))
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--stop-on-alarm" in errors[0] and "--resume auto" in errors[0]


def test_identity_generator_and_confident_discriminator_warn_does_nothing(
    tmp_path, monkeypatch, capsys
):
    def change(m):
        m.G_ab.forward = lambda x: x
        # An over-strong D: tells bright B from dark A at once, and is sure of it.
        m.D_b.forward = lambda x: torch.sigmoid(20 * brightness_d(x))

    patched_cyclegan(monkeypatch, change)
    data = health_data(tmp_path / "data")
    train(tiny_config(data, tmp_path / "ck", sample_every=1, max_steps=3), progress=False)
    found = warnings_in(capsys.readouterr().err)
    assert len(found) == 1 and "a2b translations are nearly their inputs" in found[0]


def test_over_strong_discriminator_warns_from_the_losses(tmp_path, monkeypatch, capsys):
    real_step, seen = CycleGAN.train_step, []

    def step(self, batch, autocast, scaler):
        losses = real_step(self, batch, autocast, scaler)
        seen.append(1)
        return losses | {"D_b": torch.tensor(1e-4), "G_ab": torch.tensor(0.5 + 0.05 * len(seen))}

    monkeypatch.setattr(CycleGAN, "train_step", step)
    monkeypatch.setattr(health, "D_WINS_STEPS", 6)
    data = health_data(tmp_path / "data")
    train(tiny_config(data, tmp_path / "ck", max_steps=8), progress=False)
    found = warnings_in(capsys.readouterr().err)
    assert len(found) == 1 and found[0].startswith("warning: step 6: a2b: the discriminator wins")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("log_every", [1, 100])
def test_nan_loss_stops_at_once_and_keeps_the_last_good_last_pt(tmp_path, monkeypatch, log_every):
    data = health_data(tmp_path / "data")
    cfg = tiny_config(data, tmp_path / "ck", save_latest_every=2, log_every=log_every)
    real_step, seen, saved = CycleGAN.train_step, [], {}

    def step(self, batch, autocast, scaler):
        losses = real_step(self, batch, autocast, scaler)
        seen.append(1)
        if len(seen) == 3:  # last.pt holds step 2 now
            saved["digest"] = _digest(cfg.run_dir / "last.pt")
            losses["G_ba"] = torch.tensor(float("nan"))
        return losses

    monkeypatch.setattr(CycleGAN, "train_step", step)
    with pytest.raises(NonFiniteLossError, match=r"^step 3: loss G_ba = nan; training stopped"):
        train(cfg, progress=False)
    last = cfg.run_dir / "last.pt"
    assert safe_load(last)["step"] == 2 and _digest(last) == saved["digest"]
    assert len(seen) == (3 if log_every == 1 else 4)  # at the log, or at the next save


def test_nan_weights_are_never_saved_and_the_cli_says_so_in_one_line(tmp_path, monkeypatch):
    real_step, seen = CycleGAN.train_step, []

    def step(self, batch, autocast, scaler):
        losses = real_step(self, batch, autocast, scaler)
        seen.append(1)
        if len(seen) == 4:  # after the step's losses: only the weights are broken
            with torch.no_grad():
                next(self.G_ab.parameters()).fill_(float("inf"))
        return losses

    monkeypatch.setattr(CycleGAN, "train_step", step)
    data = health_data(tmp_path / "data")
    args = ["train", "--data", str(data), "--checkpoints-dir", str(tmp_path / "ck")]
    args += [*TINY_TRAIN_FLAGS, "--save-latest-every", "2", "--log-every", "100"]
    r = CliRunner().invoke(main, [*args, "--wandb-mode", "disabled"])
    assert r.exit_code == 1 and (r.exception is None or isinstance(r.exception, SystemExit))
    assert r.output.count("Error:") == 1
    line = next(x for x in r.output.splitlines() if x.startswith("Error:"))
    assert "weights are not finite" in line and "(step 2) is the last good state" in line
    assert safe_load(tmp_path / "ck" / "cyclegan" / "last.pt")["step"] == 2


def test_wandb_alerts_go_out_only_when_online():
    sent = []

    class Run:
        def alert(self, **kw):
            sent.append(kw)

    import types

    tracker = object.__new__(tracking.WandbTracker)
    tracker.run, tracker._broken = Run(), False
    tracker._wandb = types.SimpleNamespace(AlertLevel=types.SimpleNamespace(WARN="WARN"))
    tracker.mode = "offline"
    tracker.alert("t", "text", every_s=60)
    assert sent == []
    tracker.mode = "online"
    tracker.alert("x" * 80, "text", every_s=60)
    assert sent == [{"title": "x" * 63, "text": "text", "level": "WARN", "wait_duration": 60}]
