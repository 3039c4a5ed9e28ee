"""The CycleGAN step and loop: update order, learning, determinism, exact resume, schedule."""

from __future__ import annotations

import copy

import pytest
import torch

from cyclekit.devices import autocast
from cyclekit.files import CheckpointError, safe_load
from cyclekit.generator_io import load_generator
from cyclekit.training.config import ConfigError, TrainConfig
from cyclekit.training.cyclegan import build_cyclegan, train_step
from cyclekit.training.loop import train
from cyclekit.training.run import lr_factor
from tests.helpers import make_image_tree, tiny_config


def _step_setup(**kw):
    values = dict(data="x", ngf=4, ndf=4, netG="resnet_6blocks", crop_size=32) | kw
    cfg = TrainConfig(**values)
    m = build_cyclegan(cfg, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    # Smooth random images (4x4 noise, upsampled): structure a tiny generator can reproduce.
    real_a, real_b = (
        torch.nn.functional.interpolate(
            torch.rand(2, 3, 4, 4, generator=g) * 2 - 1, size=(32, 32), mode="bilinear"
        )
        for _ in range(2)
    )
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return cfg, m, real_a, real_b, scaler


def test_generator_update_sees_frozen_discriminators_then_d_update_follows():
    cfg, m, real_a, real_b, scaler = _step_setup()
    seen = {}
    g_step, d_step = m.opt_G.step, m.opt_D.step

    def spy_g(*a, **k):
        seen["D_grads_at_G_step"] = [p.grad for n in (m.D_a, m.D_b) for p in n.parameters()]
        seen["G_grads"] = [p.grad for n in (m.G_ab, m.G_ba) for p in n.parameters()]
        seen["order"] = ["G"]
        return g_step(*a, **k)

    def spy_d(*a, **k):
        seen["order"].append("D")
        seen["D_grads"] = [p.grad for n in (m.D_a, m.D_b) for p in n.parameters()]
        return d_step(*a, **k)

    m.opt_G.step, m.opt_D.step = spy_g, spy_d
    losses = train_step(m, real_a, real_b, cfg, autocast(torch.device("cpu"), "fp32"), scaler)
    assert seen["order"] == ["G", "D"]
    assert all(g is None for g in seen["D_grads_at_G_step"])  # D frozen during the G update
    assert all(g is not None and torch.isfinite(g).all() for g in seen["G_grads"])
    assert all(
        g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in seen["D_grads"]
    )
    assert losses["idt_a"] > 0 and "gp_a" not in losses  # no penalty term outside wgangp
    assert losses["G"] == pytest.approx(
        sum(losses[k] for k in ("G_ab", "G_ba", "cycle_a", "cycle_b", "idt_a", "idt_b")).item(),
        rel=1e-5,
    )


def test_identity_off_and_wgangp_penalty_applied():
    cfg, m, real_a, real_b, scaler = _step_setup(lambda_identity=0.0, gan_mode="wgangp")
    losses = train_step(m, real_a, real_b, cfg, autocast(torch.device("cpu"), "fp32"), scaler)
    assert losses["idt_a"] == 0 and losses["idt_b"] == 0
    assert losses["gp_a"] > 0 and losses["gp_b"] > 0


def test_bf16_step_runs_on_cpu():
    cfg, m, real_a, real_b, scaler = _step_setup()
    losses = train_step(m, real_a, real_b, cfg, autocast(torch.device("cpu"), "bf16"), scaler)
    assert all(torch.isfinite(v) for v in losses.values())


def test_tiny_model_learns_to_lower_its_cycle_loss():
    cfg, m, real_a, real_b, scaler = _step_setup(pool_size=0, lr=2e-3, ngf=8)
    ctx = autocast(torch.device("cpu"), "fp32")
    first = train_step(m, real_a, real_b, cfg, ctx, scaler)
    for _ in range(40):
        last = train_step(m, real_a, real_b, cfg, ctx, scaler)
    cycle = lambda d: (d["cycle_a"] + d["cycle_b"]).item()  # noqa: E731
    assert cycle(last) < 0.5 * cycle(first)


def test_lr_schedule_constant_then_linear_to_zero():
    total, decay = 10, 4
    f = [lr_factor(s, total, decay) for s in range(total + 1)]
    assert f[:7] == [1.0] * 7
    assert f[7:] == [0.75, 0.5, 0.25, 0.0]


def test_same_seed_same_run_on_cpu(tmp_path):
    data = make_image_tree(tmp_path / "data")
    runs = []
    for name in ("r1", "r2"):
        res = train(
            tiny_config(data, tmp_path / "ck", name=name, max_steps=4, dropout=True), progress=False
        )
        state = safe_load(res.run_dir / "last.pt")
        runs.append((res.history, state["models"]))
    assert runs[0][0] == [] or [h["loss/G"] for h in runs[0][0]] == [
        h["loss/G"] for h in runs[1][0]
    ]
    for name, sd in runs[0][1].items():
        for k, v in sd.items():
            assert torch.equal(v, runs[1][1][name][k]), (name, k)
    other = train(
        tiny_config(data, tmp_path / "ck", name="r3", max_steps=4, dropout=True, seed=1),
        progress=False,
    )
    w3 = safe_load(other.run_dir / "last.pt")["models"]["G_ab"]["model.1.weight"]
    assert not torch.equal(w3, runs[0][1]["G_ab"]["model.1.weight"])


def test_stop_and_resume_matches_uninterrupted_run_bit_for_bit(tmp_path):
    # 5 A / 4 B images, batch 2: 3 steps an epoch with a short last batch; stop mid-epoch 2.
    data = make_image_tree(tmp_path / "data", n_a=5, n_b=4)
    common = dict(batch_size=2, dropout=True, pool_size=2, epochs=1, epochs_decay=2)
    full = train(
        tiny_config(data, tmp_path / "ck", name="full", max_steps=8, **common), progress=False
    )
    part = tiny_config(data, tmp_path / "ck", name="split", max_steps=4, **common)
    first = train(part, progress=False)
    assert first.step == 4 and first.epoch == 1
    resumed_cfg = copy.replace(part, max_steps=8) if hasattr(copy, "replace") else None
    if resumed_cfg is None:
        from dataclasses import replace

        resumed_cfg = replace(part, max_steps=8)
    second = train(resumed_cfg, resume="auto", explicit={"max_steps"}, progress=False)
    assert second.step == 8
    a = safe_load(full.run_dir / "last.pt")
    b = safe_load(second.run_dir / "last.pt")
    for name in ("G_ab", "G_ba", "D_a", "D_b"):
        for k, v in a["models"][name].items():
            assert torch.equal(v, b["models"][name][k]), (name, k)
    assert a["optimizers"]["G"]["state"][0]["exp_avg"].equal(
        b["optimizers"]["G"]["state"][0]["exp_avg"]
    )
    assert [t.sum() for t in a["pools"]["a"]["images"]] == [
        t.sum() for t in b["pools"]["a"]["images"]
    ]
    assert full.history[-1]["loss/G"] == second.history[-1]["loss/G"]


def test_resume_refuses_changed_architecture_and_allows_more_epochs(tmp_path):
    data = make_image_tree(tmp_path / "data")
    cfg = tiny_config(data, tmp_path / "ck", max_steps=2)
    train(cfg, progress=False)
    from dataclasses import replace

    with pytest.raises(ConfigError, match="--ngf 16"):
        train(replace(cfg, ngf=16), resume="auto", explicit={"ngf"}, progress=False)
    res = train(
        replace(cfg, max_steps=3, epochs=5),
        resume="auto",
        explicit={"max_steps", "epochs"},
        progress=False,
    )
    assert res.step == 3


def test_run_folder_contents_and_exported_generators(tmp_path):
    data = make_image_tree(tmp_path / "data")
    res = train(
        tiny_config(data, tmp_path / "ck", epochs=1, epochs_decay=1, save_every=1, sample_every=3),
        progress=False,
    )
    run = res.run_dir
    assert res.step == 10 and res.epoch == 2  # 5 steps x 2 epochs, ran to the end
    assert {"config.yaml", "last.pt", "G_ab.pt", "G_ba.pt", "epoch_0001.pt", "epoch_0002.pt"} <= {
        p.name for p in run.iterdir()
    }
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_00000003.png",
        "step_00000006.png",
        "step_00000009.png",
        "step_00000010.png",
    ]
    assert res.history[-1]["lr/G"] == 0.0  # the decay reaches 0 at the end
    state = safe_load(run / "last.pt")
    for key in ("models", "optimizers", "schedulers", "pools", "rng", "step", "epoch", "config"):
        assert key in state
    assert state["format_version"] == 1
    # The exported generator and the training checkpoint give the same translation.
    x = torch.rand(1, 3, 36, 44) * 2 - 1
    g_export, info = load_generator(run / "G_ab.pt")
    g_train, _ = load_generator(run / "last.pt", direction="a2b")
    g_epoch, _ = load_generator(run / "epoch_0002.pt", direction="a2b")
    assert info["direction"] == "a2b" and info["spec"]["ngf"] == 8
    with torch.no_grad():
        assert torch.equal(g_export(x), g_train(x)) and torch.equal(g_export(x), g_epoch(x))
    with pytest.raises(CheckpointError, match="--direction"):
        load_generator(run / "last.pt")
    with pytest.raises(CheckpointError, match="epoch checkpoint"):
        train(tiny_config(data, tmp_path / "ck"), resume=str(run / "epoch_0001.pt"), progress=False)


def test_truncated_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    data = make_image_tree(tmp_path / "data")
    res = train(tiny_config(data, tmp_path / "ck", max_steps=1), progress=False)
    last = res.run_dir / "last.pt"
    cut = tmp_path / "cut.pt"
    cut.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable"):
        safe_load(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"hello": 1}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a cyclekit training checkpoint"):
        train(tiny_config(data, tmp_path / "ck"), resume=str(foreign), progress=False)
    evil = tmp_path / "evil.pt"
    torch.save({"x": object.__new__(type("Evil", (), {}))}, evil) if False else torch.save(
        {"f": print}, evil
    )
    with pytest.raises(CheckpointError, match="evil.pt"):
        safe_load(evil)  # weights_only refuses arbitrary Python objects


def test_schedule_follows_epochs_when_steps_per_epoch_change_on_resume(tmp_path):
    # One epoch on 5 images (5 steps), then the run resumes on 10 images (10 steps/epoch):
    # the second, decay, epoch must still end at lr 0 (a step-count schedule would not).
    small = make_image_tree(tmp_path / "small", n_a=5, n_b=5)
    big = make_image_tree(tmp_path / "big", n_a=10, n_b=10, seed=1)
    cfg = tiny_config(small, tmp_path / "ck", epochs=1, epochs_decay=1, max_steps=5)
    first = train(cfg, progress=False)
    assert first.epoch == 1 and first.history[-1]["lr/G"] == pytest.approx(2e-4)
    from dataclasses import replace

    resumed = train(
        replace(cfg, data=str(big), max_steps=None),
        resume="auto",
        explicit={"data", "max_steps"},
        progress=False,
    )
    assert resumed.step == 15 and resumed.finished
    lrs = [h["lr/G"] for h in resumed.history]
    assert lrs[-1] == 0.0 and lrs[4] == pytest.approx(1e-4)  # halfway through the decay
