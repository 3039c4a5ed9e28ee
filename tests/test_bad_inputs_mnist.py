"""A careless user's afternoon with `cyclekit gan train|sample|eval` and `cyclekit ae train`:
wrong paths, wrong files, bad flags, a rerun over a finished run. Every case must end with a
non-zero exit, exactly one ``Error:`` line naming the file or flag, no traceback, and not one
file of the user's created, changed or deleted."""

from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from cyclekit.cli import main
from cyclekit.mnist.ae import AEConfig, train_ae
from cyclekit.mnist.gan import GanConfig, train_gan
from cyclekit.training.rundir import RunLock
from tests.mnist_fakes import fake_arrays, write_fake_mnist

T = "checkpoints/t/last.pt"  # a finished tiny GAN run
A = "checkpoints/a/last.pt"  # a finished tiny autoencoder run

# (arguments, exit code, texts the Error line must hold, joined by " && "). {photo}: the
# user's PNG; {notes}: a text file; {empty}: an empty file; {report}: the user's own JSON;
# pics/ holds the user's 00000.png. Exit 2: click (or the config) refused the flag; exit 1:
# cyclekit refused the value.
CASES = [
    # --- gan train: data and run folder
    (["gan", "train", "--device", "gpu"], 2, "--device"),
    (["gan", "train", "--data-dir", "nowhere"], 1, "no MNIST data in nowhere"),
    (["gan", "train", "--data-dir", "{photo}"], 1, "--data-dir {photo}: not a folder"),
    (["gan", "train", "--checkpoints-dir", "{photo}"], 1, "--checkpoints-dir {photo}"),
    (["gan", "train", "--name", "t"], 1, "checkpoints/t/last.pt already holds a run"),
    (["gan", "train", "--name", "../x"], 2, "--name '../x'"),
    (["gan", "train", "--name", ""], 2, "--name ''"),
    # --- gan train: resume merges or refuses
    (["gan", "train", "--name", "t", "--resume", "auto", "--arch", "dcgan"], 1, "--arch dcgan"),
    (["gan", "train", "--name", "t", "--resume", "auto", "--lr", "0.5"], 1, "--lr 0.5 (run has"),
    (["gan", "train", "--name", "t", "--resume", "auto", "--batch-size", "7"], 1, "--batch-size 7"),
    (["gan", "train", "--name", "t", "--resume", "auto", "--digits", "3"], 1, "--digits 3"),
    (["gan", "train", "--name", "t", "--resume", "auto", "--full-batch"], 1, "--full-batch"),
    (["gan", "train", "--name", "t", "--resume", "auto", "--overwrite"], 1, "give only one"),
    (["gan", "train", "--resume", "missing.pt"], 1, "--resume missing.pt: no such file"),
    (["gan", "train", "--resume", "{notes}"], 1, "{notes}: "),
    (["gan", "train", "--resume", "{empty}"], 1, "{empty}: "),
    (["gan", "train", "--resume", A], 1, f"{A}: && cyclekit-mnist-ae"),
    (["gan", "train", "--resume", T, "--name", "a"], 1, f"{A} holds another run"),
    # --- gan train: values
    (["gan", "train", "--digits", "12"], 2, "--digits"),
    (["gan", "train", "--lr", "-1"], 2, "--lr"),
    (["gan", "train", "--lr", "inf"], 2, "--lr"),
    (["gan", "train", "--lr", "nan"], 2, "--lr"),
    (["gan", "train", "--seed", "-1"], 2, "--seed"),
    (["gan", "train", "--hidden", "100000"], 2, "--hidden"),
    (["gan", "train", "--latent-dim", "0"], 2, "--latent-dim"),
    (["gan", "train", "--arch", "dcgan", "--batch-size", "1"], 2, "--batch-size"),
    (["gan", "train", "--arch", "gan"], 2, "--arch"),
    (["gan", "train", "--betas", "0.5", "1.5"], 2, "--betas"),
    (["gan", "train", "--real-label", "0"], 2, "--real-label"),
    (["gan", "train", "--epochs", "0"], 2, "--epochs"),
    (["gan", "train", "--max-steps", "0"], 2, "--max-steps"),
    (["gan", "train", "--max-minutes", "0"], 2, "--max-minutes"),
    (["gan", "train", "--wandb-mode", "onlin"], 2, "--wandb-mode"),
    (["gan", "train", "--wandb-mode", "online"], 1, "--wandb-mode online"),
    # --- gan sample
    (["gan", "sample", "--checkpoint", "{notes}", "-o", "g.png"], 1, "{notes}: "),
    (["gan", "sample", "--checkpoint", "missing.pt", "-o", "g.png"], 1, "missing.pt: "),
    (["gan", "sample", "--checkpoint", A, "-o", "g.png"], 1, f"{A}: && cyclekit-mnist-ae"),
    (["gan", "sample", "--checkpoint", T, "-o", "{photo}"], 1, "-o {photo}: already exists"),
    (["gan", "sample", "--checkpoint", T, "-o", T], 1, f"-o {T}: cannot write .pt"),
    (["gan", "sample", "--checkpoint", T, "-o", "out.gif"], 1, "-o out.gif: cannot write .gif"),
    (["gan", "sample", "--checkpoint", T, "-o", "pics"], 1, "-o pics/00000.png: already exists"),
    (
        ["gan", "sample", "--checkpoint", T, "-o", "checkpoints/t/samples/step_00000002.png"],
        1,
        "-o checkpoints/t/samples/step_00000002.png: already exists",
    ),
    (
        ["gan", "sample", "--checkpoint", T, "-o", "datasets/mnist/t10k-images-idx3-ubyte.gz"],
        1,
        "-o datasets/mnist/t10k-images-idx3-ubyte.gz",
    ),
    (["gan", "sample", "--checkpoint", T, "-o", "g.png", "--nrow", "0"], 2, "--nrow"),
    (["gan", "sample", "--checkpoint", T, "-o", "g.png", "-n", "0"], 2, "-n"),
    (["gan", "sample", "--checkpoint", T, "-o", "g.png", "-n", "20000"], 1, "-n 20000"),
    (["gan", "sample", "--checkpoint", T, "-o", "g.png", "--device", "gpu"], 2, "--device"),
    (["gan", "sample", "--checkpoint", T, "-o", "g.png", "--seed", "-5"], 2, "--seed"),
    # --- gan eval
    (["gan", "eval", "--checkpoint", T, "-n", "1"], 2, "-n"),
    (["gan", "eval", "--checkpoint", T, "-n", "0"], 2, "-n"),
    (["gan", "eval", "--checkpoint", T, "-n", "128"], 2, "-n"),
    (["gan", "eval", "--checkpoint", T, "--classifier-epochs", "0"], 2, "--classifier-epochs"),
    (["gan", "eval", "--checkpoint", T, "--classifier-epochs", "-1"], 2, "--classifier-epochs"),
    (["gan", "eval", "--checkpoint", T, "--json", T], 1, f"--json {T}"),
    (["gan", "eval", "--checkpoint", T, "--json", "{photo}"], 1, "--json {photo}"),
    (["gan", "eval", "--checkpoint", T, "--json", "{report}"], 1, "--json {report}: already"),
    (["gan", "eval", "--checkpoint", T, "--device", "gpu"], 2, "--device"),
    (["gan", "eval", "--checkpoint", "{notes}"], 1, "{notes}: "),
    (["gan", "eval", "--checkpoint", A], 1, f"{A}: && cyclekit-mnist-ae"),
    (["gan", "eval", "--checkpoint", T, "--data-dir", "nowhere"], 1, "no MNIST data in nowhere"),
    # --- ae train
    (["ae", "train", "--device", "gpu"], 2, "--device"),
    (["ae", "train", "--noise", "-0.5"], 2, "--noise"),
    (["ae", "train", "--noise", "nan"], 2, "--noise"),
    (["ae", "train", "--code-dim", "0"], 2, "--code-dim"),
    (["ae", "train", "--hidden", "-1"], 2, "--hidden"),
    (["ae", "train", "--arch", "rnn"], 2, "--arch"),
    (["ae", "train", "--data-dir", "nowhere"], 1, "no MNIST data in nowhere"),
    (["ae", "train", "--name", "a"], 1, "checkpoints/a/last.pt already holds a run"),
    (["ae", "train", "--name", "a", "--resume", "auto", "--noise", "0.3"], 1, "--noise 0.3"),
    (["ae", "train", "--resume", T], 1, f"{T}: && cyclekit-mnist-gan"),
    (["ae", "train", "--wandb-mode", "online"], 1, "--wandb-mode online"),
]
# Flags that make a case which wrongly starts training quick; each matches the runs above.
TRAIN_FLAGS = {
    ("gan", "train"): {"--hidden": "16", "--latent-dim": "8", "--batch-size": "16"},
    ("ae", "train"): {"--code-dim": "8", "--batch-size": "16"},
}


def _hashes(root: Path) -> dict[str, str]:
    """Every file's hash and every folder (an empty one made by mistake counts too)."""
    return {
        p.relative_to(root).as_posix(): (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        )
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's folder, built once: MNIST files, two finished runs, their own files."""
    root = tmp_path_factory.mktemp("mnist_user")
    write_fake_mnist(root / "datasets" / "mnist", n_train=64, n_test=20)
    common = dict(device="cpu", wandb_mode="disabled", checkpoints_dir=str(root / "checkpoints"))
    gan = GanConfig(name="t", hidden=16, latent_dim=8, batch_size=16, max_steps=2, **common)
    train_gan(gan, data=fake_arrays(64), progress=False, log=lambda s: None)
    ae = AEConfig(name="a", code_dim=8, batch_size=16, max_steps=2, **common)
    train_ae(ae, fake_arrays(64), fake_arrays(20), progress=False, log=lambda s: None)
    Image.new("L", (28, 28), 200).save(root / "photo.png")
    (root / "notes.txt").write_text("my notes")
    (root / "empty.pt").write_bytes(b"")
    (root / "report.json").write_text('{"mine": true}')
    (root / "pics").mkdir()
    Image.new("L", (28, 28), 10).save(root / "pics" / "00000.png")
    return root


@pytest.fixture
def workspace(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "user"
    shutil.copytree(template, root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("CYCLEKIT_CACHE", str(root / "cache"))
    with socket.socket() as s:  # a port nobody listens on: W&B cannot be reached
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("WANDB_BASE_URL", closed)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc with a W&B key
    return root


def _fill(text: str) -> str:
    return text.format(photo="photo.png", notes="notes.txt", empty="empty.pt", report="report.json")


def _invoke(args: list[str]) -> tuple[int, str, list[str]]:
    r = CliRunner().invoke(main, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    return r.exit_code, r.output, errors


@pytest.mark.parametrize("args, code, names", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_error_line_naming_it_and_changes_nothing(
    workspace: Path, args: list[str], code: int, names: str
) -> None:
    before = _hashes(workspace)
    args = [_fill(a) for a in args]
    if tuple(args[:2]) in TRAIN_FLAGS:
        for flag, value in TRAIN_FLAGS[tuple(args[:2])].items():
            args += [flag, value] * (flag not in args)
        args += ["--no-download", "--no-progress"]
        args += ["--wandb-mode", "disabled"] * ("--wandb-mode" not in args)
    if args[:2] == ["gan", "eval"]:
        args += ["--no-download"]
    exit_code, output, errors = _invoke(args)
    assert exit_code == code, output
    assert len(errors) == 1, output
    for part in _fill(names).split(" && "):
        assert part in errors[0], output
    if code == 1:  # cyclekit's own messages: the Error line is the whole output
        assert output.strip() == errors[0], output
    assert _hashes(workspace) == before  # nothing created, changed or deleted


def test_a_run_in_use_is_refused(workspace: Path) -> None:
    with RunLock(workspace / "checkpoints" / "t"):  # another process is training there
        before = _hashes(workspace)
        args = ["gan", "train", "--name", "t", "--resume", "auto", "--no-progress"]
        exit_code, output, errors = _invoke(args + ["--wandb-mode", "disabled"])
        assert exit_code == 1 and len(errors) == 1, output
        assert "checkpoints/t: another run is using this folder" in errors[0]
        assert _hashes(workspace) == before


def test_failed_download_leaves_no_folder(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Offline:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            (Path(root) / "MNIST" / "raw").mkdir(parents=True)
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried x, got:\nno")

    monkeypatch.setattr("torchvision.datasets.MNIST", Offline)
    before = _hashes(workspace)
    args = ["ae", "train", "--data-dir", "new/mnist", "--no-progress", "--wandb-mode", "disabled"]
    exit_code, output, errors = _invoke(args)
    assert exit_code == 1 and len(errors) == 1, output
    assert (
        "download failed: Error downloading train-images-idx3-ubyte.gz: Tried x, got: no"
        in (errors[0])
    )
    assert not (workspace / "new").exists() and _hashes(workspace) == before
