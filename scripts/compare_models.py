#!/usr/bin/env python
"""Translation quality of cyclegan, cut and fastcut on the synthetic tasks (ground truth known).

Two measurements, each printed as one JSON object (stdout; progress goes to stderr):

* Equal wall time (default): for each task and each ``--pair MODEL/UPSAMPLE``, train for
  ``--minutes`` of wall time (``max_minutes``: set-up, steps and checkpoints alike) with the
  demo's small recipe (``cyclekit.demo.train_config``: ResNet-6, ngf 16, 64 px, batch 4, lr
  4e-4 constant), translate testA with the real translate engine and score the mean PSNR
  against testA_gt, next to doing nothing (testA itself against testA_gt).

* ``--steps-to-beat-identity``: on the mildest task (highest PSNR of doing nothing, or
  ``--task``), train each pair in steps of ``--every`` (resuming the same run, bit-exact),
  translate and score after each, and report the first step count whose PSNR beats doing
  nothing, with the training seconds it took.

Every run, dataset and translation lives in a temporary folder deleted at the end; ``--keep
DIR`` keeps the translations with a side-by-side page per task (DIR must be new or empty).
Seeds are explicit (``--seed``: data and training).

    python scripts/compare_models.py --minutes 3                       # 3 tasks x 5 pairs
    python scripts/compare_models.py --task day2night --minutes 3 --keep compare_out
    python scripts/compare_models.py --steps-to-beat-identity --every 50 --max-steps 2000
    python scripts/compare_models.py --preset tiny --max-steps 2 --task day2night   # smoke

A pair may carry settings for its runs: ``--pair cyclegan/transpose,lambda_identity=2``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import html
import json
import math
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

# The machine description and the precision choice are bench_train.py's (one definition).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import fastest_precision, generator_sampling, machine_info  # noqa: E402

from cyclekit.data.synth import SYNTH_TASKS, folder_psnr, make_synthetic  # noqa: E402
from cyclekit.demo import PRESETS, train_config  # noqa: E402
from cyclekit.devices import resolve_device, resolve_precision  # noqa: E402
from cyclekit.errors import CyclekitError, UsageError  # noqa: E402
from cyclekit.files import atomic_write  # noqa: E402
from cyclekit.training.config import MODEL_DEFAULTS, MODELS, TrainConfig  # noqa: E402

DEFAULT_PAIRS = (
    "cyclegan/transpose",
    "cyclegan/resize-conv",
    "cut/antialias",
    "fastcut/antialias",
    "cut/resize-conv",
)
# A "mild" task in the sense (a colour grade, a film look): the input is already close
# to the target. Doing nothing scores at least this much there (a typical grade: 20-30 dB).
MILD_DB = 20.0
# Settings a model chooses (MODEL_DEFAULTS) that the demo's recipe sets for every model.
RECIPE_KEEPS = {"epochs", "epochs_decay"}


# -- settings ---------------------------------------------------------------------------------


def parse_pair(text: str) -> tuple[str, str, str | None, dict[str, str]]:
    """``model[/upsample][,key=value...]`` -> (label, model, upsample, overrides)."""
    head, *rest = [t.strip() for t in text.split(",")]
    model, _, upsample = head.lower().partition("/")
    if model not in MODELS:
        raise UsageError(f"--pair {text!r}: model {model!r} is not one of: {', '.join(MODELS)}")
    overrides = {}
    for item in rest:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--pair {text!r}: {item!r} is not KEY=VALUE")
        overrides[key.strip()] = value.strip()
    label = model + (f"/{upsample}" if upsample else "") + "".join(f",{i}" for i in rest)
    return label, model, upsample or None, overrides


def model_config(
    base: TrainConfig, model: str, upsample: str | None, overrides: dict[str, Any], **changes: Any
) -> TrainConfig:
    """``base`` (the demo's recipe, built for cyclegan) for ``model``: the settings each model
    chooses go back to that model's defaults, except the recipe's constant-rate schedule."""
    values = base.to_dict()
    for key in set().union(*MODEL_DEFAULTS.values()) - RECIPE_KEEPS:
        values[key] = None
    values.update(model=model, **changes)
    if upsample:
        values["upsample"] = upsample
    values.update(overrides)
    return TrainConfig.from_dict(values, "--pair")


# -- running --------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label)


def translate_and_score(run_dir: Path, dataset: Path, out: Path, device: str) -> tuple[float, dict]:
    """Translate testA with the real engine (fp32: the model is scored, not the inference
    precision) and return (mean PSNR against testA_gt, the generator's spec)."""
    from cyclekit.translate.engine import TranslateOptions, load_model, translate_paths

    model, info = load_model(run_dir / "G_ab.pt")
    opts = TranslateOptions(
        output_dir=out, fmt="png", device=device, precision="fp32", num_workers=0, progress=False
    )
    report = translate_paths([str(dataset / "testA")], model, info, opts)
    report.close()
    if report.failed:
        raise RuntimeError(f"{report.failed} test image(s) failed to translate into {out}")
    return folder_psnr(out, dataset / "testA_gt"), info["spec"]


def check_sampling(label: str, cfg: TrainConfig, spec: dict, warnings: list[str]) -> dict:
    """What the trained generator really is; a mismatch with what was asked is a warning."""
    built = generator_sampling(spec)
    asked = (cfg.downsample, cfg.upsample)
    if built != asked:  # a model that ignores --upsample would be scored as something else
        warnings.append(
            f"{label}: asked for --downsample {asked[0]} --upsample {asked[1]} but the trained "
            f"generator has {built[0]}/{built[1]}"
        )
    return {"downsample": built[0], "upsample": built[1], "as_asked": built == asked}


def train_quiet(cfg: TrainConfig, **kwargs: Any) -> tuple[Any, float]:
    """train() with its messages on stderr (stdout is the JSON); returns (result, seconds)."""
    from cyclekit.training.loop import train

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        result = train(cfg, progress=False, **kwargs)
    return result, time.perf_counter() - t0


def make_dataset(task: str, root: Path, preset: str, seed: int) -> Path:
    size, n_train, n_test, _, _ = PRESETS[preset]
    with contextlib.redirect_stdout(sys.stderr):
        return make_synthetic(task, root, n_train, n_test, size, seed)


def base_config(args: argparse.Namespace, dataset: Path, work: Path, minutes: float | None):
    cfg = train_config(
        dataset=dataset, out=work, preset=args.preset, minutes=minutes or 1.0,
        device=args.device, seed=args.seed, wandb_mode="disabled", max_steps=args.max_steps,
    )  # fmt: skip
    # No sample grids during the timed training: each model would spend different time on them.
    return cfg, {"precision": args.precision, "sample_every": 10**9, "max_minutes": minutes}


def equal_time(args: argparse.Namespace, pairs: list, work: Path, keep: Path | None) -> dict:
    out: dict[str, Any] = {"tasks": {}, "warnings": []}
    for task in args.task or list(SYNTH_TASKS):
        dataset = make_dataset(task, work / "data", args.preset, args.seed)
        identity = folder_psnr(dataset / "testA", dataset / "testA_gt")
        mean_b = mean_image_psnr(dataset)
        runs: dict[str, Any] = {}
        log(f"[{task}] doing nothing: {identity:.2f} dB; the mean trainB picture: {mean_b:.2f} dB")
        if not out["tasks"]:
            warm_up(args, pairs, dataset, work)
        for label, model, upsample, overrides in pairs:
            base, changes = base_config(args, dataset, work, args.minutes)
            cfg = model_config(
                base, model, upsample, overrides, name=f"{task}_{_safe(label)}", **changes
            )
            result, seconds = train_quiet(cfg, overwrite=True)
            translated = work / "translated" / task / _safe(label)
            score, spec = translate_and_score(result.run_dir, dataset, translated, args.device)
            runs[label] = {
                "model": model,
                "psnr": round(score, 3),
                "gain_over_identity": round(score - identity, 3),
                "steps": result.step,
                "train_seconds": round(seconds, 1),
                "seconds_per_step": round(seconds / max(result.step, 1), 4),
                "stopped_by": "max_steps" if result.step == args.max_steps else "time",
                "final_losses": {k: round(v, 4) for k, v in result.losses.items()},
                "generator": check_sampling(label, cfg, spec, out["warnings"]),
            }
            log(
                f"[{task}] {label}: {result.step} steps in {seconds:.0f} s, "
                f"PSNR {score:.2f} dB ({score - identity:+.2f})"
            )
        out["tasks"][task] = {
            "identity_psnr": round(identity, 3),
            "mean_trainB_psnr": round(mean_b, 3),
            "runs": runs,
        }
        if keep is not None:
            folders = {lab: work / "translated" / task / _safe(lab) for lab in runs}
            keep_task(keep, task, dataset, folders)
    return out


def mean_image_psnr(dataset: Path) -> float:
    """Mean PSNR against testA_gt of one fixed picture: the per-pixel mean of trainB.

    The best guess that ignores the input, learnt from unpaired data alone: a model that does
    not beat it has not used its input (on day2night, doing nothing is worse than this)."""
    import numpy as np

    from cyclekit.data.images import decode_image, list_images
    from cyclekit.data.synth import psnr

    images = [decode_image(f).pixels.astype(np.float64) for f in list_images(dataset / "trainB")]
    mean = np.clip(np.mean(images, axis=0).round(), 0, 255).astype(np.uint8)
    scores = [psnr(mean, decode_image(g).pixels) for g in list_images(dataset / "testA_gt")]
    return float(np.mean(scores))


def warm_up(args: argparse.Namespace, pairs: list, dataset: Path, work: Path) -> None:
    """Two untimed steps of every pair first: the process's one-time costs (lazy libraries,
    kernels chosen per shape) must not come out of the first timed run's minutes."""
    for label, model, upsample, overrides in pairs:
        base, changes = base_config(args, dataset, work, None)
        changes |= {"max_steps": 2, "checkpoints_dir": str(work / "warmup")}
        cfg = model_config(base, model, upsample, overrides, name=_safe(label), **changes)
        train_quiet(cfg, overwrite=True)
    shutil.rmtree(work / "warmup", ignore_errors=True)


def mildest_task(args: argparse.Namespace, work: Path) -> tuple[str, dict[str, float]]:
    """The task whose test inputs are already closest to their truth (a small copy of each)."""
    size, _, n_test, _, _ = PRESETS[args.preset]
    scores = {}
    for task in SYNTH_TASKS:
        with contextlib.redirect_stdout(sys.stderr):
            ds = make_synthetic(task, work / "probe", 1, n_test, size, args.seed)
        scores[task] = round(folder_psnr(ds / "testA", ds / "testA_gt"), 3)
    return max(scores, key=scores.__getitem__), scores


def steps_to_beat(args: argparse.Namespace, pairs: list, work: Path, keep: Path | None) -> dict:
    if args.task and len(args.task) > 1:
        raise UsageError("--steps-to-beat-identity takes one --task")
    chosen, by_task = mildest_task(args, work)
    task = args.task[0] if args.task else chosen
    dataset = make_dataset(task, work / "data", args.preset, args.seed)
    identity = folder_psnr(dataset / "testA", dataset / "testA_gt")
    limit = args.max_steps or 2000
    warm_up(args, pairs, dataset, work)
    log(f"[{task}] doing nothing: {identity:.2f} dB; evaluating every {args.every} steps")
    out: dict[str, Any] = {
        "task": task,
        "task_choice": "--task" if args.task else "highest PSNR of doing nothing",
        "identity_psnr_by_task": by_task,
        "identity_psnr": round(identity, 3),
        "mean_trainB_psnr": round(mean_image_psnr(dataset), 3),
        "mild_threshold_db": MILD_DB,
        "task_is_mild": identity >= MILD_DB,
        "every": args.every,
        "max_steps": limit,
        "runs": {},
        "warnings": [],
    }
    if identity < MILD_DB:
        out["notes"] = [
            f"{task} is not a mild task (doing nothing scores {identity:.1f} dB < {MILD_DB:g})"
            + ("" if args.task else "; it is the mildest: no synthetic task is a colour grade")
        ]
    out["notes"] = out.get("notes", []) + [
        "train_seconds add up the training calls, each of which resumes the run and saves "
        "last.pt: a little more than the steps alone (see equal_time's seconds_per_step)"
    ]
    for label, model, upsample, overrides in pairs:
        base, changes = base_config(args, dataset, work, None)
        cfg0 = model_config(
            base, model, upsample, overrides, name=f"steps_{_safe(label)}", **changes
        )
        curve: list[dict[str, float]] = []
        first = None
        seconds_total, spec = 0.0, {}
        step = 0
        while step < limit:
            step = min(step + args.every, limit)
            cfg = dataclasses.replace(cfg0, max_steps=step)  # the same run, a later stop
            result, seconds = train_quiet(
                cfg, resume="auto" if curve else None, explicit=set(), overwrite=not curve
            )
            seconds_total += seconds
            translated = work / "translated" / f"steps_{_safe(label)}"
            shutil.rmtree(translated, ignore_errors=True)  # each evaluation starts afresh
            score, spec = translate_and_score(result.run_dir, dataset, translated, args.device)
            curve.append(
                {
                    "step": result.step,
                    "psnr": round(score, 3),
                    "train_seconds": round(seconds_total, 1),
                }
            )
            log(f"[{task}] {label}: step {result.step}: {score:.2f} dB")
            if first is None and score > identity:
                first = curve[-1]
                if not args.full_curve:
                    break
            if result.step < step:  # stopped early (should not happen: no time limit)
                break
        stays = None  # the first evaluated step from which every later one beats doing nothing
        for i, point in enumerate(curve):
            if all(p["psnr"] > identity for p in curve[i:]):
                stays = point["step"]
                break
        out["runs"][label] = {
            "model": model,
            "first_step_beating_identity": first["step"] if first else None,
            "train_seconds_to_beat": first["train_seconds"] if first else None,
            "beats_from_step_on": stays if args.full_curve else None,
            "seconds_per_step": round(seconds_total / max(curve[-1]["step"], 1), 4),
            "curve": curve,
            "generator": check_sampling(label, cfg0, spec, out["warnings"]),
        }
        if keep is not None:  # the last evaluation: the one that first beat doing nothing
            keep_task(keep, task, dataset, {label: translated})
    return out


# -- keeping the images -----------------------------------------------------------------------


def keep_task(keep: Path, task: str, dataset: Path, translated: dict[str, Path]) -> None:
    """Copy inputs, truths and translations (label -> folder) under ``keep/task`` and write a
    side-by-side page of everything kept there so far."""
    from cyclekit.data.images import decode_image, list_images
    from cyclekit.data.synth import psnr

    dst = keep / task
    for sub in ("testA", "testA_gt"):
        if not (dst / sub).exists():
            shutil.copytree(dataset / sub, dst / sub)
    for lab, src in translated.items():
        shutil.copytree(src, dst / _safe(lab), dirs_exist_ok=True)
    shown = sorted(
        {p.name for p in dst.iterdir() if p.is_dir() and p.name not in ("testA", "testA_gt")}
    )
    rows = []
    for src in list_images(dst / "testA"):
        truth = decode_image(dst / "testA_gt" / src.name).pixels
        name = html.escape(src.name)
        cells = [f"<td>{name}</td>", f'<td><img src="testA/{name}"></td>']
        for col in shown:
            pred = dst / col / f"{src.stem}.png"
            score = psnr(decode_image(pred).pixels, truth) if pred.exists() else math.nan
            cells.append(f'<td><img src="{col}/{html.escape(pred.name)}"><br>{score:.1f} dB</td>')
        cells.append(f'<td><img src="testA_gt/{name}"></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    heads = "".join(f"<th>{html.escape(c)}</th>" for c in ["file", "input", *shown, "truth"])
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>'
        f"{html.escape(task)}</title><style>img{{width:128px;image-rendering:pixelated}}"
        "td{text-align:center;padding:2px}</style></head><body>"
        f"<h1>{html.escape(task)}</h1><table><tr>{heads}</tr>{''.join(rows)}</table></body></html>"
    )
    with atomic_write(dst / "index.html", "w") as f:
        f.write(page)


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--task", action="append", choices=list(SYNTH_TASKS), help="repeatable")
    p.add_argument(
        "--pair",
        action="append",
        help=f"MODEL/UPSAMPLE[,KEY=VALUE...], repeatable (default: {' '.join(DEFAULT_PAIRS)})",
    )
    p.add_argument("--minutes", type=float, default=3.0, help="wall time per run")
    p.add_argument("--max-steps", type=int, default=None, help="also stop each run here")
    p.add_argument("--preset", default="default", choices=list(PRESETS), help="demo preset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default=None, help="default: the fastest (see bench_train)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--steps-to-beat-identity", action="store_true")
    p.add_argument("--every", type=int, default=50, help="steps between evaluations")
    p.add_argument(
        "--full-curve", action="store_true", help="go on to --max-steps after the first win"
    )
    p.add_argument("--keep", default=None, help="keep translations and a page here (new folder)")
    p.add_argument("--json", default=None, help="also write the JSON to this file")
    args = p.parse_args()
    try:
        result = run(args)
    except CyclekitError as e:  # a bad flag or setting: one line, no traceback
        raise SystemExit(f"Error: {e}") from None
    text = json.dumps(result, indent=2)
    if args.json:
        with atomic_write(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    for line in result["warnings"]:
        print(f"Error: {line}", file=sys.stderr)
    if result["warnings"]:
        raise SystemExit(1)  # the JSON is printed, but some numbers are not what was asked


def run(args: argparse.Namespace) -> dict[str, Any]:
    pairs = [parse_pair(t) for t in (args.pair or DEFAULT_PAIRS)]
    if len({label for label, *_ in pairs}) < len(pairs):
        raise UsageError("--pair: the same pair is given twice")
    if not (math.isfinite(args.minutes) and args.minutes > 0):
        raise UsageError(f"--minutes must be > 0, got {args.minutes}")
    for flag in ("every", "max_steps", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    for _label, model, upsample, overrides in pairs:  # every setting checked before any work
        base, changes = base_config(args, Path("dataset"), Path("work"), args.minutes)
        model_config(base, model, upsample, overrides, **changes | {"precision": "fp32"})
    keep = Path(args.keep) if args.keep else None
    if keep is not None and keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise UsageError(f"--keep {keep}: exists and is not an empty folder; name a new one")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.precision:
        args.precision = resolve_precision(args.precision, device)
        why = "given with --precision"
    else:
        args.precision, why = fastest_precision(device)
    size, n_train, n_test, width, batch = PRESETS[args.preset]
    head: dict[str, Any] = {
        "benchmark": "steps_to_beat_identity" if args.steps_to_beat_identity else "equal_time",
        "pairs": [label for label, *_ in pairs],
        "seed": args.seed,
        "precision": args.precision,
        "precision_choice": why,
        "translate_precision": "fp32",
        "recipe": {
            "preset": args.preset,
            "image_size": size,
            "n_train": n_train,
            "n_test": n_test,
            "netG": "resnet_6blocks",
            "ngf": width,
            "ndf": width,
            "batch_size": batch,
            "lr": 4e-4,
            "lr_schedule": "constant",
            "source": "cyclekit.demo.train_config",
        },  # fmt: skip
        "machine": machine_info(device),
    }
    if not args.steps_to_beat_identity:
        head |= {"minutes": args.minutes, "max_steps": args.max_steps}
    with tempfile.TemporaryDirectory(prefix="cyclekit-compare-") as tmp:
        work = Path(tmp)
        if args.steps_to_beat_identity:
            body = steps_to_beat(args, pairs, work, keep)
        else:
            body = equal_time(args, pairs, work, keep)
    return head | body


if __name__ == "__main__":
    main()
