"""CUT / FastCUT: the anti-aliased discriminator, the training step, resume, translate."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from cyclekit.devices import autocast
from cyclekit.files import safe_load
from cyclekit.models import build_discriminator
from cyclekit.models.discriminator import patch_output_size
from cyclekit.training.config import ConfigError, TrainConfig
from cyclekit.training.cut import build_cut
from cyclekit.training.loop import train
from cyclekit.training.model import build_model
from tests.helpers import make_image_tree, tiny_config
from tests.test_translate_common import cli


def test_antialiased_patchgan_has_the_official_cut_layout():
    D = build_discriminator("basic", input_nc=3, ndf=8, antialias=True)
    # Official CUT (no_antialias=False): conv s1, LeakyReLU, Downsample per level; instance
    # norm convs keep their bias there (use_bias is True for InstanceNorm2d).
    assert list(D.state_dict()) == [
        "model.0.weight", "model.0.bias", "model.2.filt",
        "model.3.weight", "model.3.bias", "model.6.filt",
        "model.7.weight", "model.7.bias", "model.10.filt",
        "model.11.weight", "model.11.bias", "model.14.weight", "model.14.bias",
    ]  # fmt: skip
    assert D.state_dict()["model.6.filt"].shape == (16, 1, 3, 3)
    plain = build_discriminator("basic", input_nc=3, ndf=8)
    assert "model.2.filt" not in plain.state_dict()  # CycleGAN's stays as it was


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("side", [24, 30, 33, 64, 100])
def test_patch_output_size_predicts_the_discriminator(antialias, side):
    D = build_discriminator("basic", input_nc=3, ndf=4, antialias=antialias)
    out = D(torch.zeros(1, 3, side, side))
    assert out.shape[-1] == patch_output_size(side, 3, antialias)


# -- training -----------------------------------------------------------------------------


def _cut_config(data, ck, model="cut", **kw):
    # Fewer NCE layers and patches keep the tiny model quick; the rest are the model defaults.
    values = dict(name=model, model=model, nce_layers="0,4,8", num_patches=32) | kw
    return tiny_config(data, ck, **values)


def test_model_defaults_follow_the_official_cut_code():
    cut = TrainConfig(data="x", model="cut")
    fast = TrainConfig(data="x", model="fastcut")
    gan = TrainConfig(data="x")
    assert (cut.epochs, cut.epochs_decay, fast.epochs, fast.epochs_decay) == (200, 200, 150, 50)
    assert (cut.lambda_nce, cut.nce_idt, cut.flip_equivariance) == (1.0, True, False)
    assert (fast.lambda_nce, fast.nce_idt, fast.flip_equivariance) == (10.0, False, True)
    assert cut.init_type == fast.init_type == "xavier" and gan.init_type == "normal"
    assert (cut.downsample, cut.upsample) == ("antialias", "antialias")
    assert (gan.downsample, gan.upsample, gan.epochs) == ("conv", "transpose", 100)
    assert (cut.nce_layers, cut.num_patches, cut.nce_t) == ("0,4,8,12,16", 256, 0.07)
    # A flag given wins over the model's default.
    assert TrainConfig(data="x", model="fastcut", lambda_nce=2.0).lambda_nce == 2.0


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(model="cut", netG="unet_256"), "needs a ResNet generator"),
        (dict(model="cut", gan_mode="wgangp"), "wgangp"),
        (dict(model="cut", nce_layers="4,2"), "--nce-layers"),
        (dict(model="cut", nce_layers="a"), "--nce-layers"),
        (dict(model="cut", num_patches=0), "--num-patches"),
        (dict(model="cut", input_nc=1), "--no-nce-idt"),
        (dict(netG="unet_256", upsample="resize-conv"), "ResNet generators"),
        (dict(model="gan"), "--model"),
    ],
)
def test_settings_a_model_cannot_use_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(data="x", **kw)


def test_nce_layers_beyond_the_generator_are_refused_before_training(tmp_path):
    data = make_image_tree(tmp_path / "data")
    with pytest.raises(ConfigError, match="--nce-layers 0,4,99"):
        train(_cut_config(data, tmp_path / "ck", nce_layers="0,4,99", max_steps=1), progress=False)


def test_the_head_and_its_optimiser_are_made_at_the_first_step(tmp_path):
    cfg = TrainConfig(data="x", model="cut", netG="resnet_6blocks", ngf=4, ndf=4, crop_size=32)
    m = build_cut(cfg, torch.device("cpu"))
    assert not m.F.built and m.opt_F is None and set(m.optimizers()) == {"G", "D"}
    assert set(m.networks()) == {"G_ab", "D_b"}
    batch = {"a": torch.rand(1, 3, 32, 32) * 2 - 1, "b": torch.rand(1, 3, 32, 32) * 2 - 1}
    losses = m.train_step(batch, autocast(torch.device("cpu"), "fp32"), _no_scaler())
    assert m.F.built and set(m.optimizers()) == {"G", "D", "F"} and set(m.networks()) >= {"F"}
    assert m.F.channels == m.G_ab.feature_channels([0, 4, 8, 12, 16])
    assert set(losses) == {"G_ab", "NCE", "NCE_Y", "G", "D_b"}
    assert all(math.isfinite(float(v)) for v in losses.values()) and losses["NCE"] > 0
    assert losses["G"] == pytest.approx(losses["G_ab"] + (losses["NCE"] + losses["NCE_Y"]) / 2)


def test_the_step_updates_d_then_g_and_head_with_d_frozen(tmp_path):
    cfg = TrainConfig(data="x", model="fastcut", netG="resnet_6blocks", ngf=4, ndf=4, crop_size=32)
    m = build_cut(cfg, torch.device("cpu"))
    order: list[str] = []
    for name, opt in (("D", m.opt_D), ("G", m.opt_G)):
        step = opt.step

        def spy(*a, _name=name, _step=step, **k):
            if _name == "G":
                order.append(f"G with D grads {[p.grad for p in m.D_b.parameters()][0] is None}")
            else:
                order.append("D")
            return _step(*a, **k)

        opt.step = spy
    batch = {"a": torch.rand(1, 3, 32, 32) * 2 - 1, "b": torch.rand(1, 3, 32, 32) * 2 - 1}
    before = [p.clone() for p in m.D_b.parameters()]
    m.train_step(batch, autocast(torch.device("cpu"), "fp32"), _no_scaler())
    assert order == ["D", "G with D grads False"]  # D's own grads stay, G adds none
    assert any(not torch.equal(a, b) for a, b in zip(before, m.D_b.parameters(), strict=True))


@pytest.mark.parametrize("model", ["cut", "fastcut"])
def test_keys_from_the_forward_pass_train_as_the_encoder_rerun_does(model, monkeypatch):
    # The step keeps the PatchNCE keys from G's forward pass instead of encoding the
    # inputs again as the official code does; both must train the same networks.
    from cyclekit.models.resnet import ResnetGenerator

    cfg = TrainConfig(data="x", model=model, netG="resnet_6blocks", ngf=4, ndf=4, crop_size=32)
    gen = torch.Generator().manual_seed(3)
    batches = [{k: torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1 for k in "ab"} for _ in range(4)]

    def trained(reuse: bool) -> tuple[list[torch.Tensor], list[dict[str, float]]]:
        if not reuse:
            monkeypatch.setattr(ResnetGenerator, "keeps_intact", lambda self, layers: False)
        m = build_cut(cfg, torch.device("cpu"))
        encoded = []
        encode = m.G_ab.encode
        m.G_ab.encode = lambda x, layers: encoded.append(1) or encode(x, layers)
        losses = [
            {k: float(v) for k, v in m.train_step(b, autocast(torch.device("cpu"), "fp32"),
                                                  _no_scaler()).items()}
            for b in batches
        ]  # fmt: skip
        monkeypatch.undo()
        calls.append(len(encoded))
        params = [p.detach().clone() for n in ("G_ab", "D_b", "F") for p in
                  getattr(m, n).parameters()]  # fmt: skip
        return params, losses

    calls: list[int] = []
    reused, rerun = trained(True), trained(False)
    for a, b in zip(reused[0], rerun[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(reused[1], rerun[1], strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
    # CUT encodes the translation and the identity, not the inputs again (2 a step, not 4);
    # FastCUT skips the rerun on the steps it does not flip.
    if model == "cut":
        assert calls == [2 * 4, 4 * 4]
    else:
        assert calls[0] < calls[1] == 2 * 4


def _no_scaler():
    return torch.amp.GradScaler("cpu", enabled=False)


@pytest.mark.parametrize("model", ["cut", "fastcut"])
def test_one_sided_run_saves_translates_and_exports(tmp_path, model):
    data = make_image_tree(tmp_path / "data")
    res = train(_cut_config(data, tmp_path / "ck", model, max_steps=2), progress=False)
    run = res.run_dir
    state = safe_load(run / "last.pt")
    assert set(state["models"]) == {"G_ab", "D_b", "F"}
    assert set(state["optimizers"]) == {"G", "D", "F"}
    assert (run / "G_ab.pt").is_file() and not (run / "G_ba.pt").exists()
    assert any(k.endswith(".filt") for k in state["models"]["G_ab"])  # anti-aliased layers
    assert res.history[-1]["loss/NCE"] > 0 and "loss/cycle_a" not in res.history[-1]
    assert ("loss/NCE_Y" in res.history[-1]) == (model == "cut")
    out = tmp_path / "out"
    for ckpt in ("last.pt", "G_ab.pt"):
        r = cli("translate", str(data / "testA"), "-o", str(out / ckpt), "--checkpoint",
                str(run / ckpt), "--no-progress")  # fmt: skip
        assert r.exit_code == 0, r.output
        assert (out / ckpt / "t0.png").is_file()
    r = cli("translate", str(data / "testA"), "-o", str(out / "b2a"), "--checkpoint",
            str(run / "last.pt"), "--direction", "b2a", "--no-progress")  # fmt: skip
    assert r.exit_code == 1 and "translates one way only" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (out / "b2a").exists()
    r = cli("export", "--checkpoint", str(run / "last.pt"), "--format", "torchscript",
            "-o", str(tmp_path / "g.ts"))  # fmt: skip
    assert r.exit_code == 0, r.output
    scripted = torch.jit.load(str(tmp_path / "g.ts"))
    assert scripted(torch.zeros(1, 3, 20, 28)).shape == (1, 3, 20, 28)


def test_cut_resumes_bit_for_bit_with_its_lazily_built_head(tmp_path):
    data = make_image_tree(tmp_path / "data", n_a=5, n_b=4)
    common = dict(epochs=1, epochs_decay=1, batch_size=2, model="fastcut")  # flips: a stream
    full = train(_cut_config(data, tmp_path / "ck", name="full", max_steps=5, **common),
                 progress=False)  # fmt: skip
    part = _cut_config(data, tmp_path / "ck", name="split", max_steps=2, **common)
    train(part, progress=False)
    resumed = train(dataclasses.replace(part, max_steps=5), resume="auto", explicit={"max_steps"},
                    progress=False)  # fmt: skip
    assert resumed.step == 5
    a, b = (safe_load(r.run_dir / "last.pt") for r in (full, resumed))
    for name in ("G_ab", "D_b", "F"):
        for k, v in a["models"][name].items():
            assert torch.equal(v, b["models"][name][k]), (name, k)
    for k, v in a["optimizers"]["F"]["state"][0].items():
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizers"]["F"]["state"][0][k]))
    assert full.history[-1]["loss/NCE"] == resumed.history[-1]["loss/NCE"]


def test_resume_keeps_the_model_without_naming_it(tmp_path):
    data = make_image_tree(tmp_path / "data")
    first = _cut_config(data, tmp_path / "ck", max_steps=1)
    train(first, progress=False)
    # A resume given only the run: --model and its defaults come from the checkpoint.
    plain = TrainConfig(name=first.name, checkpoints_dir=first.checkpoints_dir, max_steps=2,
                        device="cpu", num_workers=0, wandb_mode="disabled")  # fmt: skip
    res = train(plain, resume="auto", explicit={"max_steps"}, progress=False)
    state = safe_load(res.run_dir / "last.pt")
    assert state["config"]["model"] == "cut" and state["config"]["epochs"] == 2  # not 100
    assert set(state["models"]) == {"G_ab", "D_b", "F"} and res.step == 2


def test_a_few_steps_of_each_model_on_real_photos(tmp_path, horse2zebra):
    data = tmp_path / "h2z"
    for sub in ("trainA", "trainB"):
        (data / sub).mkdir(parents=True)
        for p in sorted((horse2zebra / sub).glob("*.jpg"))[:3]:
            (data / sub / p.name).symlink_to(p)
    for model in ("cyclegan", "cut", "fastcut"):
        cfg = _cut_config(data, tmp_path / "ck", model, max_steps=2, load_size=72, crop_size=64)
        res = train(cfg, progress=False)
        loss = res.history[-1]["loss/G"]
        assert res.step == 2 and math.isfinite(loss), (model, res.history)


@pytest.mark.parametrize("upsample", ["resize-conv", "antialias"])
def test_cyclegan_builds_the_upsampling_it_is_asked_for(upsample):
    cfg = TrainConfig(
        data="x", netG="resnet_6blocks", ngf=4, ndf=4, crop_size=32, upsample=upsample
    )
    m = build_model(cfg, torch.device("cpu"))
    for name in ("G_ab", "G_ba"):
        assert m.specs[name]["upsample"] == upsample
        assert not any(isinstance(x, torch.nn.ConvTranspose2d) for x in m.G_ab.modules())
    plain = build_model(TrainConfig(data="x", ngf=4, ndf=4, crop_size=32), torch.device("cpu"))
    assert "upsample" not in plain.specs["G_ab"]  # the official layout, spec unchanged
