"""MNIST baselines, pure parts: the .gz/PNG loaders, the networks, the GAN step and the
evaluation maths. Tiny models and data only; the official files come from ../shared."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from cyclekit.errors import CyclekitError
from cyclekit.mnist.data import (
    MnistDataError,
    digits_to_tensor,
    load_mnist,
    read_idx_gz,
    read_png_tree,
    write_idx_gz,
)
from cyclekit.mnist.evaluate import class_coverage, frechet_distance
from cyclekit.mnist.gan import build_gan, gan_step
from cyclekit.mnist.nets import (
    MNIST_MODELS,
    SeededDropout,
    model_from_spec,
    model_spec,
    use_generator,
)
from tests.mnist_fakes import fake_digits

TINY = {  # spec kind -> tiny constructor kwargs
    "mlp_g": {"latent_dim": 8, "hidden": 16},
    "mlp_d": {"hidden": 16},
    "dcgan_g": {"latent_dim": 8, "hidden": 4},
    "dcgan_d": {"hidden": 4},
    "mlp_ae": {"code_dim": 8, "hidden": 16},
    "conv_ae": {"hidden": 4},
    "classifier": {"width": 4, "features": 16},
}


# --- data ----------------------------------------------------------------------------------------


def test_idx_round_trip_and_load_from_torchvision_layout(tmp_path: Path) -> None:
    images, labels = fake_digits(30)
    raw = tmp_path / "MNIST" / "raw"  # where torchvision puts the files
    for split, n in (("train", 30), ("t10k", 20)):
        write_idx_gz(images[:n], raw / f"{split}-images-idx3-ubyte.gz")
        write_idx_gz(labels[:n], raw / f"{split}-labels-idx1-ubyte.gz")
    assert np.array_equal(read_idx_gz(raw / "train-images-idx3-ubyte.gz"), images)
    train = load_mnist(tmp_path, "train", download=False)
    assert train.images.shape == (30, 28, 28) and train.labels.dtype == np.int64
    assert len(load_mnist(tmp_path, "test", download=False)) == 20
    threes = load_mnist(tmp_path, "train", digits=[3], download=False)
    assert len(threes) == 3 and set(threes.labels) == {3}


def test_idx_reader_names_file_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(MnistDataError, match="train-images-idx3-ubyte.gz: not a readable gzip"):
        read_idx_gz(bad)
    with gzip.open(bad, "wb") as f:  # header promises 2 images, only 10 bytes follow
        f.write(bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
        f.write(b"x" * 10)
    with pytest.raises(MnistDataError, match="truncated or corrupt"):
        read_idx_gz(bad)


def test_png_tree_and_missing_data(tmp_path: Path) -> None:
    from PIL import Image

    images, labels = fake_digits(20)
    for i, (im, d) in enumerate(zip(images, labels, strict=True)):
        (tmp_path / "pngs" / str(d)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(tmp_path / "pngs" / str(d) / f"{i}.png")
    tree = read_png_tree(tmp_path / "pngs")
    assert tree.images.shape == (20, 28, 28) and sorted(tree.labels) == sorted(labels)
    assert len(load_mnist(tmp_path / "pngs", "test", download=False)) == 20  # tree serves both

    with pytest.raises(MnistDataError, match="no MNIST data in .*empty.*train-images-idx3"):
        load_mnist(tmp_path / "empty", download=False)


class _OfflineMNIST:
    """What torchvision's MNIST does without network: makes its folder, leaves a partial
    file, and raises a message of several lines."""

    def __init__(self, root: str, train: bool, download: bool) -> None:
        raw = Path(root) / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "train-images-idx3-ubyte.gz").write_bytes(b"partial")
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\n"
            "Tried https://mirror-one/, got:\n<urlopen error [Errno -3] name resolution>\n"
            "Tried https://mirror-two/, got:\n<urlopen error timed out>\n"
        )


def test_failed_download_leaves_nothing_and_says_why_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("torchvision.datasets.MNIST", _OfflineMNIST)
    target = tmp_path / "new" / "mnist"
    with pytest.raises(MnistDataError) as info:
        load_mnist(target, download=True)
    message = str(info.value)
    assert "\n" not in message and str(target) in message
    for part in ("Error downloading", "mirror-one", "name resolution", "mirror-two", "timed out"):
        assert part in message, part  # the whole reason, not its first line
    assert not (tmp_path / "new").exists()  # made for the download: gone again
    existing = tmp_path / "mine"
    (existing / "notes").mkdir(parents=True)
    with pytest.raises(MnistDataError):
        load_mnist(existing, download=True)
    assert sorted(p.name for p in existing.rglob("*")) == ["notes"]  # the user's folder stays


def test_download_moves_only_complete_files_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class OnlineMNIST:  # writes the files as torchvision does, unpacked copies included
        def __init__(self, root: str, train: bool, download: bool) -> None:
            raw = Path(root) / "MNIST" / "raw"
            images, labels = fake_digits(20)
            for prefix in ("train", "t10k"):
                write_idx_gz(images, raw / f"{prefix}-images-idx3-ubyte.gz")
                write_idx_gz(labels, raw / f"{prefix}-labels-idx1-ubyte.gz")
                (raw / f"{prefix}-images-idx3-ubyte").write_bytes(b"unpacked")

    monkeypatch.setattr("torchvision.datasets.MNIST", OnlineMNIST)
    assert len(load_mnist(tmp_path / "m", download=True)) == 20
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["MNIST"]  # no temporary left
    assert len(list((tmp_path / "m" / "MNIST" / "raw").iterdir())) == 4  # the .gz files only


def test_data_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(b"x")
    with pytest.raises(MnistDataError, match=f"--data-dir {f}: not a folder"):
        load_mnist(f, download=True)
    assert issubclass(MnistDataError, CyclekitError)


def test_official_gz_files(mnist_raw: Path) -> None:
    sizes = {
        "train-images-idx3-ubyte.gz": 9912422,
        "train-labels-idx1-ubyte.gz": 28881,
        "t10k-images-idx3-ubyte.gz": 1648877,
        "t10k-labels-idx1-ubyte.gz": 4542,
    }
    for name, size in sizes.items():
        assert (mnist_raw / name).stat().st_size == size, name
    train = load_mnist(mnist_raw, "train", download=False)
    test = load_mnist(mnist_raw, "test", download=False)
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(train.labels).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949,
    ]  # fmt: skip
    assert np.bincount(test.labels).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009,
    ]  # fmt: skip
    assert train.images.max() == 255 and train.images.min() == 0
    x = digits_to_tensor(test.images[:5])
    assert x.shape == (5, 1, 28, 28) and x.min() == -1 and x.max() == 1


# --- models --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MNIST_MODELS))
def test_shapes_ranges_and_gradients(kind: str) -> None:
    torch.manual_seed(0)
    model = model_from_spec(model_spec(kind, **TINY[kind]))
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    inp = torch.randn(3, 8) if kind.endswith("_g") else x
    out = model(inp)
    expected = {"g": (3, 1, 28, 28), "d": (3,), "ae": (3, 1, 28, 28), "classifier": (3, 10)}
    assert tuple(out.shape) == expected[kind.split("_")[-1]]
    if kind.endswith("_g"):
        assert out.min() >= -1 and out.max() <= 1  # tanh: the data's [-1, 1]
    if kind.endswith("_ae"):
        assert out.min() >= 0 and out.max() <= 1  # sigmoid: [0, 1] images
    out.float().square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_gan_step_d_gets_no_gradient_from_g_update() -> None:
    G, D = build_gan(model_spec("mlp_g", **TINY["mlp_g"]), model_spec("mlp_d", hidden=16), 0)
    opt_G, opt_D = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    snap: list[torch.Tensor] = []  # D's gradients right after (1)
    opt_D.register_step_post_hook(lambda *_: snap.extend(p.grad.clone() for p in D.parameters()))
    stats = gan_step(G, D, opt_G, opt_D, torch.rand(4, 1, 28, 28) * 2 - 1, torch.randn(4, 8))
    assert set(stats) == {"loss_D", "loss_G", "D_x", "D_G_z", "fooled"}
    assert all(p.requires_grad for p in D.parameters())  # unfrozen after (2)
    # (2) added nothing to D's gradients; G got finite ones from it
    assert all(torch.equal(a, p.grad) for a, p in zip(snap, D.parameters(), strict=True))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.parameters())


def test_discriminator_learns_to_separate_real_from_fixed_fakes() -> None:
    torch.manual_seed(0)
    images, _ = fake_digits(32)
    real = digits_to_tensor(images)
    fakes = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    D = model_from_spec(model_spec("mlp_d", hidden=32))
    opt = torch.optim.Adam(D.parameters(), lr=1e-3)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    losses = []
    for _ in range(60):
        loss = bce(D(real), torch.ones(32)) + bce(D(fakes), torch.zeros(32))
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert torch.sigmoid(D(real)).min() > 0.9 and torch.sigmoid(D(fakes)).max() < 0.1
    assert losses[-1] < 0.1 * losses[0]


# --- evaluation maths ----------------------------------------------------------------------------


def test_frechet_distance_properties() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 5, generator=g)
    b = torch.randn(4000, 5, generator=g)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, b) < 0.05  # same distribution: near 0
    shift = torch.tensor([3.0, 0, 0, 0, 0])
    assert frechet_distance(a, b + shift) == pytest.approx(9.0, rel=0.05)  # |mu_a - mu_b|^2
    # N(0, I) vs N(0, 4I): per dimension (1 + 4 - 2 * 2) = 1
    assert frechet_distance(a, 2 * b) == pytest.approx(5.0, rel=0.1)


def test_class_coverage_counts_missing_digits() -> None:
    preds = torch.tensor([0] * 50 + [1] * 49 + [2] * 1)
    hist, missing = class_coverage(torch.nn.functional.one_hot(preds, 10).float())
    assert hist[:3] == [50, 49, 1] and sum(hist) == 100
    assert missing == [3, 4, 5, 6, 7, 8, 9]  # 2 has 1% of samples: present


# --- randomness without the global generator -----------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MNIST_MODELS))
def test_init_from_a_generator_never_touches_global_rng(kind: str) -> None:
    before = torch.get_rng_state()
    a = model_from_spec(model_spec(kind, **TINY[kind]), generator=torch.Generator().manual_seed(5))
    b = model_from_spec(model_spec(kind, **TINY[kind]), generator=torch.Generator().manual_seed(5))
    c = model_from_spec(model_spec(kind, **TINY[kind]), generator=torch.Generator().manual_seed(6))
    assert torch.equal(before, torch.get_rng_state())  # not seeded, not advanced
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    weights = [k for k in sa if k.endswith("weight") and sa[k].dim() > 1]
    assert weights and any(not torch.equal(sa[k], sc[k]) for k in weights)
    # PyTorch's default distribution: uniform in +-1/sqrt(fan_in), and spread out in it
    for k in weights:
        w = sa[k]
        bound = 1 / (w.shape[1] * w[0, 0].numel()) ** 0.5
        assert w.abs().max() <= bound and w.abs().max() > 0.5 * bound, k
    for name, buf in a.named_buffers():  # batch norm statistics start fresh, not uninitialised
        if name.endswith("running_var"):
            assert torch.equal(buf, torch.ones_like(buf))


def test_seeded_dropout_is_reproducible_and_unbiased() -> None:
    drop = SeededDropout(0.3)
    x = torch.ones(200, 50)
    use_generator(drop, torch.Generator().manual_seed(1))
    before = torch.get_rng_state()
    first = drop(x)
    use_generator(drop, torch.Generator().manual_seed(1))
    assert torch.equal(first, drop(x)) and torch.equal(before, torch.get_rng_state())
    assert abs((first == 0).float().mean().item() - 0.3) < 0.02  # drops p of the units
    assert first.mean().item() == pytest.approx(1.0, abs=0.03)  # and rescales the rest
    drop.eval()
    assert torch.equal(drop(x), x)


# --- what the GAN metrics mean -------------------------------------------------------------------


class _ConstantD(torch.nn.Module):
    """A discriminator whose logit is always ``value`` (plus a parameter for the optimiser)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 0 * x keeps the graph to G's images, so G's half of the step can run
        return self.value + 0 * x.flatten(1).mean(1) + 0 * self.w


@pytest.mark.parametrize("logit", [-2.0, 0.0, 1.5])
def test_gan_step_metrics_have_their_stated_values(logit: float) -> None:
    G = model_from_spec(model_spec("mlp_g", **TINY["mlp_g"]), torch.Generator().manual_seed(0))
    D = _ConstantD(logit)
    opt_G, opt_D = torch.optim.SGD(G.parameters(), lr=0.0), torch.optim.SGD(D.parameters(), lr=0)
    real = digits_to_tensor(fake_digits(6)[0])
    stats = gan_step(G, D, opt_G, opt_D, real, torch.randn(6, 8), real_label=0.9)
    p = torch.sigmoid(torch.tensor(logit)).item()  # D's belief that anything is real
    assert stats["D_x"] == pytest.approx(p) and stats["D_G_z"] == pytest.approx(p)
    assert stats["fooled"] == (1.0 if logit > 0 else 0.0)  # share of fakes with logit > 0
    # BCE with the 0.9 target on real images, 0 on fakes; G's loss is BCE against 1
    bce_real = -(0.9 * np.log(p) + 0.1 * np.log(1 - p))
    assert stats["loss_D"] == pytest.approx(bce_real - np.log(1 - p), rel=1e-5)
    assert stats["loss_G"] == pytest.approx(-np.log(p), rel=1e-5)


def test_frechet_distance_refuses_what_would_crash() -> None:
    a = torch.randn(10, 4)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], a)  # one sample: NaN covariance, and eigvals segfaulted on it
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(torch.full((10, 4), float("nan")), a)
