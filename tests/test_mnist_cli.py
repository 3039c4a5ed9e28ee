"""``cyclekit gan`` / ``cyclekit ae`` end to end with CliRunner, on tiny MNIST-format data
written to tmp_path; includes every command the README's MNIST section shows."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cyclekit.cli import main
from cyclekit.mnist.data import write_idx_gz

# The MNIST section of README.md, in order. They run as written, in a folder whose
# datasets/mnist holds 100 + 50 synthetic digits, so each epoch is a single step.
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


def write_fake_mnist(root: Path, n_train: int = 100, n_test: int = 50) -> Path:
    """The four official file names, with digit d drawn as a bar at column 2 + 2d."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
        for i, d in enumerate(labels):
            images[i, 4:24, 2 + 2 * d : 5 + 2 * d] = 255
        write_idx_gz(images, root / f"{prefix}-images-idx3-ubyte.gz")
        write_idx_gz(labels, root / f"{prefix}-labels-idx1-ubyte.gz")
    return root


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_fake_mnist(tmp_path / "datasets" / "mnist")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CYCLEKIT_CACHE", str(tmp_path / "cache"))  # never the user's home
    return tmp_path


def invoke(args: str | list[str], code: int = 0) -> str:
    result = CliRunner().invoke(main, shlex.split(args) if isinstance(args, str) else args)
    assert result.exit_code == code, result.output
    if code != 0:  # user errors: one line, no traceback
        assert "Traceback" not in result.output and result.output.count("Error") == 1
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
    assert len(list((workdir / "samples").glob("*.png"))) == 64
    assert Image.open(workdir / "samples" / "00000.png").size == (28, 28)
    report = out[README_COMMANDS[7]]
    for text in ("classifier test accuracy", "Fréchet distance (10000 samples", "missing digits"):
        assert text in report
    assert "test MSE" in out[README_COMMANDS[8]]
    assert (workdir / "checkpoints" / "mnist_ae_mlp" / "reconstructions.png").is_file()
    assert (workdir / "checkpoints" / "mnist_ae_conv" / "last.pt").is_file()


def test_gan_train_max_steps_resume_and_json_eval(workdir: Path) -> None:
    invoke(f"gan train {TINY} --max-steps 3 --name t")
    out = invoke(f"gan train {TINY} --max-steps 5 --name t --resume auto")
    assert "resuming from" in out and "step 5" in out
    invoke("gan eval --checkpoint checkpoints/t/last.pt -n 200 --classifier-epochs 1 --json r.json")
    report = json.loads((workdir / "r.json").read_text())
    assert report["n_samples"] == 200 and sum(report["class_histogram"]) == 200
    assert {"frechet_distance", "frechet_distance_real", "mean_confidence"} <= set(report)
    assert len(list((workdir / "cache").glob("mnist-classifier-*.pt"))) == 1


def test_wandb_offline_gets_metrics_and_grids(workdir: Path) -> None:
    invoke(f"gan train {TINY} --max-steps 2 --name w".replace("disabled", "offline"))
    assert list((workdir / "checkpoints" / "w").glob("wandb/offline-run-*/run-*.wandb"))


@pytest.mark.parametrize(
    "args, message",
    [
        ("gan train --data-dir nowhere --no-download", "no MNIST data in nowhere"),
        ("gan train --no-download --resume missing.pt", "missing.pt: --resume checkpoint"),
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
    result = CliRunner().invoke(main, shlex.split(args))
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_help_teaches_and_cli_import_is_light() -> None:
    assert "lecture recipe" in invoke("gan train --help")
    assert "Fréchet" in invoke("gan eval --help")
    code = (
        "import sys, cyclekit.cli, cyclekit.cli.mnist; "
        "assert not {'wandb', 'albumentations', 'torch'} & set(sys.modules), sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_full_batch_is_one_step_per_epoch(workdir: Path) -> None:
    out = invoke(f"gan train {TINY} --full-batch --epochs 2 --name fb")
    assert "epoch 2.00 step 2:" in out  # 100 images, one batch each epoch
