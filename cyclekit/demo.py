"""``cyclekit demo``: watch a CycleGAN learn an unpaired translation in minutes on a CPU.

Synthetic data with known ground truth -> the real trainer -> the real translate engine ->
a gallery (input / output / ground truth) and a PSNR score against doing nothing.
"""

from __future__ import annotations

import html
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cyclekit.training.config import TrainConfig

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


def _dataset(task: str, root: Path, size: int, n_train: int, n_test: int, seed: int) -> Path:
    """Reuse the synthetic dataset if it was made with these settings, else (re)make it."""
    from cyclekit.data.synth import make_synthetic

    target = root / task
    meta_file = target / "synth.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        same = (meta.get("size"), meta.get("n_train"), meta.get("n_test"), meta.get("seed"))
        if same == (size, n_train, n_test, seed):
            return target
    return make_synthetic(task, root, n_train, n_test, size, seed, force=target.exists())


def train_config(
    dataset: Path,
    out: Path,
    preset: str,
    minutes: float,
    device: str,
    seed: int,
    wandb_mode: str,
    max_steps: int | None,
) -> TrainConfig:
    """The demo's training preset: a small ResNet CycleGAN at the dataset's size, bf16 where
    the hardware has it, a constant learning rate (the run is cut by time, not epochs)."""
    size, _, _, width, batch = PRESETS[preset]
    return TrainConfig(
        data=str(dataset),
        name=f"demo_{dataset.name}",
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
<html lang="en"><head><meta charset="utf-8"><title>cyclekit demo</title>
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
    dst = out / "index.html"
    tmp = out / ".index.html.partial"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, dst)
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
) -> DemoResult:
    """Make the data, train, translate the test set, score it and write the gallery."""
    from cyclekit.data.images import decode_image, list_images
    from cyclekit.data.synth import SYNTH_TASKS, psnr
    from cyclekit.training.loop import train
    from cyclekit.translate.engine import TranslateOptions, load_model, translate_paths

    if task not in SYNTH_TASKS:
        raise ValueError(f"unknown demo task {task!r}; choose one of {', '.join(SYNTH_TASKS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    out = Path(out)
    size, n_train, n_test, _, _ = PRESETS[preset]
    print(f"[1/3] synthetic dataset {task}: {n_train} + {n_train} training images", file=sys.stderr)
    dataset = _dataset(task, Path(datasets_root), size, n_train, n_test, seed)

    print(f"[2/3] training for up to {minutes:g} minutes", file=sys.stderr)
    cfg = train_config(dataset, out, preset, minutes, device, seed, wandb_mode, max_steps)
    result = train(cfg, progress=progress, overwrite=True)  # the demo always starts afresh

    print("[3/3] translating the test set", file=sys.stderr)
    translated = out / "translated"
    model, info = load_model(result.run_dir / "G_ab.pt")
    opts = TranslateOptions(output_dir=translated, fmt="png", device=device, progress=progress)
    report = translate_paths([str(dataset / "testA")], model, info, opts)
    report.close()
    if report.failed:
        raise RuntimeError(f"{report.failed} test images failed to translate")
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
