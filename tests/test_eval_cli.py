"""``cyclekit eval`` end to end on tiny folders, with the weight-free stand-in feature network
(the FID Inception network's own tests are in test_eval_features.py): the table, the JSON and
its protocol, one-sided checkpoints, and one-line errors for bad inputs, touching no input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from cyclekit.cli import main
from cyclekit.evaluate import features
from cyclekit.files import FORMAT_VERSION, atomic_save
from cyclekit.models import build_generator
from tests.test_translate_common import (
    make_generator,
    make_official,
    make_train_checkpoint,
    tiny_spec,
    tree_hashes,
)

SIZE = ["--size", "32", "--no-progress", "--device", "cpu"]
REAL_LOAD_INCEPTION = features.load_inception


@pytest.fixture(autouse=True)
def stand_in_features(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No test here may reach the network or the real 96 MB weights: the stand-in replaces the
    # Inception network, and any download that slipped through would go nowhere.
    monkeypatch.setattr(features, "load_inception", lambda *a, **k: features.PixelStatsExtractor())
    monkeypatch.setenv("CYCLEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(features.URL_ENV, "http://127.0.0.1:9/none.pth")


def make_data(root: Path, n_a: int = 4, n_b: int = 5) -> Path:
    """root/testA (dark-ish) and root/testB (bright-ish), small images of two sizes."""
    rng = np.random.default_rng(0)
    for sub, n, lo, hi in (("testA", n_a, 0, 150), ("testB", n_b, 100, 256)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = (40, 48) if i % 2 else (36, 36)
            Image.fromarray(rng.integers(lo, hi, (h, w, 3), dtype=np.uint8)).save(
                root / sub / f"img_{i}.png"
            )
    return root


def make_cut_checkpoint(path: Path) -> Path:
    """A one-sided (CUT) training checkpoint: only G_ab."""
    torch.manual_seed(0)
    spec = tiny_spec()
    payload = {
        "format": "cyclekit-train",
        "format_version": FORMAT_VERSION,
        "specs": {"G_ab": spec},
        "models": {"G_ab": build_generator(**spec).state_dict()},
        "config": {"model": "cut"},
    }
    return atomic_save(payload, path)


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, ["eval", *args])


def one_line_error(r: Result, *names: str) -> str:
    assert r.exit_code != 0, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    # Exactly one Error: line (click's own usage errors add a "Usage:" hint before it).
    lines = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, r.output
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def test_checkpoint_both_directions_table_and_json(tmp_path):
    data = make_data(tmp_path / "data")
    ckpt = make_train_checkpoint(tmp_path / "last.pt")
    before = tree_hashes(tmp_path)
    out = tmp_path / "report.json"
    r = cli("--checkpoint", str(ckpt), "--data", str(data), "--json", str(out), *SIZE)
    assert r.exit_code == 0, r.output
    assert "a2b translated" in r.output and "b2a translated" in r.output
    assert r.output.count("doing nothing") == 2 and "trust KID" in r.output
    after = tree_hashes(tmp_path)
    assert after.pop("report.json") and after == before  # inputs untouched, nothing else new
    report = json.loads(out.read_text())
    proto = report["protocol"]
    for key in ("feature_extractor", "weights_sha256", "size", "resize", "kid", "structure"):
        assert key in proto
    assert proto["size"] == [32, 32] and proto["device"] == "cpu"
    a2b = report["results"]["a2b"]
    assert (a2b["input_images"], a2b["target_images"]) == (4, 5)
    assert report["results"]["b2a"]["input_images"] == 5
    for r_ in (a2b, a2b["doing_nothing"], report["results"]["b2a"]):
        assert all(np.isfinite(r_[k]) for k in ("fid", "kid_mean", "kid_std"))
    assert -1 <= a2b["ssim_mean"] <= 1 and a2b["doing_nothing"]["ssim_mean"] == 1.0
    assert a2b["kid_subset_size"] == 2  # half of the 4 inputs
    # The same --json again replaces the earlier report (a file eval wrote).
    r = cli("--checkpoint", str(ckpt), "--data", str(data), "--json", str(out), *SIZE)
    assert r.exit_code == 0, r.output


def test_a_training_checkpoint_is_read_once_for_both_directions(tmp_path, monkeypatch):
    # It holds optimisers and discriminators too; eval once read it three times.
    from cyclekit import generator_io
    from cyclekit.evaluate.run import load_generators

    ckpt = make_train_checkpoint(tmp_path / "last.pt")
    reads = []
    real = generator_io.safe_load
    monkeypatch.setattr(generator_io, "safe_load", lambda p: reads.append(p) or real(p))
    loaded, missing = load_generators(ckpt, "both")
    assert set(loaded) == {"a2b", "b2a"} and not missing and reads == [ckpt]
    for d, (model, info) in loaded.items():
        assert info["direction"] == d and not model.training


def test_doing_nothing_is_the_score_of_the_inputs_as_fakes(tmp_path):
    # The baseline row of a2b must be exactly what scoring testA as fakes of B gives.
    data = make_data(tmp_path / "data")
    ckpt = make_train_checkpoint(tmp_path / "last.pt")
    j1, j2 = tmp_path / "a.json", tmp_path / "b.json"
    args = ["--checkpoint", str(ckpt), "--data", str(data), "--direction", "A2B"]
    r = cli(*args, "--json", str(j1), *SIZE)
    assert r.exit_code == 0, r.output
    r = cli("--fake", str(data / "testA"), "--real", str(data / "testB"), "--json", str(j2), *SIZE)
    assert r.exit_code == 0, r.output
    nothing = json.loads(j1.read_text())["results"]["a2b"]["doing_nothing"]
    folders = json.loads(j2.read_text())["results"]["fake_vs_real"]
    for key in ("fid", "kid_mean", "kid_std"):
        assert nothing[key] == pytest.approx(folders[key], rel=1e-9, abs=1e-12)
    assert "b2a" not in json.loads(j1.read_text())["results"]


def test_two_folders_score_near_zero_against_themselves(tmp_path):
    data = make_data(tmp_path / "data", n_b=6)
    out = tmp_path / "r.json"
    r = cli("--fake", str(data / "testB"), "--real", str(data / "testB"), "--json", str(out), *SIZE)
    assert r.exit_code == 0, r.output
    assert any(
        line.startswith("fake vs real") and "6 / 6" in line for line in r.output.splitlines()
    )
    result = json.loads(out.read_text())["results"]["fake_vs_real"]
    assert result["fid"] == pytest.approx(0.0, abs=1e-9)
    assert abs(result["kid_mean"]) < 3 * result["kid_std"]  # unbiased: around 0


def test_one_sided_checkpoint_both_scores_a2b_and_says_b2a_is_unavailable(tmp_path):
    data = make_data(tmp_path / "data")
    ckpt = make_cut_checkpoint(tmp_path / "cut.pt")
    out = tmp_path / "r.json"
    r = cli("--checkpoint", str(ckpt), "--data", str(data), "--json", str(out), *SIZE)
    assert r.exit_code == 0, r.output
    assert "a2b translated" in r.output
    assert "b2a" in r.output and "unavailable" in r.output and "cut" in r.output
    b2a = json.loads(out.read_text())["results"]["b2a"]
    assert b2a["available"] is False and "A to B only" in b2a["reason"]
    # Asking for b2a by name is an error, not a silent a2b.
    r = cli("--checkpoint", str(ckpt), "--data", str(data), "--direction", "b2a", *SIZE)
    one_line_error(r, str(ckpt))


def test_exported_and_official_generators(tmp_path):
    data = make_data(tmp_path / "data")
    g_ab = make_generator(tmp_path / "G_ab.pt")
    r = cli("--checkpoint", str(g_ab), "--data", str(data), *SIZE)
    assert r.exit_code == 0, r.output
    assert "a2b translated" in r.output and "holds only the a2b generator" in r.output
    one_line_error(cli("--checkpoint", str(g_ab), "--data", str(data), "--direction", "b2a", *SIZE))
    official = make_official(tmp_path / "latest_net_G.pth")
    r = cli("--checkpoint", str(official), "--data", str(data), *SIZE)
    one_line_error(r, "--direction", str(official))
    r = cli("--checkpoint", str(official), "--data", str(data), "--direction", "b2a", *SIZE)
    assert r.exit_code == 0, r.output
    assert "b2a translated" in r.output and "a2b" not in r.output


def test_bad_inputs_are_one_line_errors_and_touch_nothing(tmp_path):
    data = make_data(tmp_path / "data")
    ckpt = make_train_checkpoint(tmp_path / "last.pt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "single").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "single" / "x.png")
    broken = tmp_path / "broken"
    make_data(broken)
    (broken / "testB" / "img_1.png").write_bytes(b"not a png at all")
    named_json = tmp_path / "ckpt.json"  # a checkpoint under an odd name is still an input
    named_json.write_bytes(ckpt.read_bytes())
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    before = tree_hashes(tmp_path)
    ck = ["--checkpoint", str(ckpt)]
    cases = [
        (ck + ["--data", str(tmp_path / "nowhere")], ["--data", "nowhere"]),
        (ck + ["--data", str(tmp_path / "empty")], ["--data", "testA"]),
        (ck + ["--real-a", str(tmp_path / "empty"), "--real-b", str(data / "testB")],
         ["--real-a", "empty"]),
        (ck + ["--real-a", str(tmp_path / "single"), "--real-b", str(data / "testB")],
         ["--real-a", "only one image"]),
        (ck + ["--data", str(broken)], ["img_1.png"]),
        (ck, ["--data"]),
        (["--data", str(data)], ["--checkpoint"]),
        (["--checkpoint", str(tmp_path / "missing.pt"), "--data", str(data)], ["missing.pt"]),
        (["--checkpoint", str(data / "testA" / "img_0.png"), "--data", str(data)], ["img_0.png"]),
        (["--fake", str(data / "testA")], ["--real"]),
        (["--fake", str(data / "testA"), "--real", str(data / "testB")] + ck, ["--checkpoint"]),
        (["--fake", str(data / "testA"), "--real", str(data / "testB"), "--direction", "a2b"],
         ["--direction"]),
        (ck + ["--data", str(data), "--json", str(notes)], ["--json", "notes.json"]),
        (ck + ["--data", str(data), "--json", str(ckpt)], ["--json"]),
        (["--checkpoint", str(named_json), "--data", str(data), "--json", str(named_json)],
         ["--json", "is also an input"]),
        (ck + ["--data", str(data), "--json", str(data)], ["--json"]),
    ]  # fmt: skip
    for args, names in cases:
        one_line_error(cli(*args, *SIZE), *names)
    assert tree_hashes(tmp_path) == before


def test_offline_without_weights_is_one_line_naming_file_url_and_path(tmp_path, monkeypatch):
    # The real default path (no stand-in): the weights are missing and cannot be downloaded.
    from tests.test_eval_features import closed_port_url

    monkeypatch.setattr(features, "load_inception", REAL_LOAD_INCEPTION)
    cache = tmp_path / "cache"
    url = closed_port_url()
    monkeypatch.setenv("CYCLEKIT_CACHE", str(cache))
    monkeypatch.setenv(features.URL_ENV, url)
    data = make_data(tmp_path / "data")
    ckpt = make_train_checkpoint(tmp_path / "last.pt")
    r = cli("--checkpoint", str(ckpt), "--data", str(data), *SIZE)
    expected_path = cache / "inception" / features.INCEPTION_FILE
    one_line_error(r, features.INCEPTION_FILE, url, str(expected_path))


def test_cli_constants_match_the_library():
    from cyclekit.cli import eval as cli_eval
    from cyclekit.evaluate import metrics, run

    assert cli_eval.DEFAULT_SIZE == run.DEFAULT_SIZE
    assert cli_eval.MIN_SIZE == run.MIN_SIZE
    assert cli_eval.KID_SUBSETS == metrics.KID_SUBSETS


def test_help_says_which_number_to_trust():
    r = CliRunner().invoke(main, ["eval", "--help"])
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    assert "KID is the one to trust" in text and "--fake" in text


def test_in_memory_scores_equal_the_command_s(tmp_path):
    # score_translations is what training-time evaluation calls; it must give eval's numbers.
    from cyclekit.evaluate import run
    from cyclekit.generator_io import load_generator

    data = make_data(tmp_path / "data")
    ckpt = make_train_checkpoint(tmp_path / "last.pt")
    out = tmp_path / "r.json"
    r = cli(
        "--checkpoint",
        str(ckpt),
        "--data",
        str(data),
        "--direction",
        "b2a",
        "--json",
        str(out),
        *SIZE,
    )
    assert r.exit_code == 0, r.output
    expected = json.loads(out.read_text())["results"]["b2a"]
    model, info = load_generator(ckpt, "b2a")
    translate = run.Translator(model, info["spec"], torch.device("cpu"), "fp32")
    inputs, reals = (
        np.stack([run.load_resized(p, 32) for p in run.scan_folder(data / sub, "--data")])
        for sub in ("testB", "testA")
    )
    extractor = features.PixelStatsExtractor()
    got = run.score_translations(inputs, translate(inputs), extractor(reals), extractor)
    for key in ("fid", "kid_mean", "kid_std", "ssim_mean", "ssim_std"):
        assert got[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
    assert got["doing_nothing"]["fid"] == pytest.approx(expected["doing_nothing"]["fid"])


def test_the_command_is_listed_and_its_module_loads_no_torch():
    import subprocess
    import sys

    top = CliRunner().invoke(main, ["--help"])
    assert top.exit_code == 0 and "eval" in top.output
    code = (
        "import sys, cyclekit.cli.eval;"
        "print(','.join(m for m in ('torch', 'numpy', 'torch_fidelity') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


README_COMMANDS = [
    "cyclekit eval --checkpoint checkpoints/h2z/last.pt --data datasets/horse2zebra "
    "--json h2z-eval.json",
    "cyclekit eval --fake results/horse2zebra/ --real datasets/horse2zebra/testB",
]


def test_readme_commands(tmp_path, monkeypatch):
    # The README's own lines, on tiny stand-ins for its folders (the stand-in features; --size
    # 32 keeps it fast: the protocol is recorded, so the rest of the line is unchanged).
    monkeypatch.chdir(tmp_path)
    data = make_data(tmp_path / "datasets" / "horse2zebra")
    make_train_checkpoint(Path("checkpoints/h2z/last.pt").resolve())
    results = tmp_path / "results" / "horse2zebra"
    results.mkdir(parents=True)
    for f in (data / "testA").iterdir():
        (results / f.name).write_bytes(f.read_bytes())
    for cmd in README_COMMANDS:
        r = cli(*cmd.split()[2:], *SIZE)
        assert r.exit_code == 0, f"{cmd}\n{r.output}"
        assert "KID" in r.output
    assert json.loads(Path("h2z-eval.json").read_text())["results"]["a2b"]["input_images"] == 4
