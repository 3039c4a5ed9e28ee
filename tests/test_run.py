"""The shared run: folder lock, epoch summaries, loss records, and the model interface."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import torch
from torch import nn

from cyclekit.files import safe_load
from cyclekit.training import model as model_registry
from cyclekit.training.loop import train
from cyclekit.training.rundir import RunFolderError, RunLock
from tests.helpers import make_image_tree, tiny_config


def _hold_lock(run_dir) -> subprocess.Popen:
    """A second process that takes the run folder's lock and sleeps (a run in progress)."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from cyclekit.training.rundir import RunLock
        RunLock({str(run_dir)!r}).acquire()
        print("locked", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_in_the_same_folder_is_refused_until_the_first_dies(tmp_path):
    data = make_image_tree(tmp_path / "data")
    cfg = tiny_config(data, tmp_path / "ck", max_steps=1)
    holder = _hold_lock(cfg.run_dir)
    try:
        with pytest.raises(RunFolderError, match="another run is using this folder.*pid"):
            train(cfg, progress=False)
        assert not (cfg.run_dir / "last.pt").exists()
    finally:
        holder.kill()  # a crash: no clean release, the kernel drops the flock
        holder.wait()
    res = train(cfg, progress=False)  # the stale lock file does not block the next run
    assert res.step == 1 and (cfg.run_dir / "last.pt").is_file()


def test_lock_is_released_and_a_failed_start_leaves_no_folder(tmp_path):
    run_dir = tmp_path / "ck" / "never"
    with pytest.raises(RuntimeError):
        with RunLock(run_dir):
            raise RuntimeError("bad flag")
    assert not run_dir.exists()
    with RunLock(run_dir):  # free again
        (run_dir / "keep.txt").write_text("x")
    assert (run_dir / "keep.txt").exists()  # a folder with real files is left alone


def _epoch_line(err: str, epoch: int) -> dict[str, float]:
    line = next(x for x in err.splitlines() if x.startswith(f"epoch {epoch}/"))
    fields = line.split(": ", 1)[1].split(", ")
    pairs = fields[1].split()
    return {k: float(v) for k, v in zip(pairs[::2], pairs[1::2], strict=True)}


def test_epoch_summary_is_the_mean_of_every_step_whatever_the_log_window(tmp_path, capsys):
    data = make_image_tree(tmp_path / "data")  # 5 A / 4 B: 5 steps an epoch
    common = dict(epochs=2, epochs_decay=0)
    per_step = train(tiny_config(data, tmp_path / "ck", name="each", **common), progress=False)
    capsys.readouterr()
    # Log windows of 3 steps straddle the epoch boundary; of 1000, never flush in an epoch.
    for name, log_every in (("three", 3), ("never", 1000)):
        train(
            tiny_config(data, tmp_path / "ck", name=name, log_every=log_every, **common),
            progress=False,
        )
        err = capsys.readouterr().err
        for epoch in (1, 2):
            summary = _epoch_line(err, epoch)
            steps = [h for h in per_step.history if (epoch - 1) * 5 < h["step"] <= epoch * 5]
            assert set(summary) == {"G", "D_a", "D_b", "cycle_a", "cycle_b"}
            for k, v in summary.items():
                expected = sum(h[f"loss/{k}"] for h in steps) / len(steps)
                assert v == pytest.approx(expected, abs=1.5e-3), (name, epoch, k)


def test_losses_are_recorded_for_a_run_stopped_before_its_first_log(tmp_path):
    data = make_image_tree(tmp_path / "data")
    res = train(
        tiny_config(data, tmp_path / "ck", log_every=1000, max_minutes=1e-9), progress=False
    )
    assert res.step == 1 and not res.finished
    assert res.losses and res.history[-1]["step"] == 1
    assert res.losses["G"] == pytest.approx(res.history[-1]["loss/G"])


def test_gradient_penalty_is_logged_only_when_there_is_one(tmp_path):
    data = make_image_tree(tmp_path / "data")
    lsgan = train(tiny_config(data, tmp_path / "ck", name="ls", max_steps=1), progress=False)
    assert "loss/gp_a" not in lsgan.history[-1] and "loss/D_a" in lsgan.history[-1]
    wgan = train(
        tiny_config(data, tmp_path / "ck", name="wg", max_steps=1, gan_mode="wgangp"),
        progress=False,
    )
    assert wgan.history[-1]["loss/gp_a"] > 0


class _Shift:
    """A one-sided toy model written only against the interface: G_ab adds a learned offset."""

    loss_names = ("L1",)
    summary_names = ("L1",)

    def __init__(self, cfg: Any, device: torch.device, rank: int) -> None:
        self.G_ab = nn.Conv2d(3, 3, 1).to(device)
        self.opt = torch.optim.Adam(self.G_ab.parameters(), lr=cfg.lr)
        self.specs = {"G_ab": {"arch": "toy"}}
        self.steps_seen = 0

    def train_step(self, batch, autocast, scaler):
        self.opt.zero_grad()
        loss = (self.G_ab(batch["a"]) - batch["b"].mean()).abs().mean()
        loss.backward()
        self.opt.step()
        self.steps_seen += 1
        return {"L1": loss.detach()}

    def networks(self):
        return {"G_ab": self.G_ab}

    def wrap_networks(self, fn):
        self.G_ab = fn("G_ab", self.G_ab)

    def optimizers(self):
        return {"G": self.opt}

    def prepare_restore(self, models):
        pass

    def rank_state(self):
        return {"seen": self.steps_seen}

    def load_rank_state(self, state, device):
        self.steps_seen = state["seen"]

    def sample(self, real_a, real_b, autocast):
        return {"real_a": real_a, "fake_b": self.G_ab(real_a)}

    def generators(self):
        return {}


def test_a_second_model_plugs_in_without_touching_the_loop(tmp_path, monkeypatch):
    monkeypatch.setitem(model_registry.BUILDERS, "cyclegan", _Shift)
    data = make_image_tree(tmp_path / "data")
    cfg = tiny_config(data, tmp_path / "ck", epochs=1, epochs_decay=1)
    first = train(dataclasses.replace(cfg, max_steps=3), progress=False)
    assert first.step == 3 and set(first.history[-1]) >= {"loss/L1", "lr/G", "epoch"}
    resumed = train(cfg, resume="auto", explicit=set(), progress=False)
    assert resumed.step == 10 and resumed.finished
    state = safe_load(resumed.run_dir / "last.pt")
    assert set(state["models"]) == {"G_ab"} and state["seen"] == 10
    assert set(state["optimizers"]) == {"G"} and state["step"] == 10
    assert resumed.history[-1]["lr/G"] == 0.0  # the shared schedule decayed it to the end
    assert list(itertools.islice((resumed.run_dir / "samples").glob("*.png"), 1))


def test_resuming_an_online_run_without_credentials_fails_before_writing(tmp_path, monkeypatch):
    from cyclekit.errors import UsageError
    from cyclekit.files import atomic_save

    data = make_image_tree(tmp_path / "data")
    cfg = tiny_config(data, tmp_path / "ck", max_steps=1)
    train(cfg, progress=False)
    last = cfg.run_dir / "last.pt"
    state = safe_load(last)
    state["config"]["wandb_mode"] = "online"  # as saved by a run that logged online
    atomic_save(state, last)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    before = {p.name: p.read_bytes() for p in cfg.run_dir.iterdir() if p.is_file()}
    with pytest.raises(UsageError, match="online needs W&B credentials"):
        train(dataclasses.replace(cfg, max_steps=2), resume="auto", explicit={"max_steps"},
              progress=False)  # fmt: skip
    after = {p.name: p.read_bytes() for p in cfg.run_dir.iterdir() if p.is_file()}
    assert after == before
