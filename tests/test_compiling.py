"""``--compile`` left at auto: on for long runs where a compiler exists, off otherwise, and a
compile that fails falls back to eager without ending the run."""

from __future__ import annotations

import pytest
import torch

from cyclekit.errors import UsageError
from cyclekit.training import compiling
from cyclekit.training.compiling import AUTO_MIN_PIXEL_STEPS, choose_compile
from cyclekit.training.loop import train
from tests.helpers import make_image_tree, tiny_config

CPU = torch.device("cpu")


@pytest.fixture
def no_compiler(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)


@pytest.fixture
def a_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "g++")
    monkeypatch.setattr(compiling.shutil, "which", lambda name: "/usr/bin/" + name)


def test_auto_compiles_long_runs_and_not_short_ones(a_compiler):
    px = 128 * 128
    long_steps = int(AUTO_MIN_PIXEL_STEPS["cpu"] / px) + 1
    assert choose_compile(None, CPU, long_steps, px).enabled
    short = choose_compile(None, CPU, long_steps // 10, px)
    assert not short.enabled and "too few" in short.reason
    # The same steps at a 4x smaller image are not enough: the work is what counts.
    assert not choose_compile(None, CPU, long_steps, px // 4).enabled
    # The default official plan (1,000+ images x 200 epochs at 256^2) compiles.
    assert choose_compile(None, CPU, 200 * 1000, 256 * 256).enabled


def test_auto_does_not_compile_a_short_time_budget(a_compiler):
    choice = choose_compile(None, CPU, 10**6, 256 * 256, max_minutes=5)
    assert not choice.enabled and "--max-minutes 5" in choice.reason
    assert choose_compile(None, CPU, 10**6, 256 * 256, max_minutes=600).enabled


def test_auto_without_a_compiler_is_off_and_says_why(no_compiler):
    choice = choose_compile(None, CPU, 10**6, 256 * 256)
    assert not choice.enabled and "no C++ compiler" in choice.reason


def test_asking_for_compile_without_a_compiler_is_a_clear_error(no_compiler):
    with pytest.raises(UsageError, match="--compile cannot work here: no C\\+\\+ compiler"):
        choose_compile(True, CPU, 10, 32 * 32)


def test_the_users_word_wins(a_compiler):
    assert choose_compile(True, CPU, 1, 32 * 32).enabled  # tiny, but asked for
    assert not choose_compile(False, CPU, 10**9, 256 * 256).enabled


def test_auto_is_off_on_devices_without_a_rule(a_compiler):
    assert not choose_compile(None, torch.device("mps"), 10**6, 256 * 256).enabled


def test_a_tiny_run_says_compile_is_off(tmp_path, capsys):
    data = make_image_tree(tmp_path / "data", n_a=2, n_b=2)
    train(tiny_config(data, tmp_path / "runs", epochs=1, epochs_decay=0), progress=False)
    assert "torch.compile off (auto: 2 planned steps are too few" in capsys.readouterr().err


def test_a_failing_compile_chosen_by_auto_falls_back_to_eager(tmp_path, monkeypatch, capsys):
    """A broken toolchain (CXX=/bin/false) must not end a run that auto chose to compile."""
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "suppress_errors", False)  # restored after
    monkeypatch.setitem(AUTO_MIN_PIXEL_STEPS, "cpu", 0)
    monkeypatch.setenv("CXX", "/bin/false")
    torch._dynamo.reset()
    data = make_image_tree(tmp_path / "data", n_a=2, n_b=2)
    cfg = tiny_config(data, tmp_path / "runs", epochs=1, epochs_decay=0, ngf=4, ndf=4)
    try:
        result = train(cfg, progress=False)
    finally:
        torch._dynamo.reset()
    assert "torch.compile on (auto: 2 planned steps)" in capsys.readouterr().err
    assert result.step == 2 and all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())
