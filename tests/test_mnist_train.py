"""MNIST baselines' loops: GAN and autoencoder training, determinism, the run folder's rules
(fresh, overwrite, resume merge-or-refuse, lock), evaluation. Tiny models on fake digits,
plus a few steps on real MNIST from ../shared."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cyclekit.files import safe_load
from cyclekit.mnist.ae import AEConfig, train_ae
from cyclekit.mnist.data import MnistArrays, digits_to_tensor, load_mnist
from cyclekit.mnist.evaluate import (
    EvalError,
    evaluate_checkpoint,
    load_or_train_classifier,
    quality_report,
)
from cyclekit.mnist.gan import GanConfig, generate, load_gan_generator, train_gan
from cyclekit.training.config import ConfigError
from cyclekit.training.rundir import RunFolderError, RunLock
from tests.mnist_fakes import fake_arrays, write_fake_mnist


def tiny_gan(tmp_path: Path, **kw) -> GanConfig:
    base = dict(
        latent_dim=8, hidden=16, batch_size=16, epochs=2, device="cpu", wandb_mode="disabled",
        checkpoints_dir=str(tmp_path / "ckpt"), name="t", grid_size=16,
    )  # fmt: skip
    return GanConfig(**{**base, **kw})


def tiny_ae(tmp_path: Path, **kw) -> AEConfig:
    base = dict(
        batch_size=16, epochs=2, device="cpu", wandb_mode="disabled",
        checkpoints_dir=str(tmp_path / "ckpt"), name="a", code_dim=8,
    )  # fmt: skip
    return AEConfig(**{**base, **kw})


def quiet(*args, **kw):
    return train_gan(*args, progress=False, log=lambda s: None, **kw)


def hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_gan_train_writes_grids_gif_and_self_describing_checkpoint(tmp_path: Path) -> None:
    result = quiet(tiny_gan(tmp_path), data=fake_arrays(64))
    run = tmp_path / "ckpt" / "t"
    assert result.step == 8 and len(result.history) == 2  # 64 // 16 = 4 steps per epoch
    assert result.finished and not result.interrupted
    for m in result.history:
        assert 0 < m["D_x"] < 1 and 0 < m["D_G_z"] < 1 and 0 <= m["fooled"] <= 1
        assert np.isfinite([m["loss_D"], m["loss_G"]]).all()
    grids = sorted((run / "samples").glob("step_*.png"))
    assert len(grids) == 2 and Image.open(grids[0]).size == (4 * 30 + 2, 4 * 30 + 2)
    assert Image.open(run / "samples.gif").n_frames == 2
    assert (run / "config.yaml").read_text().startswith("arch: mlp")
    blob = safe_load(run / "last.pt")  # weights_only=True
    assert blob["G_spec"] == {"kind": "mlp_g", "latent_dim": 8, "hidden": 16}
    assert blob["epoch"] == 2 and blob["epoch_step"] == 0 and blob["step"] == 8
    assert blob["format_version"] >= 1
    G, _ = load_gan_generator(run / "last.pt")  # no architecture flags needed
    x = generate(G, 5, seed=0)
    assert x.shape == (5, 1, 28, 28) and torch.equal(x, generate(G, 5, seed=0))


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_same_seed_same_result_and_resume_continues_exactly(tmp_path: Path, arch: str) -> None:
    # 6 steps span the epoch boundary (4 steps per epoch); the resumed run stops mid-epoch 1.
    data = fake_arrays(64)
    kw = dict(arch=arch, hidden=4 if arch == "dcgan" else 16, epochs=3)
    a = quiet(tiny_gan(tmp_path / "a", max_steps=6, **kw), data=data)
    torch.manual_seed(1234)  # the global generator's state must not matter
    b = quiet(tiny_gan(tmp_path / "b", max_steps=6, **kw), data=data)
    quiet(tiny_gan(tmp_path / "c", max_steps=3, **kw), data=data)
    torch.manual_seed(99)
    c = quiet(tiny_gan(tmp_path / "c", max_steps=6, **kw), data=data, resume="auto")
    wa, wb, wc = (safe_load(r.checkpoint)["D"] | safe_load(r.checkpoint)["G"] for r in (a, b, c))
    assert c.step == 6
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # same seed on CPU => same weights
        assert torch.equal(wa[k], wc[k]), k  # stop + resume == one straight run


def test_training_leaves_the_global_random_generator_alone(tmp_path: Path) -> None:
    torch.manual_seed(7)
    before = torch.get_rng_state()
    quiet(tiny_gan(tmp_path, arch="dcgan", hidden=4, max_steps=2), data=fake_arrays(64))
    train_ae(tiny_ae(tmp_path, max_steps=2), fake_arrays(64), fake_arrays(20), progress=False)
    assert torch.equal(before, torch.get_rng_state())  # never seeded, never drawn from


def test_autoencoder_resume_continues_exactly(tmp_path: Path) -> None:
    data, test = fake_arrays(64), fake_arrays(20, seed=1)
    kw = dict(noise=0.3, epochs=3, max_steps=6)
    a = train_ae(tiny_ae(tmp_path / "a", **kw), data, test, progress=False)
    train_ae(tiny_ae(tmp_path / "c", **{**kw, "max_steps": 3}), data, test, progress=False)
    c = train_ae(tiny_ae(tmp_path / "c", **kw), data, test, progress=False, resume="auto")
    wa, wc = safe_load(a.checkpoint)["model"], safe_load(c.checkpoint)["model"]
    assert c.step == 6 and c.test_mse == a.test_mse
    assert all(torch.equal(wa[k], wc[k]) for k in wa)


@pytest.mark.parametrize("which", ["gan", "ae"])
def test_rerun_with_the_same_name_refuses_until_overwrite(tmp_path: Path, which: str) -> None:
    data, test = fake_arrays(64), fake_arrays(20, seed=1)

    def run(**kw):
        if which == "gan":
            return quiet(tiny_gan(tmp_path, max_steps=3), data=data, **kw)
        return train_ae(tiny_ae(tmp_path, max_steps=3), data, test, progress=False, **kw)

    first = run()
    before = hashes(first.run_dir)
    with pytest.raises(RunFolderError, match="already holds a run.*--overwrite"):
        run()
    assert hashes(first.run_dir) == before  # not one file replaced or deleted
    if which == "gan":  # grids of the replaced run would join the new GIF: they go
        old = first.run_dir / "samples" / "step_00000003.png"
        stale = old.with_name("step_00000099.png")
        stale.write_bytes(old.read_bytes())
    again = run(overwrite=True)
    assert again.step == 3
    if which == "gan":
        assert not stale.exists() and Image.open(again.gif).n_frames == 1


def test_resume_restores_the_data_selection_and_refuses_changes(tmp_path: Path) -> None:
    data = fake_arrays(200)
    quiet(tiny_gan(tmp_path, digits=(3,), max_steps=1, epochs=5), data=data)
    run = tmp_path / "ckpt" / "t"
    before = hashes(run)
    for changed in ({"lr": 0.5}, {"arch": "dcgan"}, {"batch_size": 4}, {"digits": (3, 5)}):
        cfg = tiny_gan(tmp_path, **{"epochs": 5, "digits": (3,), **changed})
        flag = "--" + next(iter(changed)).replace("_", "-")
        with pytest.raises(ConfigError, match=f"cannot resume with changed settings: {flag} "):
            quiet(cfg, data=data, resume="auto", explicit=set(changed))
    assert hashes(run) == before
    # Only the flags given count: no --digits on the command line keeps the run's 3s.
    cfg = tiny_gan(tmp_path, epochs=7, max_steps=3)  # no digits here
    result = quiet(cfg, data=data, resume="auto", explicit={"epochs", "max_steps"})
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["digits"] == [3] and saved["epochs"] == 7 and saved["lr"] == 1e-3
    assert result.step == 3 and list(safe_load(result.checkpoint)["config"]["digits"]) == [3]
    # 20 threes, batch 16: one step an epoch (the 3s alone, not all 200 images: 12 steps)
    assert [m["step"] for m in result.history] == [2, 3]


def test_resume_on_changed_data_never_leaves_an_epoch_without_batches(tmp_path: Path) -> None:
    quiet(tiny_gan(tmp_path, max_steps=3, epochs=3), data=fake_arrays(64))  # 3 of 4 steps
    result = quiet(tiny_gan(tmp_path, epochs=3), data=fake_arrays(32), resume="auto")
    assert result.finished and result.step > 3  # continued, no KeyError


def test_lr_in_config_is_the_lr_the_optimiser_uses(tmp_path: Path) -> None:
    result = quiet(tiny_gan(tmp_path, max_steps=2, lr=3e-4), data=fake_arrays(64))
    blob = safe_load(result.checkpoint)
    for opt in ("opt_G", "opt_D"):
        assert blob[opt]["param_groups"][0]["lr"] == blob["config"]["lr"] == 3e-4


def test_resume_into_another_runs_folder_refuses(tmp_path: Path) -> None:
    data = fake_arrays(64)
    a = quiet(tiny_gan(tmp_path, name="a", max_steps=2), data=data)
    b = quiet(tiny_gan(tmp_path, name="b", max_steps=2), data=data)
    before = hashes(b.run_dir)
    with pytest.raises(RunFolderError, match="holds another run"):
        quiet(tiny_gan(tmp_path, name="b"), data=data, resume=str(a.checkpoint))
    assert hashes(b.run_dir) == before
    fork = quiet(tiny_gan(tmp_path, name="c", max_steps=3), data=data, resume=str(a.checkpoint))
    assert fork.checkpoint.is_file() and safe_load(fork.checkpoint)["step"] == 3


def test_resume_with_nothing_left_to_do_still_writes_the_printed_checkpoint(
    tmp_path: Path,
) -> None:
    data = fake_arrays(64)
    a = quiet(tiny_gan(tmp_path, name="a", max_steps=4), data=data)
    fork = quiet(tiny_gan(tmp_path, name="f", max_steps=2), data=data, resume=str(a.checkpoint))
    assert fork.step == 4 and fork.checkpoint.is_file()  # the path the CLI prints exists


def test_second_run_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "ckpt" / "t"
    with RunLock(run):  # another process training there (flock: separate descriptions conflict)
        with pytest.raises(RunFolderError, match="another run is using this folder"):
            quiet(tiny_gan(tmp_path, max_steps=1), data=fake_arrays(64))
        with pytest.raises(RunFolderError, match="another run"):
            train_ae(tiny_ae(tmp_path, name="t", max_steps=1), fake_arrays(64), fake_arrays(10))
    assert not (run / "last.pt").exists()


def test_few_gan_steps_on_real_mnist(mnist_raw: Path, tmp_path: Path) -> None:
    data = load_mnist(mnist_raw, "train", download=False)
    data = MnistArrays(data.images[:1024], data.labels[:1024], data.source)
    cfg = GanConfig(
        max_steps=15, device="cpu", wandb_mode="disabled", checkpoints_dir=str(tmp_path)
    )  # the real default architecture: 64 -> 256 -> 256 -> 784
    result = quiet(cfg, data=data)
    m = result.history[-1]
    assert result.step == 15 and np.isfinite([m["loss_D"], m["loss_G"]]).all()
    assert m["D_x"] > m["D_G_z"]  # D already tells real digits from early fakes
    assert result.run_dir.name == "mnist_gan_mlp"  # the default name the README shows


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
    blob = safe_load(result.checkpoint)
    assert blob["spec"] == {"kind": "mlp_ae", "code_dim": 32, "hidden": 0}
    assert blob["test_mse"] == result.test_mse


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

    real = digits_to_tensor(test.images)
    good = quality_report(real, clf2, real, real)
    assert good["frechet_distance"] == pytest.approx(0, abs=1e-6)
    assert good["n_missing"] == 0 and 0.1 < good["mean_confidence"] <= 1
    only_threes = digits_to_tensor(train.images[train.labels == 3])
    bad = quality_report(only_threes, clf2, real)
    assert bad["n_missing"] == 9 and bad["class_histogram"][3] == len(only_threes)
    assert bad["frechet_distance"] > 10 * good["frechet_distance"] + 1


def test_eval_refuses_a_weak_classifier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = write_fake_mnist(tmp_path / "mnist", n_train=64, n_test=150)
    cfg = tiny_gan(tmp_path, max_steps=1, data_dir=str(data_dir))
    result = quiet(cfg)
    monkeypatch.setenv("CYCLEKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(EvalError, match=r"only \d+\.\d% test accuracy.*95%"):
        # 64 images, one epoch: barely trained, as --classifier-epochs 0 used to be scored
        evaluate_checkpoint(result.checkpoint, n=200, classifier_epochs=1, log=lambda s: None)


def test_checkpoint_of_the_previous_layout_still_resumes(tmp_path: Path) -> None:
    # Before the shared run plumbing: batch_in_epoch, noise_rng, torch_rng, time_budget, resume.
    data = fake_arrays(64)
    straight = quiet(tiny_gan(tmp_path / "a", max_steps=6, epochs=3), data=data)
    old = quiet(tiny_gan(tmp_path / "b", max_steps=3, epochs=3), data=data)
    blob = safe_load(old.checkpoint)
    blob["batch_in_epoch"] = blob.pop("epoch_step")
    blob["noise_rng"] = blob.pop("rng")["noise"]
    blob["torch_rng"] = torch.get_rng_state()
    del blob["steps_per_epoch"]
    blob["config"] = {**blob["config"], "time_budget": None, "resume": "auto"}
    del blob["config"]["max_minutes"]
    torch.save(blob, old.checkpoint)
    resumed = quiet(tiny_gan(tmp_path / "b", max_steps=6, epochs=3), data=data, resume="auto")
    a, b = safe_load(straight.checkpoint)["G"], safe_load(resumed.checkpoint)["G"]
    assert resumed.step == 6 and all(torch.equal(a[k], b[k]) for k in a)  # MLP: no dropout


def test_max_minutes_stops_with_a_saved_resumable_run(tmp_path: Path) -> None:
    result = quiet(tiny_gan(tmp_path, max_minutes=1e-9, epochs=3), data=fake_arrays(64))
    assert result.step == 1 and not result.finished and not result.interrupted
    assert safe_load(result.checkpoint)["step"] == 1
    ae = train_ae(tiny_ae(tmp_path, max_minutes=1e-9), fake_arrays(64), fake_arrays(20))
    assert ae.step == 1 and not ae.finished
