"""MNIST baselines' loops: GAN and autoencoder training, determinism, resume, evaluation.
Tiny models on tiny synthetic digits, plus a few steps on real MNIST from ../shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclekit.files import safe_load
from cyclekit.mnist.ae import AEConfig, train_ae
from cyclekit.mnist.data import MnistArrays, load_mnist, to_tensor
from cyclekit.mnist.evaluate import load_or_train_classifier, quality_report
from cyclekit.mnist.gan import GanConfig, generate, load_generator, train_gan


def fake_arrays(n: int, seed: int = 0) -> MnistArrays:
    """Digit d is a vertical bar at column 2 + 2d plus noise: easy to tell apart."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, d in enumerate(labels):
        images[i, 4:24, 2 + 2 * d : 5 + 2 * d] = 255
    return MnistArrays(images, labels.astype(np.int64), "fake")


def tiny_gan(tmp_path: Path, **kw) -> GanConfig:
    base = dict(
        latent_dim=8, hidden=16, batch_size=16, epochs=2, device="cpu", wandb_mode="disabled",
        checkpoints_dir=str(tmp_path / "ckpt"), name="t", grid_size=16,
    )  # fmt: skip
    return GanConfig(**{**base, **kw})


def test_gan_train_writes_grids_gif_and_self_describing_checkpoint(tmp_path: Path) -> None:
    result = train_gan(tiny_gan(tmp_path), data=fake_arrays(64), progress=False)
    run = tmp_path / "ckpt" / "t"
    assert result.step == 8 and len(result.history) == 2  # 64 // 16 = 4 steps per epoch
    for m in result.history:
        assert 0 < m["D_x"] < 1 and 0 < m["D_G_z"] < 1 and 0 <= m["fooled"] <= 1
        assert np.isfinite([m["loss_D"], m["loss_G"]]).all()
    grids = sorted((run / "samples").glob("step_*.png"))
    assert len(grids) == 2 and Image.open(grids[0]).size == (4 * 30 + 2, 4 * 30 + 2)
    assert Image.open(run / "samples.gif").n_frames == 2
    assert (run / "config.yaml").read_text().startswith("arch: mlp")
    blob = safe_load(run / "last.pt")  # weights_only=True
    assert blob["G_spec"] == {"kind": "mlp_g", "latent_dim": 8, "hidden": 16}
    assert blob["epoch"] == 2 and blob["step"] == 8 and blob["format_version"] >= 1
    G, _ = load_generator(run / "last.pt")  # no architecture flags needed
    x = generate(G, 5, seed=0)
    assert x.shape == (5, 1, 28, 28) and torch.equal(x, generate(G, 5, seed=0))


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_same_seed_same_result_and_resume_continues_exactly(tmp_path: Path, arch: str) -> None:
    # 6 steps span the epoch boundary (4 steps per epoch); the resumed run stops mid-epoch 1.
    data = fake_arrays(64)
    kw = dict(arch=arch, hidden=4 if arch == "dcgan" else 16, epochs=3)
    a = train_gan(tiny_gan(tmp_path / "a", max_steps=6, **kw), data=data, progress=False)
    b = train_gan(tiny_gan(tmp_path / "b", max_steps=6, **kw), data=data, progress=False)
    train_gan(tiny_gan(tmp_path / "c", max_steps=3, **kw), data=data, progress=False)
    c = train_gan(
        tiny_gan(tmp_path / "c", max_steps=6, resume="auto", **kw), data=data, progress=False
    )
    wa, wb, wc = (safe_load(r.checkpoint)["G"] for r in (a, b, c))
    assert c.step == 6
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # same seed on CPU => same weights
        assert torch.equal(wa[k], wc[k]), k  # stop + resume == one straight run


def test_few_gan_steps_on_real_mnist(mnist_raw: Path, tmp_path: Path) -> None:
    data = load_mnist(mnist_raw, "train", download=False)
    data = MnistArrays(data.images[:1024], data.labels[:1024], data.source)
    cfg = GanConfig(
        max_steps=15, device="cpu", wandb_mode="disabled", checkpoints_dir=str(tmp_path)
    )  # the real default architecture: 64 -> 256 -> 256 -> 784
    result = train_gan(cfg, data=data, progress=False)
    m = result.history[-1]
    assert result.step == 15 and np.isfinite([m["loss_D"], m["loss_G"]]).all()
    assert m["D_x"] > m["D_G_z"]  # D already tells real digits from early fakes


def test_autoencoder_trains_and_writes_figure(tmp_path: Path) -> None:
    cfg = AEConfig(
        noise=0.5, epochs=4, batch_size=32, device="cpu", wandb_mode="disabled",
        checkpoints_dir=str(tmp_path), name="ae",
    )  # fmt: skip
    result = train_ae(cfg, fake_arrays(256), fake_arrays(40, seed=1), progress=False)
    assert result.history[-1]["train_mse"] < 0.6 * result.history[0]["train_mse"]
    assert 0 < result.test_mse < result.history[0]["train_mse"]
    # rows noisy / reconstructed / original, one column per digit
    assert Image.open(result.figure).size == (10 * 30 + 2, 3 * 30 + 2)
    assert safe_load(result.checkpoint)["spec"] == {"kind": "mlp_ae", "code_dim": 32, "hidden": 0}


def test_conv_autoencoder_runs(tmp_path: Path) -> None:
    cfg = AEConfig(
        arch="conv", hidden=4, max_steps=2, batch_size=8, device="cpu", wandb_mode="disabled",
        checkpoints_dir=str(tmp_path),
    )  # fmt: skip
    assert train_ae(cfg, fake_arrays(32), fake_arrays(10), progress=False).step == 2


def test_eval_on_tiny_model_and_classifier_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, test = fake_arrays(300), fake_arrays(50, seed=1)
    clf, acc = load_or_train_classifier(train, test, epochs=4, directory=tmp_path)
    assert acc > 0.85  # bars are easy
    assert len(list(tmp_path.glob("mnist-classifier-*.pt"))) == 1

    def no_training(*a, **k):
        raise AssertionError("the cached classifier should have been used")

    monkeypatch.setattr("cyclekit.mnist.evaluate.train_classifier", no_training)
    clf2, acc2 = load_or_train_classifier(train, test, epochs=4, directory=tmp_path)
    assert acc2 == acc

    real = to_tensor(test.images)
    good = quality_report(real, clf2, real, real)
    assert good["frechet_distance"] == pytest.approx(0, abs=1e-6)
    assert good["n_missing"] == 0 and 0.1 < good["mean_confidence"] <= 1
    only_threes = to_tensor(train.images[train.labels == 3])
    bad = quality_report(only_threes, clf2, real)
    assert bad["n_missing"] == 9 and bad["class_histogram"][3] == len(only_threes)
    assert bad["frechet_distance"] > 10 * good["frechet_distance"] + 1
