"""``cyclekit train --eval-every``: FID/KID on fixed test images during training, best.pt,
resume, and that evaluating never changes what training computes. The weight-free stand-in
replaces the Inception network (no test may reach the network or need the real weights)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cyclekit.cli import main
from cyclekit.evaluate import EvalError, features
from cyclekit.evaluate.run import EvalSettings, evaluate_checkpoint, score_translations
from cyclekit.files import safe_load
from cyclekit.generator_io import load_generator
from cyclekit.training import evaluation
from cyclekit.training import run as run_module
from cyclekit.training.config import ConfigError, TrainConfig
from cyclekit.training.loop import train
from tests.helpers import TINY_TRAIN_FLAGS, make_image_tree, tiny_config

REAL_LOAD_INCEPTION = features.load_inception  # before the fixture replaces it


@pytest.fixture(autouse=True)
def stand_in_features(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(features, "load_inception", lambda *a, **k: features.PixelStatsExtractor())
    monkeypatch.setenv("CYCLEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(features.URL_ENV, "http://127.0.0.1:9/none.pth")


class Recorder:
    """A tracker that keeps every record (what W&B would receive)."""

    run_id = None

    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []
        self.alerts: list[tuple[str, str]] = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.records.append((step, dict(metrics)))

    def log_images(self, images: Any, step: int) -> None:
        pass

    def alert(self, title: str, text: str, every_s: float) -> None:
        self.alerts.append((title, text))

    def finish(self) -> None:
        pass

    def values(self, key: str) -> list[tuple[int, float]]:
        return [(s, r[key]) for s, r in self.records if key in r]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(run_module, "start_tracker", lambda *a, **k: rec)
    return rec


def eval_data(root: Path, n_test: int = 5) -> Path:
    """The helpers' tiny tree with ``n_test`` test images per domain (sizes vary)."""
    data = make_image_tree(root)
    rng = np.random.default_rng(3)
    for sub, lo, hi in (("testA", 0, 150), ("testB", 100, 256)):
        for i in range(1, n_test):
            h, w = (40, 48) if i % 2 else (36, 36)
            arr = rng.integers(lo, hi, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(data / sub / f"t{i}.png")
    return data


def models_of(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    return safe_load(path)["models"]


def assert_same_weights(a: Path, b: Path) -> None:
    ma, mb = models_of(a), models_of(b)
    assert ma.keys() == mb.keys()
    for name, sd in ma.items():
        for k, v in sd.items():
            assert torch.equal(v, mb[name][k]), (name, k)


def test_default_is_off_on_cpu_and_every_10_epochs_on_cuda():
    assert evaluation.resolve_every(None, torch.device("cpu")) == 0
    assert evaluation.resolve_every(None, torch.device("cuda")) == evaluation.DEFAULT_EVERY_CUDA
    assert evaluation.resolve_every(0, torch.device("cuda")) == 0
    assert evaluation.resolve_every(3, torch.device("cpu")) == 3
    with pytest.raises(ConfigError, match="--eval-every must be >= 0"):
        TrainConfig(data="d", eval_every=-1)
    with pytest.raises(ConfigError, match="--eval-images must be >= 2"):
        TrainConfig(data="d", eval_images=1)
    with pytest.raises(ConfigError, match="--eval-metric 'psnr'"):
        TrainConfig(data="d", eval_metric="psnr")


def test_eval_logs_every_epoch_keeps_best_pt_and_matches_cyclekit_eval(tmp_path, recorder, capsys):
    data = eval_data(tmp_path / "data")
    cfg = tiny_config(data, tmp_path / "ck", eval_every=1, epochs=1, epochs_decay=1)
    res = train(cfg, progress=False)
    err = capsys.readouterr().err
    assert err.count("eval at epoch") == 2 and "5 A / 5 B test images" in err
    steps = [s for s, _ in recorder.values("eval/a2b/kid")]
    assert steps == [5, 10] and [s for s, _ in recorder.values("eval/b2a/fid")] == steps
    for key in ("kid_std", "ssim", "nothing_kid", "nothing_fid"):
        assert len(recorder.values(f"eval/a2b/{key}")) == 2
    scores = dict(recorder.values("eval/score"))
    best_step = min(scores, key=scores.get)
    best = safe_load(res.run_dir / "best.pt")
    assert best["best"]["step"] == best_step and best["best"]["metric"] == "kid"
    assert best["best"]["value"] == scores[best_step] and set(best["models"]) == {"G_ab", "G_ba"}
    assert safe_load(res.run_dir / "last.pt")["best"] == best["best"]  # resume keeps it
    # best.pt is what translate and eval read, and scores as the run logged it.
    g, info = load_generator(res.run_dir / "best.pt", "b2a")
    assert info["direction"] == "b2a"
    report = evaluate_checkpoint(
        res.run_dir / "best.pt", (data / "testA", "--data"), (data / "testB", "--data"),
        settings=EvalSettings(device="cpu", progress=False),
        extractor=features.PixelStatsExtractor(),
    )  # fmt: skip
    logged = {s: r for s, r in recorder.records if "eval/score" in r}[best_step]
    for d in ("a2b", "b2a"):
        r = report["results"][d]
        assert r["kid_mean"] == pytest.approx(logged[f"eval/{d}/kid"], rel=1e-9, abs=1e-12)
        assert r["fid"] == pytest.approx(logged[f"eval/{d}/fid"], rel=1e-9, abs=1e-12)
        assert r["ssim_mean"] == pytest.approx(logged[f"eval/{d}/ssim"], rel=1e-9)
        assert r["doing_nothing"]["kid_mean"] == pytest.approx(logged[f"eval/{d}/nothing_kid"])


def test_direction_scores_equal_score_translations():
    # The training-time shortcut (real features and doing nothing computed once) must give
    # exactly what `cyclekit eval`'s in-memory function gives.
    from cyclekit.evaluate.metrics import feature_stats

    rng = np.random.default_rng(0)
    ext = features.PixelStatsExtractor()
    inputs = rng.integers(0, 200, (6, 32, 32, 3), dtype=np.uint8)
    fakes = rng.integers(50, 256, (6, 32, 32, 3), dtype=np.uint8)
    reals = features.extract(rng.integers(80, 256, (7, 32, 32, 3), dtype=np.uint8), ext)
    stats = feature_stats(reals)
    nothing = evaluation._nothing_scores(features.extract(inputs, ext), reals, stats, 100)
    held = evaluation.HeldOut(inputs, reals, stats, nothing)
    fake_features = features.extract(fakes, ext)
    assert evaluation.direction_scores(held, fakes, fake_features, 100) == score_translations(
        inputs, fakes, reals, ext, kid_subsets=100, batch_size=4
    )


def test_eval_never_changes_training_and_resume_stays_bit_exact(tmp_path, recorder):
    # 5 A / 4 B images, batch 2: 3 steps an epoch; dropout draws from the global RNG.
    data = eval_data(tmp_path / "data", n_test=3)
    common = dict(batch_size=2, dropout=True, pool_size=2, epochs=2, epochs_decay=1)
    off = train(tiny_config(data, tmp_path / "ck", name="off", **common), progress=False)
    on = train(
        tiny_config(data, tmp_path / "ck", name="on", eval_every=1, **common), progress=False
    )
    assert_same_weights(off.run_dir / "last.pt", on.run_dir / "last.pt")
    assert len(recorder.values("eval/score")) == 3
    split = tiny_config(data, tmp_path / "ck", name="split", eval_every=1, max_steps=4, **common)
    first = train(split, progress=False)
    assert first.step == 4 and safe_load(first.run_dir / "last.pt")["best"]["step"] == 3
    second = train(
        dataclasses.replace(split, max_steps=None), resume="auto", explicit=set(), progress=False
    )
    assert second.finished
    assert_same_weights(on.run_dir / "last.pt", second.run_dir / "last.pt")
    full, resumed = safe_load(on.run_dir / "last.pt"), safe_load(second.run_dir / "last.pt")
    assert full["best"] == resumed["best"]  # the best so far survived the resume
    assert_same_weights(on.run_dir / "best.pt", second.run_dir / "best.pt")


def test_resume_with_another_metric_chooses_best_afresh(tmp_path, capsys):
    data = eval_data(tmp_path / "data", n_test=3)
    cfg = tiny_config(data, tmp_path / "ck", eval_every=1, epochs=1, epochs_decay=1, max_steps=5)
    train(cfg, progress=False)
    assert safe_load(cfg.run_dir / "last.pt")["best"]["metric"] == "kid"
    capsys.readouterr()
    train(
        dataclasses.replace(cfg, max_steps=None, eval_metric="fid"),
        resume="auto", explicit={"eval_metric"}, progress=False,
    )  # fmt: skip
    assert "not comparable" in capsys.readouterr().err
    best = safe_load(cfg.run_dir / "last.pt")["best"]
    assert best["metric"] == "fid" and best["step"] == 10


def test_one_sided_models_evaluate_a2b_only(tmp_path, recorder):
    data = eval_data(tmp_path / "data", n_test=3)
    cfg = tiny_config(
        data, tmp_path / "ck", model="cut", name="cut", nce_layers="0,4,8", num_patches=32,
        eval_every=1, epochs=1, epochs_decay=0,
    )  # fmt: skip
    res = train(cfg, progress=False)
    assert recorder.values("eval/a2b/kid") and not recorder.values("eval/b2a/kid")
    assert set(safe_load(res.run_dir / "best.pt")["models"]) == {"G_ab"}
    _, info = load_generator(res.run_dir / "best.pt")  # one-sided: no --direction needed
    assert info["direction"] == "a2b"


def test_missing_inception_weights_fail_at_the_start_when_eval_is_asked(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(features, "load_inception", REAL_LOAD_INCEPTION)  # offline: no server
    data = eval_data(tmp_path / "data", n_test=3)
    cfg = tiny_config(data, tmp_path / "ck", eval_every=1)
    t0 = time.monotonic()
    with pytest.raises(EvalError, match="cannot download the FID Inception weights") as e:
        train(cfg, progress=False)
    assert time.monotonic() - t0 < 30 and "\n" not in str(e.value)
    assert str(tmp_path / "cache") in str(e.value)  # where to put the file by hand
    assert not cfg.run_dir.exists()  # nothing written, no step run
    # The default (here: as on CUDA) only warns and trains without evaluation.
    monkeypatch.setattr(evaluation, "resolve_every", lambda value, device: 10)
    res = train(dataclasses.replace(cfg, eval_every=None, max_steps=2), progress=False)
    assert res.step == 2 and not (res.run_dir / "best.pt").exists()
    assert "evaluation during training is off (cannot download" in capsys.readouterr().err


def test_eval_needs_a_test_split(tmp_path, monkeypatch, capsys):
    data = make_image_tree(tmp_path / "data")  # one test image per domain
    cfg = tiny_config(data, tmp_path / "ck", eval_every=1)
    with pytest.raises(ConfigError, match=r"--eval-every: .*testA has 1 image\(s\); FID and KID"):
        train(cfg, progress=False)
    flat = dataclasses.replace(
        cfg, data=None, data_a=str(data / "trainA"), data_b=str(data / "trainB")
    )
    with pytest.raises(ConfigError, match="--data-a/--data-b have no test split"):
        train(flat, progress=False)
    assert not cfg.run_dir.exists()


def test_cli_flags_and_an_old_checkpoint_resumes(tmp_path):
    data = eval_data(tmp_path / "data", n_test=3)
    ck = tmp_path / "ck"
    args = ["train", "--data", str(data), "--checkpoints-dir", str(ck), *TINY_TRAIN_FLAGS]
    args += ["--epochs", "1", "--epochs-decay", "0", "--wandb-mode", "disabled"]
    r = CliRunner().invoke(main, [*args, "--eval-every", "1", "--eval-images", "2",
                                  "--eval-metric", "FID"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "eval at epoch 1" in r.output and "2 A / 2 B test images" in r.output
    assert safe_load(ck / "cyclegan" / "best.pt")["best"]["metric"] == "fid"
    r = CliRunner().invoke(main, [*args, "--name", "x", "--eval-every", "-1"])
    assert r.exit_code == 1 and r.output.startswith("Error: --eval-every must be >= 0")
    # A last.pt saved before these settings existed resumes (they take their defaults).
    last = ck / "cyclegan" / "last.pt"
    state = safe_load(last)
    for key in ("eval_every", "eval_images", "eval_metric", "stop_on_alarm"):
        del state["config"][key]
    del state["best"]
    torch.save(state, last)
    resume = ["--name", "cyclegan", "--checkpoints-dir", str(ck), "--resume", "auto"]
    r = CliRunner().invoke(main, ["train", *resume, "--epochs", "2", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert not (r.exception and not isinstance(r.exception, SystemExit))


LAUNCH = """
import os, sys
import torch
from cyclekit.evaluate import features
from cyclekit.training import model as registry
from cyclekit.training.cyclegan import build_cyclegan

features.load_inception = lambda *a, **k: features.PixelStatsExtractor()
if os.environ.get("INVERT_G_AB"):
    def build(cfg, device, rank):
        m = build_cyclegan(cfg, device, rank)
        m.G_ab.forward = lambda x: -x
        return m
    registry.BUILDERS["cyclegan"] = build
from cyclekit.cli import main
main(sys.argv[1:], prog_name="cyclekit")
"""


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)
def test_two_processes_evaluate_on_rank_0_and_stop_together_on_an_alarm(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    data = eval_data(tmp_path / "data", n_test=3)
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH)
    ck = tmp_path / "ck"

    def torchrun(*extra: str, invert: bool = False) -> subprocess.CompletedProcess:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
               "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
               str(port), str(script), "train", "--data", str(data), "--name", "ddp",
               "--checkpoints-dir", str(ck), *TINY_TRAIN_FLAGS, "--wandb-mode", "disabled",
               "--log-every", "1", *extra]  # fmt: skip
        env = dict(os.environ, INVERT_G_AB="1" if invert else "")
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)

    out = torchrun("--eval-every", "1", "--max-steps", "6")  # 5 A / 4 B: 3 steps an epoch
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert log.count("eval at epoch") == 2 and "weights identical on all 2 ranks: yes" in log
    assert safe_load(ck / "ddp" / "best.pt")["best"]["step"] in (3, 6)
    out = torchrun("--resume", "auto", "--max-steps", "12", "--sample-every", "1",
                   "--stop-on-alarm", invert=True)  # fmt: skip
    log = out.stdout + out.stderr
    assert out.returncode != 0 and "stopped at step 8 by --stop-on-alarm: a2b translations" in log
    assert safe_load(ck / "ddp" / "last.pt")["step"] == 8  # saved, both ranks left together
