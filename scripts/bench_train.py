#!/usr/bin/env python
"""Seconds per CycleGAN training iteration: cyclekit's step vs the official step, one run.

The "official" side is a plain fp32 eager re-implementation of the official
``CycleGANModel.optimize_parameters`` written here (GANLoss with target tensors, separate
backward passes for each discriminator, a pool driven by Python's ``random``), on the same
networks. Both sides are timed in alternating rounds so machine noise hits them alike.

    python scripts/bench_train.py --size 128 --batch-size 1 --iters 5
    python scripts/bench_train.py --size 32 --ngf 8 --iters 2 --precision fp32 bf16   # quick

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
import time

import torch
import torch.nn.functional as F
from torch import nn

from cyclekit.devices import autocast, resolve_device, resolve_precision
from cyclekit.training.config import TrainConfig
from cyclekit.training.cyclegan import build_cyclegan, train_step


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


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
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--precision", nargs="+", default=["fp32", "bf16"], help="cyclekit precisions to time"
    )
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd nets (bf16)")
    args = p.parse_args()

    device = resolve_device(args.device)
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
    for prec in args.precision:
        prec = resolve_precision(prec, device)
        m = build_cyclegan(cfg, device)
        scaler = torch.amp.GradScaler(device.type, enabled=prec == "fp16")
        ctx = autocast(device, prec)
        sides[f"cyclekit_{prec}"] = lambda m=m, ctx=ctx, scaler=scaler: train_step(
            m, real_a, real_b, cfg, ctx, scaler
        )

    if args.compile:
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
    for name in sides:
        t0 = time.perf_counter()
        for _ in range(max(args.warmup, 2 if name.endswith("compiled") else 0)):
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
        "pairs_per_s": {k: round(args.batch_size / min(v), 3) for k, v in times.items()},
    }
    base = min(times["official_fp32"])
    result["speedup_vs_official"] = {
        k: round(base / min(v), 3) for k, v in times.items() if k != "official_fp32"
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
