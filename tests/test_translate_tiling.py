"""Tiled translation: same result as untiled (shared instance-norm statistics), no seams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cyclekit.translate.batching as batching
import cyclekit.translate.tiling as tiling
from cyclekit.models import build_generator
from tests.test_translate_common import (
    assert_user_error,
    cli,
    make_generator,
    photo,
    tiny_spec,
)

# Measured on a 512x512 photo-like image, random-init resnet_6blocks ngf=4, fp32, in the
# generator's [-1, 1] output units: tile 256 -> max 1.7e-3, mean 6.8e-5; tile 384 -> max 1.6e-3,
# mean 3.4e-5 (default overlap 128 px). At 1024x1024: tile 512 -> max 1.9e-3, mean 3.6e-5.
# Differences come only from the receptive field of the tiles' cut edges, which the blend
# weights down. Naive tiles (each with its own statistics) differ by up to ~1.
TILED_MAX, TILED_MEAN = 1e-2, 2e-4


@pytest.fixture(scope="module")
def model_and_image() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = build_generator("resnet_6blocks", ngf=4).eval()
    return model, tiling.to_model_input(photo(512, 512)[None])


@pytest.mark.parametrize("tile", [256, 384])
def test_tiled_matches_untiled(model_and_image, tile: int) -> None:
    model, x = model_and_image
    run = tiling.make_runner(model, torch.device("cpu"), "fp32")
    ref = run(x)
    y = tiling.run_tiled(model, x, run, tile, multiple=4, batch_size=2)
    d = (y - ref).abs()
    print(f"tile {tile}: max {d.max():.2e} mean {d.mean():.2e}")
    assert d.max() < TILED_MAX and d.mean() < TILED_MEAN
    # Big scans stay uint8 and are converted a tile at a time: the same numbers.
    pixels = torch.from_numpy(photo(512, 512)).permute(2, 0, 1)[None]
    torch.testing.assert_close(
        tiling.run_tiled(model, pixels, run, tile, multiple=4, batch_size=2), y, atol=0, rtol=0
    )
    if tile != 256:
        return
    # Without shared statistics the same tiles disagree badly: the problem being solved.
    naive = torch.zeros_like(ref)
    with torch.inference_mode():
        for t in range(0, 512, tile):
            for s in range(0, 512, tile):
                naive[:, :, t : t + tile, s : s + tile] = model(x[:, :, t : t + tile, s : s + tile])
    assert (naive - ref).abs().max() > 20 * TILED_MAX


def test_tile_plan_is_aligned_and_weights_sum_to_one() -> None:
    for length, tile in [(1024, 512), (1000, 256), (260, 256), (96, 256)]:
        starts = tiling.tile_origins(length, tile, overlap=64, multiple=4)
        assert all(s % 4 == 0 for s in starts) and starts[0] == 0
        assert starts[-1] + min(tile, length) == length
        assert all(b - a <= tile - 64 for a, b in zip(starts, starts[1:], strict=False))
    th, tw, rows, cols = tiling._plan(1000, 760, 256, 64, 4)
    total = torch.zeros(1000, 760)
    for t, wh in rows:
        for s, ww in cols:
            total[t : t + th, s : s + tw] += wh[:, None] * ww[None, :]
    torch.testing.assert_close(total, torch.ones_like(total))


def test_tiles_below_the_minimum_are_refused(tmp_path: Path) -> None:
    gen = make_generator(tmp_path / "g.pt")
    Image.fromarray(photo(40, 30)).save(tmp_path / "a.png")
    r = cli(
        "translate", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--checkpoint", str(gen),
        "--tile", str(batching.MIN_TILE - 4),
    )  # fmt: skip
    assert_user_error(r, f"--tile {batching.MIN_TILE - 4}: tiles smaller than {batching.MIN_TILE}")
    assert not (tmp_path / "o").exists()


def test_cli_tile_and_automatic_tiling(tmp_path: Path, monkeypatch) -> None:
    gen = make_generator(tmp_path / "g.pt", ngf=8)
    (tmp_path / "in").mkdir()
    Image.fromarray(photo(601, 455)).save(tmp_path / "in" / "big.png")
    calls = []
    real = tiling.run_tiled
    monkeypatch.setattr(tiling, "run_tiled", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    outs = {}
    for name, extra in [
        ("plain", []),
        ("tile", ["--tile", "256"]),
        ("auto", ["--memory-budget", "16"]),
    ]:
        r = cli(
            "translate",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / name),
            "--checkpoint",
            str(gen),
            "--precision",
            "fp32",
            "--no-progress",
            *extra,
        )
        assert r.exit_code == 0, r.output
        outs[name] = np.asarray(Image.open(tmp_path / name / "big.png"), np.int16)
        assert outs[name].shape == (455, 601, 3)
    # --tile 256, then automatic: 604x456 padded needs ~35 MB untiled > the 16 MB budget.
    assert calls[0] == 256 and len(calls) == 2 and calls[1] < 456
    # --tile on an image that fits: statistics of the whole image, so (almost) identical.
    assert np.abs(outs["tile"] - outs["plain"]).max() <= 2
    # Over the budget the statistics come from a downscaled copy: an approximation (large for
    # this random-weight net), but shared by all tiles, so no seam: rows/columns across tile
    # edges change no more than elsewhere.
    auto = outs["auto"].astype(np.float32)
    col_steps = np.abs(np.diff(auto, axis=1)).mean(axis=(0, 2))
    assert col_steps.max() < 3 * np.median(col_steps)


def test_out_of_memory_fails_that_image_and_a_bug_keeps_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = make_generator(tmp_path / "g.pt")
    (tmp_path / "in").mkdir()
    Image.fromarray(photo(64, 48)).save(tmp_path / "in" / "big.png")
    Image.fromarray(photo(16, 12)).save(tmp_path / "in" / "small.png")
    real = tiling.make_runner
    message = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"

    def runner(*args):
        run = real(*args)

        def limited(x: torch.Tensor) -> torch.Tensor:
            if x.shape[-1] > 32:
                raise RuntimeError(message)
            return run(x)

        return limited

    monkeypatch.setattr(tiling, "make_runner", runner)
    args = ["translate", str(tmp_path / "in"), "--checkpoint", str(gen), "--no-progress"]
    r = cli(*args, "-o", str(tmp_path / "o1"))
    assert r.exit_code == 1 and "done 1, skipped 0, failed 1" in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {tmp_path / 'in' / 'big.png'}: out of memory ({message}); try --tile "
        f"{batching.MIN_TILE}, a lower --memory-budget or --max-size"
    ]
    message = "The size of tensor a (4) must match the size of tensor b (5)"  # a bug
    with pytest.raises(RuntimeError, match="must match"):
        cli(*args, "-o", str(tmp_path / "o2"))


class _Started:
    """A batch a fake background runner was given; finished when the test says so."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.ready = x, False

    def result(self) -> torch.Tensor:
        assert self.ready, "the Batcher waited on a batch the test had not finished"
        return -self.x  # a visible, per-image transform


class _BackgroundRunner:
    def __init__(self) -> None:
        self.started: list[_Started] = []
        self.finish_at_once = False

    def submit(self, x: torch.Tensor) -> _Started:
        self.started.append(_Started(x))
        self.started[-1].ready = self.finish_at_once
        return self.started[-1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return -x


def test_batches_run_in_the_background_and_come_back_in_order() -> None:
    """With a runner that can work in the background, the Batcher starts a batch and goes
    on (decoding the next images) until two are in flight; results come back in the order
    the images came, each image with its own output."""
    spec = tiny_spec()
    run = _BackgroundRunner()
    b = batching.Batcher(build_generator(**spec), spec, run, 2, 1 << 30)
    images = [np.full((8, 8, 3), 10 * i, np.uint8) for i in range(7)]
    done = []
    assert b.add("i0", images[0]) == [] and b.add("i1", images[1]) == []  # batch 1 started
    assert len(run.started) == 1 and len(b.in_flight) == 1
    done += b.add("i2", images[2]) + b.add("i3", images[3])  # batch 2: two in flight
    assert done == [] and len(b.in_flight) == 2
    run.started[0].ready = True
    done += b.add("i4", images[4])  # batch 1 is finished: it comes back without waiting
    assert [item for item, _ in done] == ["i0", "i1"]
    run.started[1].ready = True
    done += b.add("i5", images[5])  # batch 3 started; batch 2 collected
    assert [item for item, _ in done] == ["i0", "i1", "i2", "i3"]
    done += b.add("i6", images[6])
    for s in run.started:
        s.ready = True
    run.finish_at_once = True
    done += b.flush()  # the odd last image joins the queue behind the others
    assert [item for item, _ in done] == [f"i{i}" for i in range(7)]
    for i, (_, out) in enumerate(done):
        # -x in model units: 10 i -> 255 - 10 i (rounded), the image's own.
        assert out.shape == (8, 8, 3) and abs(int(out[0, 0, 0]) - (255 - 10 * i)) <= 1
    assert not b.in_flight and not b.pending
