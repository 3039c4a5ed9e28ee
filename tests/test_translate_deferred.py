"""translate on OpenVINO starts without torch once a checkpoint's conversion is indexed, and gives
the same pixels as a run that loaded the checkpoint (cyclekit.translate.deferred)."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cyclekit.generator_io as generator_io
from cyclekit import devices
from cyclekit.errors import CyclekitError
from cyclekit.translate import backends
from cyclekit.translate.batching import output_to_pixels, pixels_to_input
from cyclekit.translate.deferred import DeferredGenerator, recall
from cyclekit.translate.engine import TranslateOptions, open_model
from cyclekit.translate.tiling import from_model_output, to_model_input
from tests.test_translate_common import (
    cli,
    make_generator,
    make_official,
    save_photo,
    serve_models,
    translate_with,
)

pytest.importorskip("openvino")
# conftest: other tests run translate on torch, and share one cache
pytestmark = [pytest.mark.openvino, pytest.mark.usefixtures("cache")]


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every checkpoint read through generator_io.load_generator, from now on."""
    seen: list[Path] = []
    real = generator_io.load_generator

    def counting(path, direction=None):
        seen.append(Path(path))
        return real(path, direction)

    monkeypatch.setattr(generator_io, "load_generator", counting)
    return seen


def pixels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))}


def photos(folder: Path, n: int = 3, w: int = 40, h: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        save_photo(folder / f"p{i}.png", w, h, seed=i)
    return folder


def test_numpy_conversions_give_the_same_bits_as_torch() -> None:
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    assert torch.equal(torch.from_numpy(pixels_to_input(batch)), to_model_input(batch))
    # Outputs: random values, past both ends, and exact halves (rounded to even by both).
    y = rng.uniform(-1.2, 1.2, (2, 3, 5, 7)).astype(np.float32)
    y[0, 0, 0, :4] = (np.array([0.5, 1.5, 2.5, 254.5], np.float32) / 127.5) - 1
    want = from_model_output(torch.from_numpy(y.copy()))
    assert np.array_equal(output_to_pixels(y.copy()), want)


def test_gpu_guess_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(devices.glob, "glob", lambda pattern: [])
    assert devices.gpu_may_be_present() is False
    for node in ("/dev/nvidia0", "/dev/nvhost-ctrl-gpu", "/dev/kfd"):  # (desktop, Jetson, ROCm)
        monkeypatch.setattr(devices.glob, "glob", lambda p, n=node: fnmatch.filter([n], p))
        assert devices.gpu_may_be_present() is True
    monkeypatch.setattr(sys, "platform", "darwin")  # MPS: only torch can tell
    monkeypatch.setattr(devices.glob, "glob", lambda pattern: [])
    assert devices.gpu_may_be_present() is True


def test_second_run_needs_no_checkpoint_read_and_gives_the_same_pixels(
    tmp_path: Path, gen: Path, loads: list[Path]
) -> None:
    inp = photos(tmp_path / "in")
    r = translate_with(inp, tmp_path / "o1", gen, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert loads == [gen]  # the first run reads the file and indexes its conversion
    opts = TranslateOptions(output_dir=tmp_path / "x", device="cpu")
    model, info = open_model(gen, None, None, opts)
    assert isinstance(model, DeferredGenerator) and info["spec"]["ngf"] == 4
    r = translate_with(inp, tmp_path / "o2", gen, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert loads == [gen]  # not read again
    first, second = pixels(tmp_path / "o1"), pixels(tmp_path / "o2")
    assert len(first) == 3 and all(np.array_equal(first[k], second[k]) for k in first)


def test_what_needs_torch_loads_it_then(tmp_path: Path, gen: Path, loads: list[Path]) -> None:
    # A tiled image and a --sequence clip run in torch: a run that started from the index
    # reads the checkpoint when it meets one, and gives what a torch run gives.
    big = tmp_path / "big"
    save_photo(big / "scan.png", 300, 280)
    shot = photos(tmp_path / "shot", n=3, w=24, h=16)
    first = translate_with(photos(tmp_path / "in", 1), tmp_path / "o0", gen, "--device", "cpu")
    assert first.exit_code == 0, first.output
    assert loads == [gen]
    for name, inp, extra in (
        ("tiled", big, ["--tile", "256"]),
        ("clip", shot, ["--sequence", "--no-video", "--frames", "FRAMES"]),
    ):
        runs = {}
        for backend in ("auto", "torch"):
            out = tmp_path / f"{name}_{backend}"
            args = [a.replace("FRAMES", str(out / "frames")) for a in extra]
            r = translate_with(inp, out, gen, "--device", "cpu", "--backend", backend, *args)
            assert r.exit_code == 0, r.output
            runs[backend] = pixels(out)
        assert runs["auto"] and runs["auto"].keys() == runs["torch"].keys()
        assert all(np.array_equal(runs["auto"][k], runs["torch"][k]) for k in runs["auto"])
    # Each auto run started from the index and read the file when it met its tile or clip;
    # each torch run read it at the start.
    assert loads == [gen] * 5


def test_a_changed_file_or_a_lost_conversion_is_loaded_again(
    tmp_path: Path, gen: Path, cache: Path
) -> None:
    inp = photos(tmp_path / "in", 1)
    assert translate_with(inp, tmp_path / "o1", gen, "--device", "cpu").exit_code == 0
    opts = TranslateOptions(output_dir=tmp_path / "x", device="cpu")
    assert isinstance(open_model(gen, None, None, opts)[0], DeferredGenerator)
    # The index is keyed by the file's bytes and the direction asked for, not its name.
    assert not isinstance(open_model(gen, None, "a2b", opts)[0], DeferredGenerator)
    make_generator(gen, seed=1)
    model, _ = open_model(gen, None, None, opts)
    assert isinstance(model, torch.nn.Module)
    # Other devices and backends never start from the index.
    make_generator(gen, seed=0)
    assert isinstance(open_model(gen, None, None, opts)[0], DeferredGenerator)  # (the same bytes)
    for other in ({"backend": "torch"}, {"precision": "fp16"}, {"device": "cuda"}):
        opts2 = TranslateOptions(output_dir=tmp_path / "x", **{"device": "cpu", **other})
        assert isinstance(open_model(gen, None, None, opts2)[0], torch.nn.Module)
    # A conversion deleted from the cache, or a damaged entry: loaded the usual way.
    folder = backends.openvino_cache()
    assert recall(folder, gen, None) is not None
    entry = next((folder / "checkpoints").glob("*.json"))
    key = json.loads(entry.read_text())["weights_key"]
    (folder / f"{key}.bin").unlink()
    assert recall(folder, gen, None) is None
    entry.write_text("{not json")
    assert recall(folder, gen, None) is None
    r = translate_with(inp, tmp_path / "o2", gen, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert np.array_equal(pixels(tmp_path / "o1")["p0.png"], pixels(tmp_path / "o2")["p0.png"])
    assert isinstance(open_model(gen, None, None, opts)[0], DeferredGenerator)


def test_a_pretrained_model_starts_from_the_index_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loads: list[Path]
) -> None:
    served = tmp_path / "server"
    served.mkdir()
    make_official(served / "style_monet.pth")
    inp = photos(tmp_path / "in", 2)
    with serve_models(served) as (url, log):
        monkeypatch.setenv("CYCLEKIT_PRETRAINED_URL", url)
        for out in ("o1", "o2"):
            args = ["--model", "style_monet", "--device", "cpu", "--no-progress"]
            r = cli("translate", str(inp), "-o", str(tmp_path / out), *args)
            assert r.exit_code == 0, r.output
    assert log == ["/style_monet.pth"] and len(loads) == 1  # downloaded and read once
    first, second = pixels(tmp_path / "o1"), pixels(tmp_path / "o2")
    assert len(first) == 2 and all(np.array_equal(first[k], second[k]) for k in first)


@pytest.mark.skipif(devices.gpu_may_be_present(), reason="this machine may have a GPU")
def test_a_fresh_process_translates_without_importing_torch(tmp_path: Path, gen: Path) -> None:
    inp = photos(tmp_path / "in")
    args = ["translate", str(inp), "--checkpoint", str(gen), "--no-progress"]
    code = (
        "import sys\n"
        "from cyclekit.cli import main\n"
        "try:\n"
        f"    main({[*args, '-o', 'OUT']!r})\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code, 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "CYCLEKIT_CACHE": str(tmp_path / "cache")}
    seen = []
    for out in ("o1", "o2"):
        run = code.replace("OUT", str(tmp_path / out))
        done = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        seen.append(done.stdout.split())
    assert seen == [["exit", "0", "True"], ["exit", "0", "False"]]
    first, second = pixels(tmp_path / "o1"), pixels(tmp_path / "o2")
    assert len(first) == 3 and all(np.array_equal(first[k], second[k]) for k in first)


def test_a_file_replaced_while_it_is_read_or_converted_is_never_indexed_wrongly(
    tmp_path: Path, gen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (A user translating last.pt while training rewrites it.)
    inp = photos(tmp_path / "in", 1)
    opts = TranslateOptions(output_dir=tmp_path / "x", device="cpu")
    old = gen.read_bytes()
    real_convert = backends.make_openvino_runner

    def converting_while_replaced(*args, **kw):
        runner = real_convert(*args, **kw)
        make_generator(gen, seed=1)  # the file changes during the conversion
        return runner

    monkeypatch.setattr(backends, "make_openvino_runner", converting_while_replaced)
    assert translate_with(inp, tmp_path / "o1", gen, "--device", "cpu").exit_code == 0
    monkeypatch.setattr(backends, "make_openvino_runner", real_convert)
    # The new file was never loaded: it is not taken for the old weights' conversion...
    assert isinstance(open_model(gen, None, None, opts)[0], torch.nn.Module)
    # ...while the old bytes, which were, map to their own conversion.
    gen.write_bytes(old)
    assert isinstance(open_model(gen, None, None, opts)[0], DeferredGenerator)

    # Replaced between the hash and the read: the run loaded other bytes than it hashed, so
    # nothing is indexed for either.
    fresh = tmp_path / "G2.pt"
    make_generator(fresh, seed=2)
    real_load = generator_io.load_generator

    def replaced_then_loaded(path, direction=None):
        make_generator(fresh, seed=3)
        return real_load(path, direction)

    monkeypatch.setattr(generator_io, "load_generator", replaced_then_loaded)
    assert translate_with(inp, tmp_path / "o2", fresh, "--device", "cpu").exit_code == 0
    monkeypatch.setattr(generator_io, "load_generator", real_load)
    for seed in (2, 3):
        make_generator(fresh, seed=seed)
        assert isinstance(open_model(fresh, None, None, opts)[0], torch.nn.Module)


def test_a_file_changed_during_a_run_that_then_needs_torch_is_an_error(
    tmp_path: Path, gen: Path
) -> None:
    inp = photos(tmp_path / "in", 1)
    assert translate_with(inp, tmp_path / "o1", gen, "--device", "cpu").exit_code == 0
    opts = TranslateOptions(output_dir=tmp_path / "x", device="cpu")
    model, _ = open_model(gen, None, None, opts)
    assert isinstance(model, DeferredGenerator)
    make_generator(gen, seed=1)
    with pytest.raises(CyclekitError, match="the checkpoint changed during the run"):
        model.load()


def test_an_openvino_that_fails_to_import_falls_back_quietly(
    tmp_path: Path, gen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> Path:
        raise ImportError("libopenvino.so: cannot open shared object file")

    monkeypatch.setattr(backends, "openvino_cache", broken)
    opts = TranslateOptions(output_dir=tmp_path / "x", device="cpu")
    assert isinstance(open_model(gen, None, None, opts)[0], torch.nn.Module)
