"""``cyclekit demo``: watch a CycleGAN learn an unpaired translation in minutes on a CPU.

Synthetic data with known ground truth -> the real trainer -> the real translate engine ->
a gallery (input / output / ground truth) and a PSNR score against doing nothing.
"""

from __future__ import annotations

import html
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cyclekit.training.config import ConfigError, TrainConfig

MADE_BY = "cyclekit demo"  # recorded in synth.json: a dataset the demo may replace
# In every gallery the demo writes: an index.html without it is not the demo's to replace.
GALLERY_MARK = '<meta name="generator" content="cyclekit demo">'

# name -> (image size, images per train domain, test images, ngf/ndf, batch size)
PRESETS: dict[str, tuple[int, int, int, int, int]] = {
    "default": (64, 300, 40, 16, 4),  # ~3 min of training on a 2-core CPU
    "tiny": (32, 24, 6, 8, 2),  # seconds: for tests and CI smoke runs
}


@dataclass
class DemoResult:
    dataset: Path
    run_dir: Path
    gallery: Path
    steps: int
    psnr_model: float  # translated testA vs ground truth, dB
    psnr_identity: float  # testA itself vs ground truth ("doing nothing"), dB

    @property
    def gain(self) -> float:
        return self.psnr_model - self.psnr_identity


def _read_meta(target: Path) -> dict:
    try:
        meta = json.loads((target / "synth.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable or not JSON: not a dataset we made
        return {}
    return meta if isinstance(meta, dict) else {}


def _reusable(task: str, root: Path, size: int, n_train: int, n_test: int, seed: int) -> bool:
    """True if ``root/task`` holds the dataset these settings make; False if it can be made.

    An existing folder may be replaced only when the demo made it (synth.json says so): a
    dataset of the same name made by ``cyclekit datasets synth`` or by hand is never touched.
    """
    target = root / task
    meta = _read_meta(target)
    same = (meta.get("size"), meta.get("n_train"), meta.get("n_test"), meta.get("seed"))
    if meta.get("task") == task and same == (size, n_train, n_test, seed):
        return True
    if target.exists() and meta.get("made_by") != MADE_BY:
        raise ConfigError(
            f"--datasets-root {root}: {target} already holds another dataset, which the demo "
            "will not replace; pass another --datasets-root"
        )
    return False


def _check_out(out: Path) -> None:
    """The output folder can be written, and its index.html (if any) is a demo gallery."""
    from cyclekit.files import check_writable_dir

    check_writable_dir(out, "--out")
    page = out / "index.html"
    if page.exists():
        try:
            ours = GALLERY_MARK in page.read_text(encoding="utf-8", errors="replace")
        except OSError:
            ours = False
        if not ours:
            raise ConfigError(
                f"--out {out}: {page} exists and is not a cyclekit demo gallery; pick another "
                "--out folder"
            )


def train_config(
    dataset: Path,
    out: Path,
    preset: str,
    minutes: float,
    device: str,
    seed: int,
    wandb_mode: str,
    max_steps: int | None,
    model: str = "cyclegan",
) -> TrainConfig:
    """The demo's training preset: a small ResNet ``model`` (cyclegan, cut or fastcut) at the
    dataset's size, bf16 where the hardware has it, a constant learning rate (the run is cut by
    time, not epochs). The model's other defaults are its official ones."""
    size, _, _, width, batch = PRESETS[preset]
    return TrainConfig(
        model=model,
        data=str(dataset),
        name=f"demo_{dataset.name}" + ("" if model == "cyclegan" else f"_{model}"),
        checkpoints_dir=str(out / "checkpoints"),
        netG="resnet_6blocks",
        ngf=width,
        ndf=width,
        preprocess="none",  # the images already have the training size
        load_size=size,
        crop_size=size,
        batch_size=batch,
        lr=4e-4,  # twice the paper's: few minutes, small nets
        epochs=100_000,
        epochs_decay=0,
        max_minutes=minutes,
        max_steps=max_steps,
        seed=seed,
        device=device,
        precision="auto",
        # Minutes of small networks: compiling (about 2 min on a 2-core CPU) would eat the budget.
        compile=False,
        num_workers=0,  # 64-pixel PNGs decode faster than worker processes start
        log_every=10,
        sample_every=100,
        wandb_mode=wandb_mode,
        wandb_project="cyclekit-demo",
    )


def _rel(path: Path, start: Path) -> str:
    # A relative URL (the page works when the folders are moved together), percent-encoded.
    return html.escape(quote(Path(os.path.relpath(path, start)).as_posix()), quote=True)


def write_demo_gallery(
    out: Path, rows: list[tuple[Path, Path, Path, float]], psnr_model: float, psnr_id: float
) -> Path:
    """index.html: one row per test image: input, translation, ground truth, PSNR."""
    cells = []
    for src, pred, truth, score in rows:
        imgs = "".join(
            f'<td><a href="{_rel(p, out)}"><img src="{_rel(p, out)}" alt="{label}"></a></td>'
            for p, label in ((src, "input"), (pred, "translation"), (truth, "ground truth"))
        )
        cells.append(f"<tr><td>{html.escape(src.name)}</td>{imgs}<td>{score:.1f} dB</td></tr>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{GALLERY_MARK}<title>cyclekit demo</title>
<style>body{{font-family:sans-serif;margin:2em}} img{{width:128px;image-rendering:pixelated}}
td{{padding:4px;text-align:center}}</style></head><body>
<h1>cyclekit demo</h1>
<p>Translation PSNR against the ground truth: <b>{psnr_model:.2f} dB</b>;
doing nothing (the input itself): {psnr_id:.2f} dB; gain {psnr_model - psnr_id:+.2f} dB.</p>
<table><tr><th>file</th><th>input (A)</th><th>translation (A&rarr;B)</th>
<th>ground truth (B)</th><th>PSNR</th></tr>
{chr(10).join(cells)}
</table>
<script>
// Lets a headless browser test check that every picture really loaded.
window.addEventListener("load", () => {{
  const imgs = [...document.images];
  const ok = imgs.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
}});
</script></body></html>
"""
    from cyclekit.files import atomic_write

    dst = out / "index.html"
    with atomic_write(dst, "w") as f:
        f.write(page)
    return dst


def run_demo(
    task: str = "day2night",
    out: str | os.PathLike = "demo",
    datasets_root: str | os.PathLike = "datasets",
    minutes: float = 3.0,
    device: str = "auto",
    preset: str = "default",
    seed: int = 0,
    wandb_mode: str = "offline",
    max_steps: int | None = None,
    progress: bool = True,
    model: str = "cyclegan",
) -> DemoResult:
    """Make the data, train, translate the test set, score it and write the gallery."""
    from cyclekit.data.images import decode_image, list_images
    from cyclekit.data.synth import SYNTH_TASKS, make_synthetic, psnr
    from cyclekit.files import check_writable_dir
    from cyclekit.training.loop import train
    from cyclekit.training.tracking import check_wandb_mode
    from cyclekit.translate.engine import (
        TranslateError,
        TranslateOptions,
        load_model,
        translate_paths,
    )

    if task not in SYNTH_TASKS:
        raise ConfigError(f"unknown demo task {task!r}; choose one of {', '.join(SYNTH_TASKS)}")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if not (math.isfinite(minutes) and minutes > 0):
        raise ConfigError(f"--minutes must be a number > 0, got {minutes}")
    # Everything that can be checked is checked before the dataset is drawn.
    out, root = Path(out), Path(datasets_root)
    size, n_train, n_test, _, _ = PRESETS[preset]
    cfg = train_config(
        root / task, out, preset, minutes, device, seed, wandb_mode, max_steps, model
    )
    check_wandb_mode(wandb_mode)
    check_writable_dir(root, "--datasets-root")
    _check_out(out)
    reuse = _reusable(task, root, size, n_train, n_test, seed)

    print(f"[1/3] synthetic dataset {task}: {n_train} + {n_train} training images", file=sys.stderr)
    dataset = root / task
    if not reuse:
        make_synthetic(
            task, root, n_train, n_test, size, seed, force=dataset.exists(), made_by=MADE_BY
        )

    print(f"[2/3] training for up to {minutes:g} minutes", file=sys.stderr)
    result = train(cfg, progress=progress, overwrite=True)  # the demo always starts afresh

    print("[3/3] translating the test set", file=sys.stderr)
    translated = out / "translated"
    model, info = load_model(result.run_dir / "G_ab.pt")
    opts = TranslateOptions(output_dir=translated, fmt="png", device=device, progress=progress)
    report = translate_paths([str(dataset / "testA")], model, info, opts)
    report.close()
    if report.failed:
        raise TranslateError(
            f"{report.failed} test image(s) of {dataset / 'testA'} failed to translate into "
            f"{translated} (see the messages above)"
        )
    rows, ours, ident = [], [], []
    outputs = {p.stem: p for p in list_images(translated)}
    for src in list_images(dataset / "testA"):
        truth = dataset / "testA_gt" / src.name
        target = decode_image(truth).pixels
        score = psnr(decode_image(outputs[src.stem]).pixels, target)
        ours.append(score)
        ident.append(psnr(decode_image(src).pixels, target))
        rows.append((src, outputs[src.stem], truth, score))
    psnr_model, psnr_id = sum(ours) / len(ours), sum(ident) / len(ident)
    gallery = write_demo_gallery(out, rows, psnr_model, psnr_id)
    return DemoResult(dataset, result.run_dir, gallery, result.step, psnr_model, psnr_id)
