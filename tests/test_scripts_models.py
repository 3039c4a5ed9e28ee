"""The measurement scripts of the CUT/FastCUT issue at tiny settings: they run, print one JSON
object with the promised keys and finite numbers, and refuse bad flags in one line.

``scripts/bench_train.py --model`` (step time and memory of cyclegan, cut, fastcut) and
``scripts/compare_models.py`` (PSNR against the synthetic ground truth, equal wall time and
steps to beat doing nothing). One torch thread: on a shared 2-core machine two threads that
wait on each other make every step a hundred times slower.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY_NETS = ["--size", "32", "--ngf", "8", "--ndf", "8", "--threads", "1"]


def _script(name: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "scripts" / name), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _one_error_line(r: subprocess.CompletedProcess, *names: str) -> None:
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, r.stderr
    assert all(n in lines[0] for n in names), lines[0]
    assert r.stdout == ""  # no half a JSON object


def test_bench_train_models_side_by_side():
    # cyclegan is not asked for: it is added as the reference of the ratios.
    r = _script(
        "bench_train.py", "--models", "cut,fastcut", *TINY_NETS, "--iters", "2", "--rounds", "1",
        "--warmup", "1", "--precision", "fp32",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["benchmark"] == "train_step_models"
    assert out["models"] == ["cyclegan", "cut", "fastcut"] and out["precisions"] == ["fp32"]
    machine = out["machine"]
    assert machine["threads"] == 1 and machine["torch"] and machine["cpu"]
    assert isinstance(machine["cpu_bf16"]["native_bf16"], bool)
    assert isinstance(machine["cpu_bf16"]["flags"], list)
    for model, res in out["results"]["fp32"].items():
        assert res["timed_steps"] == 2 and res["losses_finite"], model
        for key in ("seconds_per_step", "pairs_per_s", "peak_rss_mib", "rss_before_model_mib"):
            assert _finite(res[key]) and res[key] > 0, (model, key)
        assert res["peak_rss_mib"] >= res["rss_before_model_mib"]
        assert res["config"]["ngf"] == 8
    # What each model really built: CUT's defaults are the anti-aliased layers, one generator.
    assert out["results"]["fp32"]["cut"]["generator_specs"]["G_ab"]["upsample"] == "antialias"
    assert set(out["results"]["fp32"]["cyclegan"]["generator_specs"]) == {"G_ab", "G_ba"}
    assert set(out["results"]["fp32"]["fastcut"]["params"]) == {"G_ab", "D_b", "F"}
    ratios = out["ratio_to_cyclegan"]["fp32"]
    assert ratios["cyclegan"]["step"] == 1.0 and ratios["cyclegan"]["memory"] == 1.0
    for model, target in (("cut", 0.75), ("fastcut", 0.55)):
        assert _finite(ratios[model]["step"]) and _finite(ratios[model]["memory"])
        assert ratios[model]["step_target"] == target
        assert ratios[model]["meets_step_target"] == (ratios[model]["step"] <= target)
    assert out["warnings"] == []


def test_bench_train_official_comparison_still_works(tmp_path):
    dst = tmp_path / "bench.json"
    r = _script(
        "bench_train.py", *TINY_NETS, "--iters", "1", "--rounds", "1", "--warmup", "0",
        "--precision", "fp32", "--json", str(dst),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert json.loads(dst.read_text()) == out
    assert out["benchmark"] == "train_step"
    assert set(out["seconds_per_iter"]) == {"official_fp32", "cyclekit_fp32"}
    assert all(_finite(v) and v > 0 for v in out["seconds_per_iter"].values())
    assert _finite(out["speedup_vs_official"]["cyclekit_fp32"])
    # The work of a step: one ResNet-6 generator's forward at ngf 8 on 32x32 alone is ~0.1
    # GFLOP; a step (2 G, 2 D, forward and backward) is several times that.
    assert 1e8 < out["flops_per_step"] < 1e11, out["flops_per_step"]
    assert out["bf16_peak_source"] == "not a GPU" and "fraction_of_bf16_peak" not in out


def test_gpu_peak_lookup(monkeypatch):
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("bench_train", REPO / "scripts/bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    spec.loader.exec_module(bench)
    cuda = torch.device("cuda")
    names = {"NVIDIA H200": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA A100-SXM4-80GB": 312e12}
    for name, peak in names.items():
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d, n=name: n)
        assert bench.gpu_bf16_peak(cuda)[0] == peak
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: "Some Future GPU")
    assert bench.gpu_bf16_peak(cuda)[0] is None
    monkeypatch.setenv("CYCLEKIT_GPU_PEAK_TFLOPS", "100")
    assert bench.gpu_bf16_peak(cuda) == (100e12, "CYCLEKIT_GPU_PEAK_TFLOPS")


def test_bench_train_bad_flags_are_one_line():
    _one_error_line(_script("bench_train.py", "--models", "cut,gan"), "--model", "gan")
    # Sampling flags shape the --model networks only; the official comparison is fixed.
    _one_error_line(_script("bench_train.py", "--upsample", "resize-conv"), "--upsample")


def _check_run(run: dict, pair: str, warnings: list[str]) -> None:
    assert _finite(run["psnr"]) and _finite(run["gain_over_identity"])
    assert run["steps"] == 2 and run["stopped_by"] == "max_steps"
    assert _finite(run["seconds_per_step"]) and run["seconds_per_step"] > 0
    assert run["final_losses"] and all(_finite(v) for v in run["final_losses"].values())
    asked = pair.split("/")[1]
    # Either the generator was built as asked, or the run says loudly that it was not.
    assert (run["generator"]["upsample"] == asked) == run["generator"]["as_asked"]
    if not run["generator"]["as_asked"]:
        assert any(w.startswith(pair + ":") for w in warnings)


def test_compare_models_equal_time_tiny(tmp_path):
    keep = tmp_path / "kept"
    pairs = ["cyclegan/transpose", "cyclegan/resize-conv", "fastcut/antialias"]
    r = _script(
        "compare_models.py", "--preset", "tiny", "--task", "day2night", "--max-steps", "2",
        "--minutes", "5", "--threads", "1", "--seed", "3", "--keep", str(keep),
        *[a for p in pairs for a in ("--pair", p)],
    )  # fmt: skip
    out = json.loads(r.stdout)
    # Exit 1 exactly when some numbers are not what was asked (the JSON is printed anyway).
    assert r.returncode == (1 if out["warnings"] else 0), r.stderr
    assert all(f"Error: {w}" in r.stderr for w in out["warnings"])
    assert out["benchmark"] == "equal_time" and out["pairs"] == pairs and out["seed"] == 3
    assert out["precision"] in ("fp32", "bf16") and out["precision_choice"]
    assert out["recipe"]["netG"] == "resnet_6blocks" and out["recipe"]["image_size"] == 32
    task = out["tasks"]["day2night"]
    assert _finite(task["identity_psnr"]) and _finite(task["mean_trainB_psnr"])
    assert list(task["runs"]) == pairs
    for pair, run in task["runs"].items():
        _check_run(run, pair, out["warnings"])
        assert math.isclose(
            run["gain_over_identity"], run["psnr"] - task["identity_psnr"], abs_tol=2e-3
        )
    assert task["runs"]["fastcut/antialias"]["generator"]["as_asked"]
    # --keep: the translations with the inputs and truths, and a page showing them side by side.
    page = (keep / "day2night" / "index.html").read_text()
    assert page.count("<img ") == 6 * (2 + len(pairs))  # 6 test images of the tiny preset
    assert len(list((keep / "day2night" / "fastcut_antialias").glob("*.png"))) == 6


def test_compare_models_steps_to_beat_identity_tiny():
    r = _script(
        "compare_models.py", "--preset", "tiny", "--steps-to-beat-identity", "--every", "2",
        "--max-steps", "4", "--full-curve", "--threads", "1", "--pair", "cut/antialias",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["benchmark"] == "steps_to_beat_identity"
    by_task = out["identity_psnr_by_task"]
    assert set(by_task) >= {"day2night", "summer2winter", "photo2poster"}
    # Without --task, the mildest task: the one where doing nothing scores best.
    assert out["task"] == max(by_task, key=by_task.get)
    assert out["task_is_mild"] == (out["identity_psnr"] >= out["mild_threshold_db"])
    run = out["runs"]["cut/antialias"]
    assert [p["step"] for p in run["curve"]] == [2, 4]  # resumed to each evaluation
    assert all(_finite(p["psnr"]) and _finite(p["train_seconds"]) for p in run["curve"])
    first = run["first_step_beating_identity"]
    beaten = [p["step"] for p in run["curve"] if p["psnr"] > out["identity_psnr"]]
    assert first == (beaten[0] if beaten else None)
    assert run["generator"]["as_asked"] and out["warnings"] == []


def test_compare_models_bad_flags_are_one_line(tmp_path):
    _one_error_line(_script("compare_models.py", "--pair", "gan/transpose"), "--pair", "gan")
    _one_error_line(
        _script("compare_models.py", "--pair", "cut/sideways", "--preset", "tiny"),
        "--upsample",
        "sideways",
    )
    # --keep never writes into a folder that holds something.
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    before = hashlib.sha256((keep / "notes.txt").read_bytes()).hexdigest()
    _one_error_line(_script("compare_models.py", "--keep", str(keep)), "--keep", str(keep))
    assert hashlib.sha256((keep / "notes.txt").read_bytes()).hexdigest() == before
    assert [p.name for p in keep.iterdir()] == ["notes.txt"]


def test_bench_train_compiles_cold_unless_a_cache_is_chosen(monkeypatch, tmp_path):
    # A warm torch compile cache once made the benchmark report a 10 s compile (break-even
    # 45 steps) where the first run on the machine took 130 s (~410 steps).
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location("bench_train", REPO / "scripts/bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    spec.loader.exec_module(bench)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/torch/wrote")
    said = bench.use_cold_compile_cache(None)
    fresh = os.environ["TORCHINDUCTOR_CACHE_DIR"]
    assert said.startswith("cold") and fresh != "/somewhere/torch/wrote"
    assert Path(fresh).is_dir() and not any(Path(fresh).iterdir())
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    assert bench.use_cold_compile_cache(str(tmp_path)) == f"TORCHINDUCTOR_CACHE_DIR={tmp_path}"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path)
