#!/usr/bin/env python
"""Seconds per training step, timed side by side in one run. Prints one JSON object.

Two comparisons:

* Without ``--model``: cyclekit's CycleGAN step vs the official step. The "official" side is a
  plain fp32 eager re-implementation of the official ``CycleGANModel.optimize_parameters``
  written here (GANLoss with target tensors, separate backward passes for each discriminator, a
  pool driven by Python's ``random``), on the same networks. Both sides are timed in
  alternating rounds so machine noise hits them alike.

* With ``--model``/``--models``: cyclegan, cut and fastcut (cyclekit's own steps) at the same
  network size, input size and precision. Each model runs in a fresh process per round (so its
  peak memory is its own: RSS on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA), the
  order rotating between rounds; seconds per step are the median of every timed step after
  the warm-up. Ratios are to cyclegan measured in the same run (added as the reference when it
  is not asked for). Without ``--precision`` the fastest one is used: bf16 on CUDA and on CPUs
  with native bf16 (AVX-512 BF16 or AMX), fp32 on other CPUs; the JSON says which and why.

    python scripts/bench_train.py --size 128 --batch-size 1 --iters 5
    python scripts/bench_train.py --size 32 --ngf 8 --iters 2 --precision fp32 bf16   # quick
    python scripts/bench_train.py --models cyclegan,cut,fastcut --size 128 --iters 5
    python scripts/bench_train.py --models cyclegan,cut,fastcut --size 32 --ngf 8 --iters 2
    python scripts/bench_train.py --models cut,fastcut --rounds 3 --quiet-load 1.5 --interleave 6

On a machine shared with other work, wall time per step is at the mercy of the other
processes (two OpenMP threads on two busy cores can take 20x longer): the JSON gives each
side's fastest step and CPU time per step too, the ratios from all three, and the 1-minute
load average at each side's start. ``--interleave CYCLES`` adds a timing of all models in one
process, one step of each in turn: the median of the per-cycle ratios is the figure that
holds up best on a busy machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cyclekit.devices import autocast, cpu_flags, resolve_device, resolve_precision
from cyclekit.errors import CyclekitError, UsageError
from cyclekit.files import atomic_write
from cyclekit.training.compiling import choose_compile
from cyclekit.training.config import MODELS, TrainConfig
from cyclekit.training.cyclegan import build_cyclegan, train_step

REFERENCE = "cyclegan"
# The targets: a model's step time as a fraction of CycleGAN's at the same settings.
TARGET_STEP_RATIO = {"cut": 0.75, "fastcut": 0.55}
# /proc/cpuinfo flags worth recording: what decides whether bf16 runs natively.
CPU_FLAG_WORDS = ("bf16", "amx", "avx512f", "avx512_fp16", "avx2")
# Read before anything runs: torch writes its default into the environment once it first
# looks the cache up.
USER_INDUCTOR_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")


class OfficialStep:
    """The official update, transcribed: same networks, official bookkeeping."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        m = build_cyclegan(cfg, device)
        self.G_A, self.G_B, self.D_A, self.D_B = m.G_ab, m.G_ba, m.D_b, m.D_a  # official naming
        self.opt_G = torch.optim.Adam(
            itertools.chain(self.G_A.parameters(), self.G_B.parameters()),
            lr=cfg.lr,
            betas=(0.5, 0.999),
        )
        self.opt_D = torch.optim.Adam(
            itertools.chain(self.D_A.parameters(), self.D_B.parameters()),
            lr=cfg.lr,
            betas=(0.5, 0.999),
        )
        self.pools: dict[str, list[torch.Tensor]] = {"A": [], "B": []}
        self.cfg = cfg

    def gan_loss(self, pred: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.tensor(1.0 if real else 0.0, device=pred.device).expand_as(pred)
        return F.mse_loss(pred, target)

    def query(self, key: str, images: torch.Tensor) -> torch.Tensor:
        pool, out = self.pools[key], []
        for image in images:
            image = image.data.unsqueeze(0)
            if len(pool) < self.cfg.pool_size:
                pool.append(image)
                out.append(image)
            elif random.uniform(0, 1) > 0.5:
                i = random.randint(0, self.cfg.pool_size - 1)
                out.append(pool[i].clone())
                pool[i] = image
            else:
                out.append(image)
        return torch.cat(out, 0)

    @staticmethod
    def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
        for net in nets:
            for p in net.parameters():
                p.requires_grad = flag

    def backward_D_basic(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> None:
        loss = (self.gan_loss(D(real), True) + self.gan_loss(D(fake.detach()), False)) * 0.5
        loss.backward()

    def __call__(self, real_A: torch.Tensor, real_B: torch.Tensor) -> None:
        lam_a, lam_b, lam_idt = self.cfg.lambda_a, self.cfg.lambda_b, self.cfg.lambda_identity
        fake_B = self.G_A(real_A)
        rec_A = self.G_B(fake_B)
        fake_A = self.G_B(real_B)
        rec_B = self.G_A(fake_A)
        self.set_requires_grad([self.D_A, self.D_B], False)
        self.opt_G.zero_grad()
        loss_idt_A = F.l1_loss(self.G_A(real_B), real_B) * lam_b * lam_idt
        loss_idt_B = F.l1_loss(self.G_B(real_A), real_A) * lam_a * lam_idt
        loss_G = (
            self.gan_loss(self.D_A(fake_B), True)
            + self.gan_loss(self.D_B(fake_A), True)
            + F.l1_loss(rec_A, real_A) * lam_a
            + F.l1_loss(rec_B, real_B) * lam_b
            + loss_idt_A
            + loss_idt_B
        )
        loss_G.backward()
        self.opt_G.step()
        self.set_requires_grad([self.D_A, self.D_B], True)
        self.opt_D.zero_grad()
        self.backward_D_basic(self.D_A, real_B, self.query("B", fake_B))
        self.backward_D_basic(self.D_B, real_A, self.query("A", fake_A))
        self.opt_D.step()


# -- the machine ------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    try:  # no lscpu (containers, macOS): /proc/cpuinfo, then whatever Python knows
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_cpu_check(name: str) -> bool | None:
    fn = getattr(torch.cpu, name, None)  # private helpers of recent torch releases
    try:
        return bool(fn()) if fn is not None else None
    except Exception:  # noqa: BLE001 - a probe only: unknown is an answer
        return None


def cpu_bf16() -> dict[str, Any]:
    """Whether this CPU runs bf16 natively (AVX-512 BF16 or AMX), and the evidence."""
    flags = sorted(f for f in cpu_flags() if any(w in f for w in CPU_FLAG_WORDS))
    torch_avx512_bf16 = _torch_cpu_check("_is_avx512_bf16_supported")
    torch_amx = _torch_cpu_check("_is_amx_tile_supported")
    native = any(f in flags for f in ("avx512_bf16", "amx_bf16")) or bool(
        torch_avx512_bf16 or torch_amx
    )
    return {
        "native_bf16": native,
        "flags": flags,
        "torch_avx512_bf16": torch_avx512_bf16,
        "torch_amx_tile": torch_amx,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "cpu_bf16": cpu_bf16(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s, no sparsity), matched
# against torch.cuda.get_device_name(); CYCLEKIT_GPU_PEAK_TFLOPS overrides for other GPUs.
GPU_BF16_PEAK = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 756e12,  # a name without the form factor: the lower figure
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
}


def gpu_bf16_peak(device: torch.device) -> tuple[float | None, str]:
    """(peak bf16 FLOP/s, where the figure came from) for a CUDA device, else (None, why)."""
    if device.type != "cuda":
        return None, "not a GPU"
    given = os.environ.get("CYCLEKIT_GPU_PEAK_TFLOPS")
    if given:
        return float(given) * 1e12, "CYCLEKIT_GPU_PEAK_TFLOPS"
    name = torch.cuda.get_device_name(device)
    for key, peak in GPU_BF16_PEAK.items():  # most specific names first
        if key in name:
            return peak, f"data sheet ({key})"
    return None, f"unknown GPU {name!r}: set CYCLEKIT_GPU_PEAK_TFLOPS"


def count_flops(fn: Any) -> int:
    """Floating-point operations of one call of ``fn`` (forward and backward, as counted by
    torch.utils.flop_counter: convolutions and matrix products, 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def fastest_precision(device: torch.device) -> tuple[str, str]:
    """(precision, why): bf16 where it is native, fp32 on CPUs that would emulate it."""
    if device.type == "cuda":
        prec = resolve_precision("auto", device)
        return prec, f"CUDA: {prec} autocast"
    if device.type == "cpu":
        evidence = cpu_bf16()
        if evidence["native_bf16"]:
            found = [f for f in evidence["flags"] if f in ("avx512_bf16", "amx_bf16")]
            return "bf16", "native bf16 on this CPU (" + (", ".join(found) or "torch probe") + ")"
        return "fp32", "no AVX-512 BF16 or AMX on this CPU: bf16 would be emulated"
    return "fp32", f"{device.type}: fp32"


# -- one model in its own process ---------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _memory_mib() -> dict[str, float]:
    """Current and peak resident memory of this process, MiB."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024  # kB
    except OSError:
        pass
    if "VmHWM" not in out:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["VmHWM"] = peak / (2**20 if sys.platform == "darwin" else 1024)
        out.setdefault("VmRSS", out["VmHWM"])
    return out


def _child_config(spec: dict[str, Any]) -> TrainConfig:
    extra = {k: spec[k] for k in ("upsample", "downsample") if spec.get(k)}
    return TrainConfig(
        data="bench", model=spec["model"], netG=spec["netG"], ngf=spec["ngf"], ndf=spec["ndf"],
        crop_size=spec["size"], load_size=spec["size"], batch_size=spec["batch_size"],
        precision=spec["precision"], device=spec["device"], seed=spec["seed"], **extra,
    )  # fmt: skip


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one model, run its training step, return its times and memory."""
    from cyclekit.training.model import build_model

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = resolve_device(spec["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as a training run does
    cfg = _child_config(spec)
    torch.manual_seed(cfg.seed)
    n, s = cfg.batch_size, spec["size"]
    batch = {
        "a": torch.rand(n, cfg.input_nc, s, s, device=device) * 2 - 1,
        "b": torch.rand(n, cfg.output_nc, s, s, device=device) * 2 - 1,
    }
    before = _memory_mib()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        cuda_before = torch.cuda.memory_allocated(device)
    model = build_model(cfg, device)
    ctx = autocast(device, cfg.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    t0 = time.perf_counter()
    for _ in range(spec["warmup"]):
        model.train_step(batch, ctx, scaler)
    _sync(device)
    warmup_s = time.perf_counter() - t0
    times, cpu_times, loads = [], [], []
    for _ in range(spec["iters"]):
        loads.append(_load_1min())
        t0, c0 = time.perf_counter(), time.process_time()
        losses = model.train_step(batch, ctx, scaler)
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    finite = all(bool(torch.isfinite(v)) for v in losses.values())
    after = _memory_mib()
    out: dict[str, Any] = {
        "step_seconds": times,
        # CPU time of this process (all its threads): less sensitive than wall time to other
        # processes on a shared machine, though OpenMP's spin-waiting is in it too.
        "step_cpu_seconds": cpu_times,
        "load_1min": loads,
        "warmup_seconds": warmup_s,
        "rss_before_model_mib": before["VmRSS"],
        "peak_rss_mib": after["VmHWM"],
        "threads": torch.get_num_threads(),
        "losses_finite": finite,
        "params": {k: sum(p.numel() for p in v.parameters()) for k, v in model.networks().items()},
        # What the networks really are (a flag a model ignores must not pass unnoticed).
        "generator_specs": model.specs,
        "config": {
            k: getattr(cfg, k)
            for k in ("netG", "ngf", "ndf", "downsample", "upsample", "init_type")
            + (
                ("lambda_nce", "nce_idt", "flip_equivariance", "num_patches")
                if cfg.one_sided
                else ()
            )
        },
    }
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["cuda_before_model_mib"] = cuda_before / 2**20
    return out


def _load_1min() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None


def _wait_for_quiet(limit: float | None, max_wait_s: float) -> float | None:
    """With ``--quiet-load``: wait (at most ``max_wait_s``) until the 1-minute load average is
    below ``limit``, so that a side does not start while other work holds the cores."""
    load = _load_1min()
    if limit is None or load is None:
        return load
    deadline = time.monotonic() + max_wait_s
    while load is not None and load >= limit and time.monotonic() < deadline:
        time.sleep(5)
        load = _load_1min()
    return load


def run_interleaved(spec: dict[str, Any]) -> dict[str, Any]:
    """Every model in this one process, one step of each in turn (the order rotating each
    cycle): a change in the machine's load hits all of them alike, so the per-cycle ratios
    hold where separate processes' times do not. No memory figures (one process)."""
    from cyclekit.training.model import build_model

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = resolve_device(spec["device"])
    models, nets = spec["models"], {}
    for name in models:
        cfg = _child_config(spec | {"model": name})
        torch.manual_seed(cfg.seed)
        nets[name] = (build_model(cfg, device), cfg)
    torch.manual_seed(0)
    n, s = spec["batch_size"], spec["size"]
    batch = {k: torch.rand(n, 3, s, s, device=device) * 2 - 1 for k in ("a", "b")}
    ctx = autocast(device, spec["precision"])
    scaler = torch.amp.GradScaler(device.type, enabled=spec["precision"] == "fp16")
    for model, _ in nets.values():
        for _ in range(spec["warmup"]):
            model.train_step(batch, ctx, scaler)
    _sync(device)
    wall: dict[str, list[float]] = {m: [] for m in models}
    cpu: dict[str, list[float]] = {m: [] for m in models}
    for cycle in range(spec["iters"]):
        k = cycle % len(models)
        for name in models[k:] + models[:k]:
            t0, c0 = time.perf_counter(), time.process_time()
            nets[name][0].train_step(batch, ctx, scaler)
            _sync(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {"step_seconds": wall, "step_cpu_seconds": cpu, "threads": torch.get_num_threads()}


def interleaved_comparison(
    args: argparse.Namespace, models: list[str], precision: str
) -> dict[str, Any]:
    spec = {
        "models": models, "precision": precision, "size": args.size,
        "batch_size": args.batch_size, "ngf": args.ngf, "ndf": args.ndf, "netG": args.netG,
        "upsample": args.upsample, "downsample": args.downsample, "iters": args.interleave,
        "warmup": 2 if args.warmup is None else args.warmup, "device": args.device,
        "threads": args.threads, "seed": 0,
    }  # fmt: skip
    cmd = [sys.executable, str(Path(__file__).resolve()), "--interleaved-child", json.dumps(spec)]
    load = _wait_for_quiet(args.quiet_load, args.quiet_wait)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"Error: the interleaved timing failed (exit {proc.returncode})")
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    wall, cpu = run["step_seconds"], run["step_cpu_seconds"]
    out: dict[str, Any] = {"cycles": args.interleave, "load_at_start": load, "models": {}}
    for m in models:
        # Each cycle's ratio (the steps ran back to back), then the median over cycles.
        cycle_ratios = [a / b for a, b in zip(wall[m], wall[REFERENCE], strict=True)]
        cycle_cpu = [a / b for a, b in zip(cpu[m], cpu[REFERENCE], strict=True)]
        out["models"][m] = {
            "seconds_per_step": _r(statistics.median(wall[m])),
            "cpu_seconds_per_step": _r(statistics.median(cpu[m])),
            "step_ratio": _r(statistics.median(cycle_ratios), 3),
            "step_ratio_range": [_r(min(cycle_ratios), 3), _r(max(cycle_ratios), 3)],
            "cpu_step_ratio": _r(statistics.median(cycle_cpu), 3),
        }
        if m in TARGET_STEP_RATIO:
            out["models"][m]["meets_step_target"] = (
                out["models"][m]["step_ratio"] <= TARGET_STEP_RATIO[m]
            )
    return out


def _run_side(args: argparse.Namespace, model: str, precision: str) -> dict[str, Any]:
    spec = {
        "model": model, "precision": precision, "size": args.size,
        "batch_size": args.batch_size, "ngf": args.ngf, "ndf": args.ndf, "netG": args.netG,
        "upsample": args.upsample, "downsample": args.downsample, "iters": args.iters,
        "warmup": 2 if args.warmup is None else args.warmup, "device": args.device,
        "threads": args.threads, "seed": 0,
    }  # fmt: skip
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    load_at_start = _wait_for_quiet(args.quiet_load, args.quiet_wait)
    # stderr passes through: a failing side shows its own message or traceback.
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"Error: timing --model {model} at {precision} failed (exit {proc.returncode}); "
            "its message is above"
        )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load_at_start"] = load_at_start
    return out


def generator_sampling(spec: dict[str, Any]) -> tuple[str, str]:
    """(downsample, upsample) of a saved generator spec (absent keys: the CycleGAN layers)."""
    return spec.get("downsample", "conv"), spec.get("upsample", "transpose")


def _r(x: float, nd: int = 4) -> float:
    return round(x, nd)


def compare_models(args: argparse.Namespace, models: list[str]) -> dict[str, Any]:
    """Each (model, precision) side timed in a fresh process per round; ratios to cyclegan."""
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)  # recorded below as the children's setting
    if args.precision:
        precisions = [resolve_precision(p, device) for p in args.precision]
        why = "given with --precision"
    else:
        prec, why = fastest_precision(device)
        precisions = [prec]
    if REFERENCE not in models:
        models = [REFERENCE, *models]
    sides = [(m, p) for p in dict.fromkeys(precisions) for m in models]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {side: [] for side in sides}
    for r in range(args.rounds):
        k = r % len(sides)  # rotate the order: no side is always first (or last)
        for side in sides[k:] + sides[:k]:
            runs[side].append(_run_side(args, *side))

    def summarise(model: str, prec: str) -> dict[str, Any]:
        rs = runs[(model, prec)]
        steps = [t for run in rs for t in run["step_seconds"]]
        out: dict[str, Any] = {
            "seconds_per_step": _r(statistics.median(steps)),
            "seconds_per_step_min": _r(min(steps)),
            "seconds_per_step_max": _r(max(steps)),
            "cpu_seconds_per_step": _r(
                statistics.median(t for run in rs for t in run["step_cpu_seconds"])
            ),
            "load_1min": [_r(x, 2) for run in rs for x in [run["load_at_start"]] if x is not None],
            "timed_steps": len(steps),
            "round_medians": [_r(statistics.median(run["step_seconds"])) for run in rs],
            "warmup_seconds": [_r(run["warmup_seconds"], 2) for run in rs],
            "pairs_per_s": _r(args.batch_size / statistics.median(steps), 3),
            "peak_rss_mib": _r(max(run["peak_rss_mib"] for run in rs), 1),
            # The process before the model existed (torch, the inputs): peak minus this is
            # what the model's training step itself needed.
            "rss_before_model_mib": _r(min(run["rss_before_model_mib"] for run in rs), 1),
            "losses_finite": all(run["losses_finite"] for run in rs),
            "params": rs[0]["params"],
            "config": rs[0]["config"],
            "generator_specs": rs[0]["generator_specs"],
        }
        out["train_rss_mib"] = _r(out["peak_rss_mib"] - out["rss_before_model_mib"], 1)
        if device.type == "cuda":
            out["cuda_max_allocated_mib"] = _r(max(run["cuda_max_allocated_mib"] for run in rs), 1)
        return out

    results = {p: {m: summarise(m, p) for m in models} for p in dict.fromkeys(precisions)}
    warnings = []
    for m, res in results[precisions[0]].items():
        asked = (res["config"]["downsample"], res["config"]["upsample"])
        for name, spec in res["generator_specs"].items():
            built = generator_sampling(spec)
            if built != asked:  # a model that ignores the flag would time other networks
                warnings.append(
                    f"{m}: asked for --downsample {asked[0]} --upsample {asked[1]} but {name} "
                    f"was built with {built[0]}/{built[1]}"
                )
    mem_key = "cuda_max_allocated_mib" if device.type == "cuda" else "peak_rss_mib"
    ratios: dict[str, Any] = {}
    for prec, by_model in results.items():
        ref = by_model[REFERENCE]
        ratios[prec] = {}
        for m, res in by_model.items():
            entry = {
                "step": _r(res["seconds_per_step"] / ref["seconds_per_step"], 3),
                # The same from the fastest step of each (the one least slowed by others'
                # work) and from CPU time: on a shared machine, read the three together.
                "step_from_min": _r(res["seconds_per_step_min"] / ref["seconds_per_step_min"], 3),
                "step_from_cpu": _r(res["cpu_seconds_per_step"] / ref["cpu_seconds_per_step"], 3),
                "memory": _r(res[mem_key] / ref[mem_key], 3),
            }
            if device.type != "cuda" and ref["train_rss_mib"] > 0:
                entry["train_memory"] = _r(res["train_rss_mib"] / ref["train_rss_mib"], 3)
            if m in TARGET_STEP_RATIO:
                entry["step_target"] = TARGET_STEP_RATIO[m]
                entry["meets_step_target"] = entry["step"] <= TARGET_STEP_RATIO[m]
            ratios[prec][m] = entry
    info = machine_info(device)
    info["threads"] = runs[sides[0]][0]["threads"]  # what the timed processes used
    interleaved = (
        {p: interleaved_comparison(args, models, p) for p in dict.fromkeys(precisions)}
        if args.interleave
        else None
    )
    return {
        "benchmark": "train_step_models",
        "models": models,
        "reference": REFERENCE,
        "size": args.size,
        "batch_size": args.batch_size,
        "netG": args.netG,
        "ngf": args.ngf,
        "ndf": args.ndf,
        "upsample": args.upsample or "model default",
        "downsample": args.downsample or "model default",
        "iters_per_round": args.iters,
        "rounds": args.rounds,
        "warmup": 2 if args.warmup is None else args.warmup,
        "precisions": list(dict.fromkeys(precisions)),
        "precision_choice": why,
        "memory_measure": "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "peak RSS of the side's own process (VmHWM)",
        "machine": info,
        "memory_note": "train_rss_mib = peak RSS minus RSS before the model was built; it "
        "includes libraries loaded lazily at the first step (about 200 MiB), which dominate "
        "at tiny sizes",
        "results": results,
        "ratio_to_cyclegan": ratios,
        "interleaved": interleaved,
        "warnings": warnings,
    }


# -- cyclekit's CycleGAN step vs the official one --------------------------------------------------


def use_cold_compile_cache(user_cache: str | None) -> str:
    """Point torch's compile cache at a fresh folder (removed at exit) unless the user set
    one; say which. A cold compile is what a run pays the first time on a machine; with
    torch's cache warm, a second benchmark would report seconds where a user waits minutes."""
    if user_cache:
        return f"TORCHINDUCTOR_CACHE_DIR={user_cache}"
    import atexit
    import shutil
    import tempfile

    fresh = tempfile.mkdtemp(prefix="cyclekit-bench-inductor-")
    atexit.register(shutil.rmtree, fresh, ignore_errors=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = fresh
    return "cold (a fresh TORCHINDUCTOR_CACHE_DIR)"


def official_comparison(args: argparse.Namespace) -> dict[str, Any]:
    given = [f for f in ("upsample", "downsample") if getattr(args, f)]
    if given or args.netG != "resnet_9blocks":
        flag = "--" + (given[0] if given else "netG")
        raise UsageError(f"{flag} applies with --model (the official comparison is ResNet-9)")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    cfg = TrainConfig(
        data="bench",
        crop_size=args.size,
        load_size=args.size,
        ngf=args.ngf,
        ndf=args.ndf,
        batch_size=args.batch_size,
    )
    real_a = torch.rand(args.batch_size, 3, args.size, args.size, device=device) * 2 - 1
    real_b = torch.rand(args.batch_size, 3, args.size, args.size, device=device) * 2 - 1

    sides: dict[str, object] = {"official_fp32": OfficialStep(cfg, device)}
    for prec in args.precision or ["fp32", "bf16"]:
        prec = resolve_precision(prec, device)
        m = build_cyclegan(cfg, device)
        scaler = torch.amp.GradScaler(device.type, enabled=prec == "fp16")
        ctx = autocast(device, prec)
        sides[f"cyclekit_{prec}"] = lambda m=m, ctx=ctx, scaler=scaler: train_step(
            m, real_a, real_b, cfg, ctx, scaler
        )

    compile_cache = None
    if args.compile:
        compile_cache = use_cold_compile_cache(USER_INDUCTOR_CACHE)
        prec = resolve_precision("bf16", device)
        m = build_cyclegan(cfg, device)
        for name in ("G_ab", "G_ba", "D_a", "D_b"):
            setattr(m, name, torch.compile(getattr(m, name)))
        scaler = torch.amp.GradScaler(device.type, enabled=False)
        ctx = autocast(device, prec)
        sides[f"cyclekit_{prec}_compiled"] = lambda: train_step(m, real_a, real_b, cfg, ctx, scaler)

    def call(name: str) -> None:
        fn = sides[name]
        fn(real_a, real_b) if name.startswith("official") else fn()  # type: ignore[operator]

    compile_s: dict[str, float] = {}
    warmup = 1 if args.warmup is None else args.warmup
    for name in sides:
        t0 = time.perf_counter()
        for _ in range(max(warmup, 2 if name.endswith("compiled") else 0)):
            call(name)
        compile_s[name] = round(time.perf_counter() - t0, 1)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name in sides:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.iters):
                call(name)
            _sync(device)
            times[name].append((time.perf_counter() - t0) / args.iters)

    result = {
        "benchmark": "train_step",
        "size": args.size,
        "batch_size": args.batch_size,
        "ngf": args.ngf,
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "seconds_per_iter": {k: round(min(v), 4) for k, v in times.items()},
        "warmup_seconds": compile_s,
        "compile_cache": compile_cache,
        "pairs_per_s": {k: round(args.batch_size / min(v), 3) for k, v in times.items()},
    }
    base = min(times["official_fp32"])
    result["speedup_vs_official"] = {
        k: round(base / min(v), 3) for k, v in times.items() if k != "official_fp32"
    }
    # The work of one step, counted once on the cyclekit fp32 side (the same networks and
    # images on every side), and the fraction of the GPU's bf16 peak each side reaches.
    flops = count_flops(sides[next(k for k in sides if k.startswith("cyclekit"))])
    result["flops_per_step"] = flops
    result["tflops_per_s"] = {k: round(flops / min(v) / 1e12, 3) for k, v in times.items()}
    peak, source = gpu_bf16_peak(device)
    result["bf16_peak_tflops"] = None if peak is None else round(peak / 1e12, 1)
    result["bf16_peak_source"] = source
    if peak:
        result["fraction_of_bf16_peak"] = {
            k: round(flops / min(v) / peak, 4) for k, v in times.items()
        }
    # What a user gets without flags: TrainConfig's precision (auto) on this device, and
    # --compile auto for a real run's plan (horse2zebra: 1,334 A images x 200 epochs).
    prec = resolve_precision(TrainConfig().precision, device)
    planned = 1334 * 200 // args.batch_size
    choice = choose_compile(None, device, planned, args.batch_size * args.size**2)
    default = f"cyclekit_{prec}" + ("_compiled" if choice.enabled else "")
    if choice.enabled and prec == "bf16" and f"cyclekit_{prec}_compiled" in times:
        saved = min(times[f"cyclekit_{prec}"]) - min(times[default])
        even = round(compile_s[default] / saved) if saved > 0 else None
        result["compile_break_even_steps"] = even
    if default in times:
        result["default_settings"] = {
            "side": default,
            "compile": f"{'on' if choice.enabled else 'off'} ({choice.reason})",
            "speedup_vs_official": result["speedup_vs_official"][default],
        }
    elif choice.enabled:
        result["default_settings"] = {"side": default, "note": "not timed: add --compile"}
    result["machine"] = machine_info(device)
    return result


def _models(args: argparse.Namespace) -> list[str]:
    names = list(args.model or [])
    for text in args.models or []:
        names += [n.strip().lower() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in MODELS]
    if bad:
        raise SystemExit(f"Error: --model {bad[0]!r} is not one of: {', '.join(MODELS)}")
    return list(dict.fromkeys(names))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", type=int, default=128, help="square crop side")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--iters", type=int, default=5, help="timed iterations per round and side")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (default 1; 2 with --model)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precision",
        nargs="+",
        default=None,
        help="precisions to time (default: fp32 bf16 for the official comparison; the fastest "
        "with --model)",
    )
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd nets (bf16)")
    p.add_argument(
        "--model",
        action="append",
        choices=MODELS,
        type=str.lower,
        help="compare the training steps of these models (repeatable)",
    )
    p.add_argument("--models", action="append", help="the same as a list: cyclegan,cut,fastcut")
    p.add_argument("--netG", default="resnet_9blocks", help="with --model: the generator")
    p.add_argument("--upsample", default=None, help="with --model: for every model")
    p.add_argument("--downsample", default=None, help="with --model: for every model")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--quiet-load",
        type=float,
        default=None,
        help="with --model: before each side, wait until the 1-minute load average is below "
        "this (a shared machine), at most --quiet-wait seconds; the loads are in the JSON",
    )
    p.add_argument("--quiet-wait", type=float, default=300.0, help="see --quiet-load")
    p.add_argument("--json", default=None, help="also write the JSON to this file")
    p.add_argument(
        "--interleave",
        type=int,
        default=0,
        metavar="CYCLES",
        help="with --model: also time every model in one process, one step of each in turn "
        "for CYCLES cycles, and give the median of the per-cycle ratios (robust to load)",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--interleaved-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child is not None:
        print(json.dumps(run_child(json.loads(args.child))))
        return
    if args.interleaved_child is not None:
        print(json.dumps(run_interleaved(json.loads(args.interleaved_child))))
        return
    models = _models(args)
    try:
        result = compare_models(args, models) if models else official_comparison(args)
    except CyclekitError as e:  # a bad flag value: one line, no traceback
        raise SystemExit(f"Error: {e}") from None
    text = json.dumps(result, indent=2)
    if args.json:
        with atomic_write(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    for line in result.get("warnings", []):
        print(f"Error: {line}", file=sys.stderr)
    if result.get("warnings"):
        raise SystemExit(1)  # the JSON is printed, but these numbers are not what was asked


if __name__ == "__main__":
    main()
