"""CUT's networks: anti-aliased ResNet generator (official keys and outputs), resize-conv,
architecture detection, encoder features, the MLP sample head and the PatchNCE loss."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cyclekit.models import (
    DOWNSAMPLES,
    UPSAMPLES,
    PatchSampleMLP,
    build_generator,
    generator_from_spec,
    generator_spec,
    resnet_sampling,
    resnet_variant_from_state,
    side_multiple,
)
from cyclekit.models.antialias import Downsample, Upsample, binomial_filter
from cyclekit.models.resnet import ResnetGenerator
from cyclekit.training.patchnce import mean_patch_nce, patch_nce_loss

# name -> (arch, upsample); both fixtures use anti-aliased downsampling.
CUT_FIXTURES = {
    "cut_resnet9_ngf16_antialias": ("resnet_9blocks", "antialias"),
    "cut_resnet6_ngf16_antialias_down_only": ("resnet_6blocks", "transpose"),
}
OLD_SPEC_KEYS = {"arch", "input_nc", "output_nc", "ngf", "norm", "use_dropout"}


@pytest.fixture(scope="module")
def official_cut(shared_dir: Path) -> Path:
    path = shared_dir / "fixtures" / "official_cut"
    if not path.exists():
        msg = f"shared test data not found: {path}"
        if os.environ.get("CYCLEKIT_REQUIRE_SHARED") == "1":
            pytest.fail(msg + " (CYCLEKIT_REQUIRE_SHARED=1)")
        pytest.skip(msg)
    return path


def _official_input(official_cut: Path) -> torch.Tensor:
    # ToTensor then Normalize(0.5, 0.5), no resizing, as the fixtures were made.
    img = Image.open(official_cut.parent / "official" / "input_n02381460_1000.jpg").convert("RGB")
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    return (x - 0.5) / 0.5


def _cut_spec(name: str) -> dict:
    arch, upsample = CUT_FIXTURES[name]
    return generator_spec(arch, 3, 3, 16, "instance", False, "antialias", upsample)


# --- generator: official CUT layout and outputs ------------------------------------------------


def test_cut_generator_keys_equal_official(official_cut):
    layouts = json.loads((official_cut / "official_cut_generator_keys.json").read_text())
    assert set(layouts) == set(CUT_FIXTURES)
    for name, layout in layouts.items():
        ours = {
            k: list(v.shape) for k, v in generator_from_spec(_cut_spec(name)).state_dict().items()
        }
        assert ours == layout, name


@pytest.mark.parametrize("name", sorted(CUT_FIXTURES))
def test_official_cut_weights_reproduce_official_output(official_cut, name):
    state = torch.load(official_cut / f"{name}.pth", weights_only=True)
    # The architecture is read off the file alone, as translate --checkpoint does.
    spec = resnet_variant_from_state(state)
    assert spec == _cut_spec(name)
    model = generator_from_spec(spec)
    # A freshly built net already holds the official blur filters, value for value.
    for key, value in model.state_dict().items():
        if key.endswith(".filt"):
            assert torch.equal(value, state[key]), key
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        y = model(_official_input(official_cut))[0].numpy()
    expected = np.load(official_cut / f"{name}_output.npy")
    assert y.shape == expected.shape
    assert np.abs(y - expected).max() <= 1e-5


def test_official_cyclegan_files_still_detect_as_conv_transpose(official_fixtures):
    for name in ("resnet9_ngf16_nodropout", "resnet6_ngf16_dropout"):
        state = torch.load(official_fixtures / f"{name}.pth", weights_only=True)
        spec = resnet_variant_from_state(state)
        assert set(spec) == OLD_SPEC_KEYS
        assert resnet_sampling(spec) == ("conv", "transpose")
        generator_from_spec(spec).load_state_dict(state, strict=True)


# --- spec: backward compatible, enough to rebuild ----------------------------------------------


def test_old_specs_are_unchanged_and_still_build_cyclegan():
    spec = generator_spec("resnet_6blocks", 3, 3, 4, "instance", False)
    assert set(spec) == OLD_SPEC_KEYS  # defaults are not written: old readers still load it
    old = {"arch": "resnet_9blocks", "input_nc": 3, "output_nc": 3, "ngf": 4, "norm": "instance",
           "use_dropout": False}  # fmt: skip
    g = generator_from_spec(old)
    assert (g.downsample, g.upsample) == ("conv", "transpose")
    keys = {k: v.shape for k, v in g.state_dict().items()}
    assert keys == {k: v.shape for k, v in build_generator(ngf=4).state_dict().items()}
    assert "model.10.conv_block.1.weight" in keys and not any(k.endswith("filt") for k in keys)


@pytest.mark.parametrize("down,up", list(itertools.product(DOWNSAMPLES, UPSAMPLES)))
def test_spec_rebuilds_each_variant(down, up):
    spec = generator_spec("resnet_6blocks", 1, 3, 4, "batch", True, downsample=down, upsample=up)
    assert resnet_sampling(spec) == (down, up)
    g = generator_from_spec(spec)
    assert (g.downsample, g.upsample) == (down, up)
    assert resnet_variant_from_state(g.state_dict()) == spec
    twin = build_generator("resnet_6blocks", 1, 3, 4, "batch", True, downsample=down, upsample=up)
    assert list(twin.state_dict()) == list(g.state_dict())


def test_bad_sampling_options_are_refused():
    with pytest.raises(ValueError, match="upsample"):
        generator_spec("resnet_9blocks", 3, 3, 4, "instance", False, upsample="bicubic")
    with pytest.raises(ValueError, match="ResNet"):
        generator_spec("unet_128", 3, 3, 4, "instance", False, downsample="antialias")
    with pytest.raises(ValueError, match="downsample"):
        generator_from_spec({**generator_spec("resnet_6blocks", 3, 3, 4, "instance", False),
                             "downsample": "maxpool"})  # fmt: skip
    # A U-Net spec that spells out the defaults still builds.
    unet = {**generator_spec("unet_128", 3, 3, 2, "instance", False), "upsample": "transpose"}
    generator_from_spec(unet)


# --- detection of a state_dict's architecture -------------------------------------------------


@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
@pytest.mark.parametrize("arch", ["resnet_9blocks", "resnet_6blocks"])
def test_variant_is_read_off_keys_for_every_combination(arch, norm):
    for n, (down, up) in enumerate(itertools.product(DOWNSAMPLES, UPSAMPLES)):
        for dropout in (n % 2 == 0, n % 2 == 1):
            spec = generator_spec(arch, 3, 1, 4, norm, dropout, downsample=down, upsample=up)
            with torch.device("meta"):
                state = generator_from_spec(spec).state_dict()
            assert resnet_variant_from_state(state) == spec, (down, up, dropout)


def test_detection_ignores_stale_stats_and_refuses_odd_layouts():
    g = build_generator("resnet_6blocks", ngf=4, downsample="antialias", upsample="antialias")
    state = g.state_dict()
    stale = {**state, "model.2.running_mean": torch.zeros(4), "model.2.running_var": torch.ones(4)}
    assert resnet_variant_from_state(stale) == resnet_variant_from_state(state)
    assert resnet_variant_from_state(build_generator("unet_128", ngf=2).state_dict()) is None
    assert resnet_variant_from_state({"weight": torch.zeros(1)}) is None
    assert resnet_variant_from_state({**state, 3: torch.zeros(1)}) is None
    broken = {**state, "model.8.weight": torch.zeros(8, 8, 5, 5)}
    with pytest.raises(ValueError, match="6-block ResNet"):
        resnet_variant_from_state(broken)
    seven = ResnetGenerator(ngf=4, n_blocks=7).state_dict()
    with pytest.raises(ValueError, match="7 blocks"):
        resnet_variant_from_state(seven)


# --- sizes and the resampling layers ----------------------------------------------------------


@pytest.mark.parametrize("down,up", list(itertools.product(DOWNSAMPLES, UPSAMPLES)))
def test_output_size_equals_input_for_multiples_of_4(down, up):
    assert side_multiple("resnet_9blocks") == 4
    g = ResnetGenerator(ngf=4, n_blocks=1, downsample=down, upsample=up)
    for h, w in [(20, 28), (36, 52), (8, 64)]:
        y = g(torch.randn(1, 3, h, w))
        assert y.shape == (1, 3, h, w)
        assert y.abs().max() <= 1.0
    # A side that is not a multiple of 4 comes back at another size: 4 is really needed.
    assert g(torch.randn(1, 3, 22, 24)).shape[-2:] == (24, 24)


def test_resize_conv_is_nearest_upsampling_then_a_3x3_conv():
    g = ResnetGenerator(ngf=4, n_blocks=1, upsample="resize-conv")
    ups = [m for m in g.model if isinstance(m, torch.nn.Upsample)]
    assert [m.mode for m in ups] == ["nearest", "nearest"]
    convs = [m for m in g.model if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs[-2:]] == [
        (16, 8, (1, 1)),
        (8, 4, (1, 1)),
    ]
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules())


def test_binomial_filters():
    assert torch.equal(binomial_filter(3) * 16, torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]))
    row = torch.tensor([1.0, 3, 3, 1])
    assert torch.equal(binomial_filter(4) * 64, row[:, None] * row[None, :])


def test_downsample_is_a_reflect_padded_blur_every_second_pixel():
    x = torch.randn(1, 2, 6, 5)
    layer = Downsample(2)
    y = layer(x)
    assert y.shape == (1, 2, 3, 3)  # ceil(H/2), ceil(W/2)
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    w = [1.0, 2.0, 1.0]
    for c, i, j in [(0, 0, 0), (1, 2, 1), (0, 1, 2)]:
        manual = sum(
            w[a] * w[b] / 16 * xp[0, c, 2 * i + a, 2 * j + b] for a in range(3) for b in range(3)
        )
        assert abs(y[0, c, i, j].item() - manual.item()) < 1e-6
    assert layer.filt.shape == (2, 1, 3, 3) and "filt" in layer.state_dict()


def test_upsample_doubles_keeps_flat_images_flat_and_spreads_an_impulse_as_the_filter():
    layer = Upsample(3)
    assert layer.filt.shape == (3, 1, 4, 4) and "filt" in layer.state_dict()
    flat = torch.full((1, 3, 5, 7), 0.25)
    y = layer(flat)
    assert y.shape == (1, 3, 10, 14)
    assert torch.allclose(y, flat.mean() * torch.ones_like(y), atol=1e-6)
    impulse = torch.zeros(1, 1, 6, 6)
    impulse[0, 0, 3, 3] = 1.0
    y = Upsample(1)(impulse)[0, 0]
    rows, cols = torch.nonzero(y, as_tuple=True)
    block = y[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert torch.allclose(block, binomial_filter(4) * 4)


@pytest.mark.filterwarnings("ignore")  # the exporters' own notices, silenced by export.py too
@pytest.mark.parametrize("down,up", [("antialias", "antialias"), ("conv", "resize-conv")])
def test_new_variants_script_and_export_with_dynamic_sizes(down, up, tmp_path):
    # translate's export scripts the generator (TorchScript) or exports it to ONNX with dynamic
    # H and W: the new layers must survive both and keep working at another size.
    g = ResnetGenerator(ngf=4, n_blocks=1, downsample=down, upsample=up).eval()
    x = torch.randn(1, 3, 20, 28)
    with torch.no_grad():
        expected = g(x)
        assert torch.equal(torch.jit.script(g)(x), expected)
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    dynamic = {0: "n", 2: "h", 3: "w"}
    torch.onnx.export(g, (torch.zeros(1, 3, 32, 48),), str(tmp_path / "g.onnx"),
                      input_names=["x"], output_names=["y"], opset_version=17, dynamo=False,
                      dynamic_axes={"x": dynamic, "y": dynamic})  # fmt: skip
    (y,) = ort.InferenceSession(str(tmp_path / "g.onnx")).run(None, {"x": x.numpy()})
    assert np.abs(y - expected.numpy()).max() < 1e-4


# --- encoder features -------------------------------------------------------------------------


def test_encode_returns_the_activations_after_the_requested_layers():
    torch.manual_seed(0)
    g = ResnetGenerator(ngf=4, n_blocks=5, downsample="antialias", upsample="antialias")
    x = torch.randn(2, 3, 16, 20)
    layers = [0, 4, 8, 12, 16]
    manual, h = [], x
    for i, layer in enumerate(g.model):
        h = layer(h)
        if i in layers:
            manual.append(h)
    feats = g.encode(x, layers)
    assert len(feats) == len(layers)
    for a, b in zip(feats, manual, strict=True):
        assert torch.equal(a, b)
    # Layer 0 is the reflect-padded input (the official numbering), not the first conv.
    assert torch.equal(feats[0], F.pad(x, (3, 3, 3, 3), mode="reflect"))
    assert g.feature_channels(layers) == [f.shape[1] for f in feats] == [3, 8, 16, 16, 16]


def test_encode_stops_after_the_last_requested_layer():
    g = ResnetGenerator(ngf=4, n_blocks=5, downsample="antialias", upsample="antialias")
    called = []
    g.model[9].register_forward_hook(lambda *args: called.append(9))
    g.encode(torch.randn(1, 3, 16, 16), [0, 4, 8])
    assert called == []
    g.encode(torch.randn(1, 3, 16, 16), [0, 9])
    assert called == [9]


def test_forward_keeps_the_same_activations_encode_gives_and_the_same_output():
    torch.manual_seed(0)
    g = ResnetGenerator(ngf=4, n_blocks=5, downsample="antialias", upsample="antialias")
    x = torch.randn(2, 3, 16, 20)
    layers = [0, 4, 8, 12, 16]
    with g.keeping(layers):
        out = g(x)
    assert g.keep_layers is None and torch.equal(out, g(x))
    assert len(g.kept) == len(layers)
    for a, b in zip(g.kept, g.encode(x, layers), strict=True):
        assert torch.equal(a, b) and not a.requires_grad


def test_forward_refuses_to_keep_a_layer_an_in_place_relu_overwrites():
    g = ResnetGenerator(ngf=4, n_blocks=5, norm="none", downsample="antialias")
    # With no norm, the ReLU after the conv at 4 works in place on its output.
    assert g.keeps_intact([0, 12, 16]) and not g.keeps_intact([0, 4])
    with pytest.raises(ValueError, match="in-place"):
        g.keeping([0, 4])
    assert not ResnetGenerator(ngf=4, n_blocks=1).keeps_intact([2])  # norm then ReLU


@pytest.mark.parametrize("layers", [[], [4, 0], [0, 0], [-1], [0, 99]])
def test_encode_refuses_bad_layer_lists(layers):
    g = ResnetGenerator(ngf=4, n_blocks=1)
    with pytest.raises(ValueError):
        g.encode(torch.randn(1, 3, 8, 8), layers)
    with pytest.raises(ValueError):
        g.feature_channels(layers)


# --- the MLP sample head ----------------------------------------------------------------------


def _feats(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, c, s, s, generator=g) for c, s in [(3, 6), (8, 4), (16, 3)]]


def test_head_lazy_build_is_deterministic_given_the_seed():
    feats = _feats()
    heads = [PatchSampleMLP(nc=8, init_seed=5) for _ in range(2)]
    assert not heads[0].built and list(heads[0].parameters()) == []
    outs = [h(feats, 4, generator=torch.Generator().manual_seed(1)) for h in heads]
    assert heads[0].built and heads[0].channels == [3, 8, 16]
    for (a_name, a), b in zip(
        heads[0].state_dict().items(), heads[1].state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), a_name
    for a, b in zip(outs[0][0], outs[1][0], strict=True):
        assert torch.equal(a, b)
    other = PatchSampleMLP(nc=8, init_seed=6)
    other(feats, 4, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other.mlp_0[0].weight, heads[0].mlp_0[0].weight)
    # Building explicitly from the channel counts gives the very same weights (checkpoint path).
    explicit = PatchSampleMLP(nc=8, init_seed=5)
    explicit.build([3, 8, 16])
    assert PatchSampleMLP.channels_in_state(heads[0].state_dict()) == [3, 8, 16]
    explicit.load_state_dict(heads[0].state_dict())  # same keys, strict
    fresh = PatchSampleMLP(nc=8, init_seed=5)
    fresh.build([3, 8, 16])
    for a, b in zip(fresh.state_dict().values(), heads[0].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError):
        fresh.build([3, 8, 16])


def test_l2_normalize_matches_the_official_formula_and_survives_a_zero_row():
    from cyclekit.models.patch_sample import l2_normalize

    x = torch.randn(5, 7)
    official = x / (x.pow(2).sum(1, keepdim=True).pow(0.5) + 1e-7)
    assert torch.equal(l2_normalize(x), official)
    # A row of zeros (all hidden ReLUs off) once made every later step NaN.
    # There the norm contributes nothing and x / eps is what is left to differentiate.
    x = torch.cat([torch.zeros(1, 7), torch.randn(2, 7)]).requires_grad_()
    upstream = torch.randn(3, 7)
    (l2_normalize(x) * upstream).sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad[0], upstream[0] / 1e-7)


def test_head_layout_and_init_are_the_official_ones():
    head = PatchSampleMLP()
    head.build([64, 256])
    assert [k for k in head.state_dict() if k.startswith("mlp_0")] == [
        "mlp_0.0.weight", "mlp_0.0.bias", "mlp_0.2.weight", "mlp_0.2.bias",
    ]  # fmt: skip
    assert head.mlp_0[0].weight.shape == (256, 64) and head.mlp_1[2].weight.shape == (256, 256)
    # xavier-normal with gain 0.02: std = 0.02 * sqrt(2 / (fan_in + fan_out)); biases 0.
    w = head.mlp_1[0].weight
    assert abs(w.std().item() / (0.02 * math.sqrt(2 / (256 + 256))) - 1) < 0.05
    assert all(
        torch.count_nonzero(m[i].bias) == 0 for m in (head.mlp_0, head.mlp_1) for i in (0, 2)
    )


def test_head_samples_the_same_positions_for_queries_and_keys():
    head = PatchSampleMLP(nc=8)
    feats = _feats(0)
    keys, ids = head(feats, 12, generator=torch.Generator().manual_seed(3))
    assert [k.shape for k in keys] == [(24, 8), (24, 8), (18, 8)]  # 3x3 map: all 9 positions
    assert [len(i) for i in ids] == [12, 12, 9]
    assert all(len(set(i.tolist())) == len(i) for i in ids)  # distinct positions
    for k in keys:
        # Unit rows, up to the official 1e-7 added to the norm (the gain-0.02 init gives small
        # vectors, so this shows at the 1e-3 level).
        assert (k.norm(dim=1) <= 1).all() and (k.norm(dim=1) > 0.99).all()
    # Row r of layer 1 is image r // 12 at flat position ids[1][r % 12], through mlp_1.
    feat, r = feats[1], 15
    pos = ids[1][r % 12].item()
    manual = head.mlp_1(feat[r // 12, :, pos // 4, pos % 4])
    assert torch.allclose(keys[1][r], manual / (manual.norm() + 1e-7), atol=1e-6)
    queries, ids_q = head(_feats(1), 12, ids)
    assert all(torch.equal(a, b) for a, b in zip(ids, ids_q, strict=True))
    assert [q.shape for q in queries] == [k.shape for k in keys]


def test_head_randomness_comes_only_from_the_given_generator():
    feats = _feats()
    before = torch.get_rng_state()
    head = PatchSampleMLP(nc=8)
    gen = torch.Generator().manual_seed(11)
    _, first = head(feats, 4, generator=gen)
    state = gen.get_state()
    _, second = head(feats, 4, generator=gen)
    assert torch.equal(torch.get_rng_state(), before)  # global RNG untouched (lazy build too)
    # Resuming from a saved generator state replays the same positions.
    gen.set_state(state)
    _, replay = head(feats, 4, generator=gen)
    assert all(torch.equal(a, b) for a, b in zip(second, replay, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(first, second, strict=True))
    with pytest.raises(ValueError, match="Generator"):
        head(feats, 4)
    with pytest.raises(ValueError):
        head(feats, 0, generator=gen)
    with pytest.raises(ValueError):
        head(feats[:2], 4, generator=gen)


def test_head_trains_end_to_end_with_the_generator():
    g = ResnetGenerator(ngf=4, n_blocks=5, downsample="antialias", upsample="antialias")
    head = PatchSampleMLP(nc=8)
    x = torch.randn(1, 3, 16, 16)
    layers = [0, 4, 8, 12, 16]
    k, ids = head(g.encode(x, layers), 6, generator=torch.Generator().manual_seed(0))
    q, _ = head(g.encode(g(x), layers), 6, ids)
    mean_patch_nce(q, k, batch_size=1).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    assert g.model[1].weight.grad.abs().sum() > 0


# --- PatchNCE ---------------------------------------------------------------------------------


def _hand_nce(q: list[list[float]], k: list[list[float]], t: float) -> list[float]:
    """-log softmax of the positive among [q_i.k_i, q_i.k_j (j != i), -10 for j = i] / t."""

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    out = []
    for i, qi in enumerate(q):
        pos = dot(qi, k[i])
        negs = [dot(qi, kj) if j != i else -10.0 for j, kj in enumerate(k)]
        denom = math.exp(pos / t) + sum(math.exp(n / t) for n in negs)
        out.append(-math.log(math.exp(pos / t) / denom))
    return out


def test_patch_nce_matches_a_hand_computed_case():
    q = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
    k = [[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]]
    for t in (0.07, 0.5):
        got = patch_nce_loss(torch.tensor(q), torch.tensor(k), batch_size=1, temperature=t)
        assert got.shape == (3,)
        assert torch.allclose(got.double(), torch.tensor(_hand_nce(q, k, t)).double(), atol=1e-5)
    # Default temperature is the official 0.07.
    default = patch_nce_loss(torch.tensor(q), torch.tensor(k), 1)
    assert torch.allclose(default.double(), torch.tensor(_hand_nce(q, k, 0.07)).double(), atol=1e-5)
    # With two patches at t=1 the formula is small enough to write out in full.
    q2, k2 = [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.6, 0.8]]
    # patch 0: pos 1, neg q0.k1 = 0.6; patch 1: pos 0.8, neg q1.k0 = 0; plus exp(-10) each.
    expected = [
        -math.log(math.e / (math.e + math.exp(0.6) + math.exp(-10))),
        -math.log(math.exp(0.8) / (math.exp(0.8) + 1 + math.exp(-10))),
    ]
    got = patch_nce_loss(torch.tensor(q2), torch.tensor(k2), 1, temperature=1.0)
    assert torch.allclose(got.double(), torch.tensor(expected).double(), atol=1e-6)


def test_patch_nce_negatives_come_from_the_same_image_only():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(6, 4, generator=g), dim=1)
    k = F.normalize(torch.randn(6, 4, generator=g), dim=1)
    k_other = k.clone()
    k_other[3:] = F.normalize(torch.randn(3, 4, generator=g), dim=1)  # image 2's keys change
    a, b = patch_nce_loss(q, k, 2), patch_nce_loss(q, k_other, 2)
    assert torch.equal(a[:3], b[:3]) and not torch.equal(a[3:], b[3:])
    # Each image's losses are those of that image alone.
    assert torch.allclose(a[:3], patch_nce_loss(q[:3], k[:3], 1))
    # The official single-image option: every patch of the batch is a negative.
    c, d = (
        patch_nce_loss(q, k, 2, negatives_from_minibatch=True),
        patch_nce_loss(q, k_other, 2, negatives_from_minibatch=True),
    )
    assert not torch.equal(c[:3], d[:3])
    with pytest.raises(ValueError):
        patch_nce_loss(q, k, 4)


def test_patch_nce_gradient_flows_through_queries_only_and_layers_average():
    q = torch.randn(4, 3, requires_grad=True)
    k = torch.randn(4, 3, requires_grad=True)
    mean_patch_nce([q, q * 2], [k, k], batch_size=2).backward()
    assert q.grad is not None and k.grad is None
    q1, q2, k1 = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    expected = (patch_nce_loss(q1, k1, 2).mean() + patch_nce_loss(q2, k1, 2).mean()) / 2
    assert torch.allclose(mean_patch_nce([q1, q2], [k1, k1], 2), expected)
