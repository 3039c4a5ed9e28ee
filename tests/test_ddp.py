"""Multi-process training with torchrun (gloo, 2 CPU processes on 127.0.0.1)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import torch

from cyclekit.files import safe_load
from tests.helpers import TINY_TRAIN_FLAGS, make_image_tree

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(data, ck, nproc: int, *extra: str) -> str:
    flags = [
        "train",
        "--data",
        str(data),
        "--name",
        "ddp",
        "--checkpoints-dir",
        str(ck),
        *TINY_TRAIN_FLAGS,
        "--wandb-mode",
        "disabled",
        "--dropout",
        "--pool-size",
        "2",
        *extra,
    ]
    if nproc == 1:
        cmd = [sys.executable, "-m", "cyclekit", *flags]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc_per_node",
            str(nproc),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            "-m",
            "cyclekit",
            *flags,
        ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_two_gloo_processes_train_in_sync_and_checkpoints_cross_over(tmp_path):
    data = make_image_tree(tmp_path / "data", n_a=5, n_b=6)
    ck = tmp_path / "ck"
    log = _train(data, ck, 2, "--max-steps", "4", "--batch-size", "1")
    assert "batch 1 per process x 2 processes = 2 global" in log, log
    assert "3 steps/epoch" in log  # 6 samples shared by 2 ranks
    assert "weights identical on all 2 ranks: yes" in log, log
    assert log.count("stopped at step 4") == 1, log  # rank 0 alone reports and writes
    state = safe_load(ck / "ddp" / "last.pt")
    assert state["step"] == 4 and len(state["rank_states"]) == 2
    assert not any(k.startswith("module.") for k in state["models"]["G_ab"])
    # DDP checkpoint -> single process ...
    log = _train(data, ck, 1, "--resume", "auto", "--max-steps", "5")
    assert "resuming" in log and safe_load(ck / "ddp" / "last.pt")["step"] == 5, log
    # ... and back: a single-process checkpoint resumes under DDP.
    log = _train(data, ck, 2, "--resume", "auto", "--max-steps", "6")
    assert "resuming" in log and "weights identical on all 2 ranks: yes" in log, log
    assert safe_load(ck / "ddp" / "last.pt")["step"] == 6


def test_batch_norm_runs_are_in_sync_too(tmp_path):
    # Running statistics differ per rank by design; the parameters must not.
    data = make_image_tree(tmp_path / "data", n_a=4, n_b=4)
    log = _train(
        data, tmp_path / "ck", 2, "--max-steps", "2", "--norm", "batch", "--batch-size", "2"
    )
    assert "weights identical on all 2 ranks: yes" in log, log


def test_cut_trains_in_sync_under_two_gloo_processes(tmp_path):
    # G and D are DDP modules; the head runs twice per step, so its gradients are averaged
    # by hand: the end-of-run check covers all three.
    data = make_image_tree(tmp_path / "data", n_a=4, n_b=4)
    log = _train(
        data, tmp_path / "ck", 2, "--max-steps", "3", "--model", "cut", "--nce-layers", "0,4,8",
        "--num-patches", "16",
    )  # fmt: skip
    assert "weights identical on all 2 ranks: yes" in log, log
    state = safe_load(tmp_path / "ck" / "ddp" / "last.pt")
    assert set(state["models"]) == {"G_ab", "D_b", "F"} and state["step"] == 3
