"""Killing or stopping a training run never loses or corrupts last.pt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cyclekit.files import atomic_save, safe_load
from tests.helpers import make_image_tree


def _start(data, ck, *extra):
    args = [
        sys.executable,
        "-m",
        "cyclekit",
        "train",
        "--data",
        str(data),
        "--name",
        "kill",
        "--checkpoints-dir",
        str(ck),
        "--ngf",
        "4",
        "--ndf",
        "4",
        "--netG",
        "resnet_6blocks",
        "--load-size",
        "32",
        "--crop-size",
        "32",
        "--num-workers",
        "0",
        "--no-progress",
        "--wandb-mode",
        "disabled",
        "--device",
        "cpu",
        "--save-latest-every",
        "1",
        "--max-steps",
        "100000",
        *extra,
    ]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_step(last, at_least, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        if last.exists():
            try:
                if safe_load(last)["step"] >= at_least:
                    return
            except Exception:  # noqa: BLE001 - a reader racing the rename sees the old file
                pass
        time.sleep(0.05)
    raise AssertionError("training did not save in time")


def test_sigkill_mid_save_leaves_a_loadable_last_pt(tmp_path):
    data = make_image_tree(tmp_path / "data", size=(32, 32))
    last = tmp_path / "ck" / "kill" / "last.pt"
    proc = _start(data, tmp_path / "ck")
    try:
        _wait_for_step(last, 3, proc)
        # last.pt is rewritten after every step; a reader never catches a half-written file,
        # and the kill below lands at an arbitrary point of that write cycle.
        for delay in (0.0, 0.013, 0.029):
            time.sleep(delay)
            assert safe_load(last)["step"] >= 3
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = safe_load(last)  # loads, with every part present
    assert {"models", "optimizers", "rng", "pools"} <= set(state)
    # A restart cleans up the temporary file a killed save may have left and resumes.
    proc = _start(data, tmp_path / "ck", "--resume", "auto", "--max-steps", str(state["step"] + 1))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert f"resuming {last} at step {state['step']}" in out
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_saves_and_exits_130_then_resume_continues(tmp_path):
    data = make_image_tree(tmp_path / "data", size=(32, 32))
    last = tmp_path / "ck" / "kill" / "last.pt"
    proc = _start(data, tmp_path / "ck", "--save-latest-every", "1000")
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "ck" / "kill" / "config.yaml").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    step = safe_load(last)["step"]
    assert step >= 1 and f"stopped at step {step}" in out


def test_atomic_save_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"step": 1}, path)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"step": 2}, path)
    assert safe_load(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
