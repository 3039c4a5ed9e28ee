#!/usr/bin/env python
"""Train the same run (same seed, same data) in fp32 and in bf16 and print both loss curves.

    python scripts/compare_precision.py --steps 300 --data datasets/day2night
    python scripts/compare_precision.py --steps 4 --size 32 --ngf 8    # smoke

Without --data a synthetic day2night dataset is generated in a temporary folder. Prints JSON:
per precision, the loss means every --log-every steps, the final cycle loss and seconds/step.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cyclekit.training.config import TrainConfig
from cyclekit.training.loop import train


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default=None, help="dataset folder (trainA/, trainB/)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--device", default="auto")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from cyclekit.data.synth import make_synthetic

            data = str(make_synthetic("day2night", Path(tmp), 200, 4, args.size, seed=0))
        out: dict[str, object] = {
            "benchmark": "precision_curves",
            "steps": args.steps,
            "size": args.size,
            "ngf": args.ngf,
            "batch_size": args.batch_size,
            "data": data,
        }
        for prec in args.precisions:
            cfg = TrainConfig(
                data=data,
                name=f"curve_{prec}",
                checkpoints_dir=tmp,
                netG="resnet_6blocks",
                ngf=args.ngf,
                ndf=args.ngf,
                preprocess="crop",
                load_size=args.size,
                crop_size=args.size,
                batch_size=args.batch_size,
                max_steps=args.steps,
                log_every=args.log_every,
                sample_every=10**9,
                num_workers=2,
                device=args.device,
                precision=prec,
                wandb_mode="disabled",
                seed=0,
            )
            t0 = time.perf_counter()
            res = train(cfg, progress=False)
            seconds = time.perf_counter() - t0
            curve = [
                {k: round(v, 4) for k, v in h.items() if k.startswith("loss/") or k == "step"}
                for h in res.history
            ]
            out[prec] = {
                "seconds_per_step": round(seconds / res.step, 4),
                "curve": curve,
                "final_cycle": round(res.losses["cycle_a"] + res.losses["cycle_b"], 4),
            }
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
