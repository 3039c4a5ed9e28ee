"""``cyclekit gan`` / ``cyclekit ae`` end to end with CliRunner, on fake MNIST-format data
written to tmp_path; includes every command the README's MNIST section shows."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cyclekit.cli import main
from cyclekit.files import new_file_mode, safe_load
from tests.mnist_fakes import write_fake_mnist
from tests.wandb_reader import history, wait_until_complete

# The MNIST section of README.md, in order. They run as written, in a folder whose
# datasets/mnist holds 600 + 200 fake digits (enough for the evaluation classifier to reach
# the accuracy `gan eval` requires).
README_COMMANDS = [
    "cyclekit gan train",
    "cyclekit gan train --lr 2e-4 --betas 0.9 0.999 --batch-size 100 --name lecture",
    "cyclekit gan train --digits 3 --name threes",
    "cyclekit gan train --resume auto --epochs 40",
    "cyclekit gan train --arch dcgan --epochs 5",
    "cyclekit gan sample --checkpoint checkpoints/mnist_gan_mlp/last.pt -n 64 -o grid.png",
    "cyclekit gan sample --checkpoint checkpoints/mnist_gan_mlp/last.pt -n 64 -o samples/",
    "cyclekit gan eval --checkpoint checkpoints/mnist_gan_mlp/last.pt",
    "cyclekit ae train --noise 0.5",
    "cyclekit ae train --arch conv --epochs 3",
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_fake_mnist(tmp_path / "datasets" / "mnist", n_train=600, n_test=200)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CYCLEKIT_CACHE", str(tmp_path / "cache"))  # never the user's home
    return tmp_path


def invoke(args: str | list[str], code: int = 0) -> str:
    result = CliRunner().invoke(main, shlex.split(args) if isinstance(args, str) else args)
    assert result.exit_code == code, result.output
    # No traceback: CliRunner keeps the exception, a bug would be here (not in the output).
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if code != 0:  # user errors: one line naming the problem
        errors = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert len(errors) == 1, result.output
    return result.output


TINY = "--hidden 16 --latent-dim 8 --batch-size 16 --wandb-mode disabled --no-download"


def test_readme_commands(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")  # what --wandb-mode auto then resolves to
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only adds sync cost on a busy CPU
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    out = {}
    for command in README_COMMANDS:
        out[command] = invoke(command.removeprefix("cyclekit "))
    run = workdir / "checkpoints" / "mnist_gan_mlp"
    assert len(list((run / "samples").glob("step_*.png"))) == 40  # 30 + 10 resumed epochs
    assert Image.open(run / "samples.gif").n_frames == 40
    assert "resuming from" in out[README_COMMANDS[3]]
    assert Image.open(workdir / "grid.png").size == (8 * 30 + 2, 8 * 30 + 2)
    for shared in (workdir / "grid.png", workdir / "samples" / "00000.png", run / "samples.gif"):
        assert shared.stat().st_mode & 0o777 == new_file_mode(), shared  # not mkstemp's 0o600
    assert len(list((workdir / "samples").glob("*.png"))) == 64
    assert Image.open(workdir / "samples" / "00000.png").size == (28, 28)
    report = out[README_COMMANDS[7]]
    for text in ("classifier test accuracy", "Fréchet distance (10000 samples", "missing digits"):
        assert text in report
    assert "test MSE" in out[README_COMMANDS[8]]
    assert (workdir / "checkpoints" / "mnist_ae_mlp" / "reconstructions.png").is_file()
    assert (workdir / "checkpoints" / "mnist_ae_conv" / "last.pt").is_file()
    threes = safe_load(workdir / "checkpoints" / "threes" / "last.pt")
    assert list(threes["config"]["digits"]) == [3]
    # The sample commands may be run again: they replace only their own earlier output.
    invoke(README_COMMANDS[5].removeprefix("cyclekit "))
    invoke(README_COMMANDS[6].removeprefix("cyclekit "))


def test_gan_train_max_steps_resume_and_json_eval(workdir: Path) -> None:
    invoke(f"gan train {TINY} --max-steps 3 --name t")
    out = invoke(f"gan train {TINY} --max-steps 5 --name t --resume auto")
    assert "resuming from" in out and "step 5" in out
    invoke("gan eval --checkpoint checkpoints/t/last.pt -n 200 --classifier-epochs 2 --json r.json")
    report = json.loads((workdir / "r.json").read_text())
    assert report["n_samples"] == 200 and sum(report["class_histogram"]) == 200
    assert {"frechet_distance", "frechet_distance_real", "mean_confidence"} <= set(report)
    assert report["classifier_test_accuracy"] >= 0.95
    assert (workdir / "r.json").stat().st_mode & 0o777 == new_file_mode()
    assert len(list((workdir / "cache").glob("mnist-classifier-*.pt"))) == 1
    # an earlier report may be replaced; the same numbers come back
    invoke("gan eval --checkpoint checkpoints/t/last.pt -n 200 --json r.json")
    assert json.loads((workdir / "r.json").read_text()) == report


def test_resume_auto_restores_digits_and_refuses_changed_flags(workdir: Path) -> None:
    out = invoke(f"gan train {TINY} --digits 3 --max-steps 1 --name threes --resume auto")
    assert "nothing to resume at checkpoints/threes/last.pt; starting a new run" in out
    out = invoke(f"gan train {TINY} --name threes --resume auto --lr 0.5 --arch dcgan", code=1)
    assert "--lr 0.5 (run has 0.001)" in out and "--arch dcgan (run has mlp)" in out
    invoke(f"gan train {TINY} --name threes --resume auto --max-steps 2")
    blob = safe_load(workdir / "checkpoints" / "threes" / "last.pt")
    assert list(blob["config"]["digits"]) == [3] and blob["step"] == 2
    assert "- 3" in (workdir / "checkpoints" / "threes" / "config.yaml").read_text()


def test_wandb_offline_gets_the_metrics_of_each_epoch(workdir: Path) -> None:
    flags = TINY.replace("disabled", "offline")
    out = invoke(f"gan train {flags} --max-steps 80 --epochs 2 --name w")
    files = list((workdir / "checkpoints" / "w").glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    wait_until_complete(files[0])
    rows = [r for r in history(files[0]) if "loss_D" in r]
    assert [int(r["_step"]) for r in rows] == [37, 74]  # 600 images // 16 = 37 steps an epoch
    printed = re.findall(r"epoch \d\.\d\d step \d+: .*", out)
    for row, line in zip(rows, printed, strict=True):
        values = {k: float(row[k]) for k in ("loss_D", "loss_G", "D_x", "D_G_z", "fooled")}
        assert 0 < values["D_x"] < 1 and 0 < values["D_G_z"] < 1 and 0 <= values["fooled"] <= 1
        # the epoch line shows the same epoch means that W&B got
        assert f"loss_D {values['loss_D']:.3f} loss_G {values['loss_G']:.3f}" in line
        assert float(row["epoch"]) in (1.0, 2.0)
    grids = [int(r["_step"]) for r in history(files[0]) if "samples/path" in r]
    assert grids == [37, 74]  # each epoch's sample grid, at its step


@pytest.mark.parametrize(
    "args, message",
    [
        ("gan train --data-dir nowhere --no-download", "no MNIST data in nowhere"),
        ("gan train --no-download --resume missing.pt", "--resume missing.pt: no such file"),
        ("gan sample --checkpoint datasets/mnist/t10k-labels-idx1-ubyte.gz -o g.png", "not a"),
        ("ae train --data-dir nowhere --no-download", "no MNIST data in nowhere"),
    ],
)
def test_user_errors_are_one_line(workdir: Path, args: str, message: str) -> None:
    assert message in invoke(args, code=1)


@pytest.mark.parametrize(
    "args", ["gan train --digits 12", "gan train --lr -1", "ae train --noise -0.5"]
)
def test_bad_values_are_usage_errors(workdir: Path, args: str) -> None:
    invoke(args, code=2)


def test_help_teaches_and_cli_import_is_light() -> None:
    assert "lecture recipe" in invoke("gan train --help")
    assert "Fréchet" in invoke("gan eval --help")
    for command in ("gan", "ae", "gan train", "gan sample", "gan eval", "ae train"):
        text = invoke(f"{command} --help")
        assert "../shared" not in text and "checkpoints/mnist_gan/" not in text, command
    assert "checkpoints/mnist_gan_mlp/last.pt" in invoke("gan --help")  # the real default
    assert "--no-progress" in invoke("gan train --help") and "--overwrite" in invoke(
        "ae train --help"
    )
    code = (
        "import sys, cyclekit.cli, cyclekit.cli.mnist; "
        "assert not {'wandb', 'albumentations', 'torch'} & set(sys.modules), sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_full_batch_is_one_step_per_epoch(workdir: Path) -> None:
    out = invoke(f"gan train {TINY} --full-batch --epochs 2 --name fb")
    assert "epoch 2.00 step 2:" in out  # 600 images, one batch each epoch


@pytest.mark.parametrize("command", ["gan", "ae"])
def test_ctrl_c_saves_last_pt_and_exits_130(tmp_path: Path, command: str) -> None:
    write_fake_mnist(tmp_path / "mnist", n_train=600, n_test=200)
    args = [
        sys.executable, "-m", "cyclekit", command, "train", "--data-dir", str(tmp_path / "mnist"),
        "--no-download", "--checkpoints-dir", str(tmp_path / "ck"), "--name", "r",
        "--batch-size", "2", "--epochs", "1000", "--no-progress", "--wandb-mode", "disabled",
        "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    last = tmp_path / "ck" / "r" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the first epoch (300 steps) is saved: the run is well under way
    assert proc.poll() is None, proc.communicate()[0]
    step_before = safe_load(last)["step"]
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out
    assert "stopped at step" in out and "--resume auto" in out
    state = safe_load(last)
    assert state["step"] > step_before  # saved on the way out, mid-epoch
    assert 0 < state["epoch_step"] < 300
