"""Networks: official layouts, shapes, gradient flow, init, spec detection. (Parity with the
official outputs is tests/test_translate_sources.py::test_parity_with_official_outputs.)"""

from __future__ import annotations

import json

import pytest
import torch

from cyclekit.generator_io import load_generator, official_spec
from cyclekit.models import (
    build_discriminator,
    build_generator,
    generator_from_spec,
    generator_spec,
    init_weights,
)
from cyclekit.models.discriminator import patch_output_size


def test_state_dict_layout_equals_official(official_fixtures):
    layouts = json.loads((official_fixtures / "official_generator_keys.json").read_text())
    assert len(layouts) >= 4
    for name, layout in layouts.items():
        blocks = 9 if name.startswith("resnet9") else 6
        ngf = int(name.split("ngf")[1].split("_")[0])
        g = build_generator(
            f"resnet_{blocks}blocks", ngf=ngf, use_dropout=name.endswith("_dropout")
        )
        ours = {k: list(v.shape) for k, v in g.state_dict().items()}
        assert ours == layout, name


@pytest.mark.parametrize("arch", ["resnet_9blocks", "resnet_6blocks"])
@pytest.mark.parametrize("channels", [(1, 3), (3, 3), (3, 1)])
def test_resnet_generator_keeps_size_non_square(arch, channels):
    g = build_generator(arch, input_nc=channels[0], output_nc=channels[1], ngf=4)
    y = g(torch.randn(2, channels[0], 36, 52))
    assert y.shape == (2, channels[1], 36, 52)
    assert y.abs().max() <= 1.0


@pytest.mark.parametrize("arch,side", [("unet_128", 128), ("unet_256", 256)])
def test_unet_generator_shapes(arch, side):
    g = build_generator(arch, input_nc=1, ngf=2)
    assert g(torch.randn(1, 1, side, 2 * side)).shape == (1, 3, side, 2 * side)


def test_patchgan_output_size_and_helper():
    d = build_discriminator("basic", ndf=4)
    for h, w in [(256, 256), (64, 96), (24, 24)]:
        out = d(torch.randn(1, 3, h, w))
        assert out.shape == (1, 1, h // 8 - 2, w // 8 - 2)
        assert patch_output_size(h, 3) == h // 8 - 2
    d5 = build_discriminator("n_layers", n_layers=5, ndf=2)
    assert d5(torch.randn(1, 3, 96, 96)).shape[-1] == patch_output_size(96, 5) == 1
    pixel = build_discriminator("pixel", input_nc=1, ndf=4)
    assert pixel(torch.randn(2, 1, 10, 14)).shape == (2, 1, 10, 14)


def test_every_parameter_gets_a_finite_gradient():
    for net, x in [
        (build_generator("resnet_6blocks", ngf=4, use_dropout=True), torch.randn(2, 3, 32, 32)),
        (build_generator("unet_128", ngf=2), torch.randn(1, 3, 128, 128)),
        (build_discriminator("basic", ndf=4, norm="batch"), torch.randn(2, 3, 32, 32)),
        (build_discriminator("pixel", ndf=4), torch.randn(2, 3, 8, 8)),
    ]:
        net(x).square().mean().backward()
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("init_type", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_is_seeded_and_zeroes_biases(init_type):
    nets = []
    for _ in range(2):
        net = build_generator("resnet_6blocks", ngf=4)
        init_weights(net, init_type, 0.02, generator=torch.Generator().manual_seed(7))
        nets.append(net)
    for (name, a), b in zip(
        nets[0].state_dict().items(), nets[1].state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    conv = nets[0].model[1]
    assert torch.count_nonzero(conv.bias) == 0
    if init_type == "normal":
        assert abs(conv.weight.std().item() - 0.02) < 0.005


@pytest.mark.parametrize("arch", ["resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256"])
@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
@pytest.mark.parametrize("dropout", [False, True])
def test_architecture_is_read_off_state_dict_keys(arch, norm, dropout):
    spec = generator_spec(arch, 3, 1, 4, norm, dropout)
    got = official_spec(generator_from_spec(spec).state_dict())
    if arch.startswith("unet"):
        spec["use_dropout"] = False  # U-Net dropout holds no weights; irrelevant for inference
    assert got == spec


def test_malformed_generator_files_are_one_line_errors(tmp_path):
    from cyclekit.files import CheckpointError
    from cyclekit.generator_io import save_generator

    g = build_generator("resnet_6blocks", ngf=4)
    spec = generator_spec("resnet_6blocks", 3, 3, 4, "instance", False)
    good = save_generator(tmp_path / "g.pt", g, spec, "a2b")
    payload = torch.load(good, weights_only=True)
    cases = {
        "noarch.pt": {**payload, "spec": {k: v for k, v in spec.items() if k != "arch"}},
        "huge.pt": {**payload, "spec": {**spec, "ngf": 10**6}},
        "nospecs.pt": {"format": "cyclekit-train", "format_version": 1, "models": {}},
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(CheckpointError) as e:
            load_generator(tmp_path / name, "a2b")
        assert str(e.value).startswith(str(tmp_path / name)) and "\n" not in str(e.value)


def test_auto_precision_is_bf16_only_on_cpus_that_run_it_natively(monkeypatch, tmp_path):
    import builtins

    from cyclekit import devices

    real_open = builtins.open

    def cpu_with(flags: str):
        def fake_open(path, *a, **k):
            if str(path) == "/proc/cpuinfo":
                info = tmp_path / "cpuinfo"
                info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
                return real_open(info, *a, **k)
            return real_open(path, *a, **k)

        monkeypatch.setattr(builtins, "open", fake_open)

    cpu = torch.device("cpu")
    cpu_with("fpu sse avx2 avx512f avx512bw")  # AVX-512 without BF16: emulated, slower
    assert devices.resolve_precision("auto", cpu) == "fp32"
    cpu_with("fpu avx512f avx512_bf16")  # AMD Zen 4 style
    assert devices.resolve_precision("auto", cpu) == "bf16"
    cpu_with("fpu avx512f amx_bf16 amx_tile")  # Intel with AMX
    assert devices.resolve_precision("auto", cpu) == "bf16"
    assert devices.resolve_precision("fp32", cpu) == "fp32"  # asked for: kept
