"""The fast forms of CUT's anti-aliased layers compute the official maps.

In bf16/fp16 ``Downsample``/``Upsample`` avoid oneDNN's slow reduced-precision depthwise
backward and transposed convolution (see cyclekit/models/antialias.py). Checked here: the
two autograd functions against ``F.conv2d``/``F.conv_transpose2d`` and by gradcheck, in
float64; the layers in bf16 against the official ops computed exactly from the same values;
one whole CUT/FastCUT training step with the fast forms (forced on in float32) against the
same step with the official ops; and the sample head's gather.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cyclekit.devices import autocast
from cyclekit.files import safe_load
from cyclekit.models import antialias
from cyclekit.models.antialias import Downsample, Upsample, zero_insert
from cyclekit.models.patch_sample import PatchSampleMLP
from cyclekit.models.resnet import ResnetGenerator
from cyclekit.training.config import TrainConfig
from cyclekit.training.cut import build_cut
from cyclekit.training.loop import train
from tests.helpers import make_image_tree, tiny_config

# -- the official layers, as the official CUT code computes them ------------------------------


def official_down(layer: Downsample, x: torch.Tensor) -> torch.Tensor:
    """Pad, then the depthwise conv of the stored filter at the layer's stride."""
    return F.conv2d(layer.pad(x), layer.filt.to(x.dtype), stride=layer.stride, groups=x.shape[1])


def official_up(layer: Upsample, x: torch.Tensor) -> torch.Tensor:
    """Replicate pad 1, depthwise transposed conv (padding 1 + (k-1)//2), crop [1:, 1:] (and
    the last row/column for an even filter)."""
    half = (layer.filt_size - 1) // 2
    y = F.conv_transpose2d(
        layer.pad(x), layer.filt.to(x.dtype), stride=layer.stride, padding=1 + half,
        groups=x.shape[1],
    )  # fmt: skip
    y = y[:, :, 1:, 1:]
    return y if layer.filt_size % 2 else y[:, :, :-1, :-1]


@contextlib.contextmanager
def fast_forms_in_float32() -> Iterator[None]:
    """The fast forms also for float32 and float64 inputs while inside (normally bf16/fp16)."""
    saved = antialias._FAST_DTYPES
    antialias._FAST_DTYPES = (*saved, torch.float32, torch.float64)
    try:
        yield
    finally:
        antialias._FAST_DTYPES = saved


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype
    return (a.double() - b.double()).abs().max().item()


SHAPES = [(1, 1, 2, 2), (1, 3, 2, 3), (2, 4, 5, 7), (1, 2, 8, 8), (2, 3, 9, 16), (1, 5, 17, 13)]


# -- the two autograd functions: exact maps and exact adjoints ---------------------------------


@pytest.mark.parametrize(
    "stride,padding,k,extra",
    [(2, 0, 3, (0, 0)), (2, 2, 4, (1, 0)), (2, 3, 4, (0, 1)), (3, 1, 5, (2, 1)), (1, 0, 2, (0, 0))],
)
def test_transposed_conv_as_a_stride_1_conv_of_the_zero_inserted_input(stride, padding, k, extra):
    g = torch.Generator().manual_seed(k)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, generator=g)
    filt = torch.randn(3, 1, k, k, dtype=torch.float64, generator=g)  # any filter, unsymmetric
    expected = F.conv_transpose2d(
        x, filt, stride=stride, padding=padding, output_padding=extra, groups=3
    )
    assert _max_diff(antialias._transposed(x, filt, stride, padding, extra), expected) < 1e-12
    assert zero_insert(x, stride)[:, :, ::stride, ::stride].equal(x)
    padded = zero_insert(x, stride, 2, (1, 3))
    assert padded.shape[-2:] == (5 * stride + 6, 4 * stride + 8)
    assert padded[:, :, 2::stride, 2::stride][:, :, :6, :5].equal(x)
    assert torch.count_nonzero(padded) == torch.count_nonzero(x)  # zeros everywhere else


@pytest.mark.parametrize("size", [(2, 2), (3, 3), (2, 5), (4, 3), (7, 6)])
def test_fold_reflect_pad_is_the_adjoint_of_the_reflection_pad(size):
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    y = F.pad(x, (1, 1, 1, 1), mode="reflect")
    grad = torch.randn_like(y)
    (expected,) = torch.autograd.grad(y, x, grad)
    assert _max_diff(antialias.fold_reflect_pad(grad), expected) < 1e-12


@pytest.mark.parametrize("size", [(7, 9), (8, 8), (5, 6), (2, 3)])
@pytest.mark.parametrize(
    "k,stride,reflect1",
    [(3, 2, True), (3, 2, False), (4, 2, False), (2, 2, True), (3, 3, True), (1, 2, False)],
)
def test_strided_blur_function_is_the_conv_and_its_backward_the_adjoint(size, k, stride, reflect1):
    if not reflect1 and min(size) < k:
        pytest.skip("smaller than the filter")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, *size, dtype=torch.float64, generator=g, requires_grad=True)
    filt = torch.randn(2, 1, k, k, dtype=torch.float64, generator=g)
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect") if reflect1 else x
    y = antialias._StridedBlur.apply(x, filt, stride, reflect1)
    assert _max_diff(y, F.conv2d(xp, filt, stride=stride, groups=2)) < 1e-12
    assert torch.autograd.gradcheck(
        lambda t: antialias._StridedBlur.apply(t, filt, stride, reflect1), x
    )


@pytest.mark.parametrize("k,stride,padding", [(4, 2, 3), (4, 2, 2), (3, 2, 2), (5, 2, 3)])
def test_transposed_blur_function_is_the_transposed_conv_and_its_backward_the_adjoint(
    k, stride, padding
):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    filt = torch.randn(2, 1, k, k, dtype=torch.float64, generator=g)
    y = antialias._TransposedBlur.apply(x, filt, stride, padding)
    expected = F.conv_transpose2d(x, filt, stride=stride, padding=padding, groups=2)
    assert _max_diff(y, expected) < 1e-12
    assert torch.autograd.gradcheck(
        lambda t: antialias._TransposedBlur.apply(t, filt, stride, padding), x
    )


# -- the layers ---------------------------------------------------------------------------------

LAYERS = [
    *[(Downsample, dict(filt_size=f, stride=s, pad_type=p))
      for f, s, p in [(3, 2, "reflect"), (3, 2, "replicate"), (3, 1, "zero"), (1, 2, "reflect"),
                      (2, 2, "reflect"), (4, 2, "replicate"), (5, 2, "zero"), (7, 3, "replicate")]],
    *[(Upsample, dict(filt_size=f, stride=s, pad_type=p))
      for f, s, p in [(4, 2, "replicate"), (3, 2, "replicate"), (5, 2, "zero"), (6, 3, "reflect"),
                      (2, 2, "replicate")]],
]  # fmt: skip


def _official(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return official_down(layer, x) if isinstance(layer, Downsample) else official_up(layer, x)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cls,kw", LAYERS)
def test_fast_layers_equal_the_official_ops_values_and_gradients(shape, cls, kw):
    if kw["pad_type"] == "reflect" and min(shape[2:]) <= kw["filt_size"] // 2:
        pytest.skip("reflect padding needs a side larger than the pad")
    layer = cls(shape[1], **kw).double()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ref = _official(layer, x)
    with fast_forms_in_float32():
        fast = layer(x)
    assert _max_diff(fast, ref) < 1e-12  # every pixel, the borders included
    grad = torch.randn_like(ref)
    (gx_fast,) = torch.autograd.grad(fast, x, grad)
    (gx_ref,) = torch.autograd.grad(ref, x, grad)
    assert _max_diff(gx_fast, gx_ref) < 1e-12


@pytest.mark.parametrize("cls", [Downsample, Upsample])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_values_and_gradients_round_the_exact_official_ones(cls, dtype):
    # The official ops on the same values, computed exactly (float64): the fast forms must be
    # within one rounding of them, relative to the sum of the magnitudes that make each value
    # (the layers' filters are nonnegative, so that is the same map applied to |x| or |grad|).
    # The gradient gets two roundings, as the official one: the conv's, then the border sums
    # of the pad's backward.
    torch.manual_seed(0)  # unseeded, it failed once in a suite run (fp16 Downsample): bound tight
    layer = cls(8)
    x = torch.randn(2, 8, 15, 12).to(dtype).requires_grad_()
    grad = torch.randn(*((2, 8, 8, 6) if cls is Downsample else (2, 8, 30, 24))).to(dtype)
    y = layer(x)
    assert y.dtype == dtype
    (gx,) = torch.autograd.grad(y, x, grad)
    exact = cls(8).double()
    x64 = x.detach().double().requires_grad_()
    y64 = _official(exact, x64)
    (gx64,) = torch.autograd.grad(y64, x64, grad.double())
    (gx_mag,) = torch.autograd.grad(_official(exact, x64), x64, grad.double().abs())
    y_mag = _official(exact, x64.detach().abs())
    eps = torch.finfo(dtype).eps
    assert ((y.double() - y64).abs() <= eps * y_mag).all()
    assert ((gx.double() - gx64).abs() <= 2 * eps * gx_mag).all()
    assert not torch.equal(gx.double(), gx64)  # the check is not vacuous: bf16 did round


@pytest.mark.parametrize("cls", [Downsample, Upsample])
def test_bf16_autocast_gives_the_official_dtype_and_values(cls):
    layer = cls(16)
    x = torch.randn(2, 16, 24, 19).to(torch.bfloat16)
    with autocast(torch.device("cpu"), "bf16")():
        fast = layer(x)
        ref = _official(layer, x)  # official ops under autocast: fp32 pad, bf16 conv
        from_fp32 = layer(x.float())  # an fp32 input under autocast comes back bf16 too
    assert fast.dtype == ref.dtype == from_fp32.dtype == torch.bfloat16
    # The same few products summed in float32 and rounded once: at most a rare last-bit tie.
    assert ((fast.float() - ref.float()).abs() <= ref.float().abs() * 2**-8).all()
    assert (fast != ref).float().mean().item() < 1e-2
    assert torch.equal(from_fp32, fast)
    assert layer(x.float()).dtype == torch.float32  # no autocast: float32 stays float32


def test_float32_keeps_the_official_ops_and_the_generator_still_scripts():
    g = ResnetGenerator(ngf=4, n_blocks=1, downsample="antialias", upsample="antialias").eval()
    x = torch.randn(1, 3, 20, 28)
    with torch.no_grad():
        out = g(x)
        manual, h = [], x
        for layer in g.model:
            if isinstance(layer, (Downsample, Upsample)):
                h = _official(layer, h)
            else:
                h = layer(h)
            manual.append(h)
        assert torch.equal(out, h)  # float32: bit for bit the official ops
        assert torch.equal(torch.jit.script(g)(x), out)


# -- the sample head ---------------------------------------------------------------------------


def test_head_gathers_the_same_rows_as_the_full_permute():
    feats = [torch.randn(2, c, s, s + 1, requires_grad=True) for c, s in [(3, 6), (8, 4)]]
    head = PatchSampleMLP(nc=8)
    out, ids = head(feats, 5, generator=torch.Generator().manual_seed(0))
    for i, (feat, idx) in enumerate(zip(feats, ids, strict=True)):
        picked = feat.permute(0, 2, 3, 1).flatten(1, 2)[:, idx, :].flatten(0, 1)
        mlp = getattr(head, f"mlp_{i}")(picked)
        assert torch.equal(out[i], mlp / (mlp.pow(2).sum(1, keepdim=True).sqrt() + 1e-7))


# -- one whole training step -------------------------------------------------------------------

_NO_SCALER = torch.amp.GradScaler("cpu", enabled=False)


def _step_state(model: str, fast: bool, precision: str = "fp32") -> dict[str, torch.Tensor]:
    """Losses, and every gradient as each optimiser sees it, of one step from a seed."""
    torch.manual_seed(0)
    cfg = TrainConfig(
        data="x", model=model, netG="resnet_6blocks", ngf=4, ndf=4, crop_size=32, seed=3
    )
    m = build_cut(cfg, torch.device("cpu"))
    m.ensure_head()
    out: dict[str, torch.Tensor] = {}
    named = {"D": m.D_b, "G": m.G_ab, "F": m.F}
    for key, opt in m.optimizers().items():

        def spy(*a, _key=key, _step=opt.step, **k):  # noqa: ANN002, ANN003, ANN202
            for name, p in named[_key].named_parameters():
                if p.grad is not None:
                    out[f"grad {_key}/{name}"] = p.grad.clone()
            return _step(*a, **k)

        opt.step = spy
    g = torch.Generator().manual_seed(1)
    batch = {k: torch.rand(1, 3, 32, 32, generator=g) * 2 - 1 for k in "ab"}
    with fast_forms_in_float32() if fast else contextlib.nullcontext():
        losses = m.train_step(batch, autocast(torch.device("cpu"), precision), _NO_SCALER)
    return out | {f"loss {k}": v for k, v in losses.items()}


@pytest.mark.parametrize("model", ["cut", "fastcut"])
def test_a_training_step_with_the_fast_forms_equals_the_official_step(model):
    # Gradients, not updated weights: Adam divides by the gradient's own size, so a weight
    # whose true gradient is 0 (a conv bias before an instance norm) moves by lr in the
    # direction of its rounding noise, which says nothing about the math.
    fast, ref = _step_state(model, True), _step_state(model, False)
    assert fast.keys() == ref.keys() and len([k for k in ref if k.startswith("grad F/")]) > 0
    for net in "DGF":
        grads = [k for k in ref if k.startswith(f"grad {net}/")]
        scale = max(ref[k].abs().max().item() for k in grads)
        for k in grads:
            assert _max_diff(fast[k], ref[k]) <= 1e-5 * scale, k
    for k in (k for k in ref if k.startswith("loss ")):
        assert _max_diff(fast[k], ref[k]) <= 1e-5 * max(1.0, ref[k].abs().item()), k


def test_bf16_cut_resumes_bit_for_bit_through_the_fast_forms(tmp_path):
    # The fast forms run under bf16 autocast; a resumed bf16 run must still equal the
    # uninterrupted one bit for bit (no nondeterministic op in them).
    data = make_image_tree(tmp_path / "data", n_a=4, n_b=4)
    common = dict(model="cut", nce_layers="0,4,8", num_patches=16, precision="bf16",
                  epochs=1, epochs_decay=1, batch_size=1)  # fmt: skip
    full = train(tiny_config(data, tmp_path / "ck", name="full", max_steps=4, **common),
                 progress=False)  # fmt: skip
    part = tiny_config(data, tmp_path / "ck", name="split", max_steps=2, **common)
    train(part, progress=False)
    resumed = train(dataclasses.replace(part, max_steps=4), resume="auto",
                    explicit={"max_steps"}, progress=False)  # fmt: skip
    a, b = (safe_load(r.run_dir / "last.pt") for r in (full, resumed))
    for name in ("G_ab", "D_b", "F"):
        for k, v in a["models"][name].items():
            assert torch.equal(v, b["models"][name][k]), (name, k)


# -- the benchmark's shared-machine readings ---------------------------------------------------


def test_bench_train_gives_min_cpu_and_interleaved_ratios_and_the_load():
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(repo / "scripts" / "bench_train.py"), "--models", "fastcut",
           "--size", "32", "--ngf", "4", "--ndf", "4", "--threads", "1", "--iters", "2",
           "--rounds", "1", "--warmup", "0", "--precision", "fp32",
           "--quiet-load", "1000", "--interleave", "2"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=repo, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for model, res in out["results"]["fp32"].items():
        assert 0 < res["cpu_seconds_per_step"] < 60, model
        assert len(res["load_1min"]) == 1 and res["load_1min"][0] >= 0, model
    ratio = out["ratio_to_cyclegan"]["fp32"]
    assert ratio["cyclegan"]["step_from_min"] == ratio["cyclegan"]["step_from_cpu"] == 1.0
    assert ratio["fastcut"]["step_from_min"] > 0 and ratio["fastcut"]["step_from_cpu"] > 0
    inter = out["interleaved"]["fp32"]
    assert inter["cycles"] == 2 and set(inter["models"]) == {"cyclegan", "fastcut"}
    assert inter["models"]["cyclegan"]["step_ratio"] == 1.0
    fast = inter["models"]["fastcut"]
    assert fast["step_ratio_range"][0] <= fast["step_ratio"] <= fast["step_ratio_range"][1]
    assert fast["meets_step_target"] == (fast["step_ratio"] <= 0.55)
