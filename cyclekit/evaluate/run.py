"""``cyclekit eval``: translate test images with a checkpoint and score the results, or score
two plain folders; the table and the JSON report.

The protocol, recorded in every report:

- every image (input, real target, ``--fake``/``--real``) is decoded upright as RGB
  (transparency on white) and resized to SIZE x SIZE px (256 by default) with Pillow's
  bicubic filter, as the official CycleGAN test script feeds its generator; the generator runs
  on that, in memory (nothing is written), and its output is scored at that size;
- features: see :mod:`cyclekit.evaluate.features` (the extractor resizes to 299x299 itself);
- FID, KID (mean ± std over random subsets) and SSIM: see :mod:`cyclekit.evaluate.metrics`;
- "doing nothing": the untranslated inputs scored against the same real target images, the
  score a generator has to beat.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cyclekit.evaluate import EvalError, features
from cyclekit.evaluate.metrics import (
    KID_MAX_SUBSET,
    KID_SEED,
    KID_SUBSETS,
    SSIM_SIGMA,
    SSIM_WINDOW,
    FeatureStats,
    feature_stats,
    fid,
    kid,
    ssim,
)

DEFAULT_SIZE = 256
MIN_SIZE = 16  # SSIM's 11 px window must fit, with some room
REPORT_KEY = "cyclekit_eval"
REPORT_VERSION = 1
DIRECTIONS = ("a2b", "b2a")
_KEYS = {"a2b": "G_ab", "b2a": "G_ba"}


@dataclass
class EvalSettings:
    size: int = DEFAULT_SIZE
    batch_size: int | None = None  # default: 32 on CUDA, 8 elsewhere
    device: str = "auto"
    precision: str = "fp32"  # the generators'; the feature network always runs in fp32
    kid_subsets: int = KID_SUBSETS
    progress: bool = True


# -- inputs ---------------------------------------------------------------------------------


def scan_folder(folder: Path, flag: str) -> list[Path]:
    """The images below ``folder`` (at least 2), each header read now: a damaged file stops
    the run before any work, with one line naming it."""
    from cyclekit.data.images import image_size, list_images

    folder = Path(folder)
    if not folder.exists():
        raise EvalError(f"{flag} {folder}: no such folder")
    if not folder.is_dir():
        raise EvalError(f"{flag} {folder}: not a folder")
    paths = list_images(folder)
    if len(paths) < 2:
        found = "no image" if not paths else "only one image"
        raise EvalError(f"{flag} {folder}: {found} found; FID and KID need at least 2")
    for path in paths:
        image_size(path)
    return paths


def dataset_folders(
    data: Path | None, real_a: Path | None, real_b: Path | None
) -> tuple[tuple[Path, str], tuple[Path, str]]:
    """(folder, flag) of domain A and of domain B: ``--real-a``/``--real-b``, else
    ``DATA/testA``/``DATA/testB``."""
    if data is None and (real_a is None or real_b is None):
        raise EvalError("give --data DIR (with testA/ and testB/ in it) or --real-a and --real-b")
    if data is not None and not data.is_dir():
        raise EvalError(f"--data {data}: no such folder")
    found = []
    for given, flag, sub in ((real_a, "--real-a", "testA"), (real_b, "--real-b", "testB")):
        if given is not None:
            found.append((given, flag))
        elif not (data / sub).is_dir():
            raise EvalError(f"--data {data}: has no {sub}/ folder; give {flag} DIR")
        else:
            found.append((data / sub, "--data"))
    return found[0], found[1]


def load_resized(path: Path, size: int) -> np.ndarray:
    """``path`` upright as (size, size, 3) uint8 RGB, resized with Pillow's bicubic filter."""
    from PIL import Image

    from cyclekit.data.images import decode_image

    pixels = decode_image(path, channels=3).pixels
    if pixels.shape[:2] == (size, size):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC))


def _batches(paths: list[Path], size: int, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(paths), batch_size):
        yield np.stack([load_resized(p, size) for p in paths[start : start + batch_size]])


# -- generators -----------------------------------------------------------------------------


def _held_directions(obj: dict[str, Any], path: Path) -> tuple[list[str], str]:
    """The directions a generator file holds, and why the others are missing."""
    from cyclekit.generator_io import GENERATOR_FORMAT, TRAIN_FORMAT, generator_from

    fmt = obj.get("format")
    if fmt == TRAIN_FORMAT and isinstance(obj.get("specs"), dict):
        held = [d for d in DIRECTIONS if _KEYS[d] in obj["specs"]]
        config = obj.get("config") if isinstance(obj.get("config"), dict) else {}
        if held:
            return held, f"a {config.get('model', 'one-sided')} checkpoint translates A to B only"
    elif fmt == GENERATOR_FORMAT and obj.get("direction") in DIRECTIONS:
        return [obj["direction"]], f"{path.name} holds only the {obj['direction']} generator"
    generator_from(obj, path, "a2b")  # raises its one-line error for anything broken
    raise EvalError(
        f"--checkpoint {path}: a single generator that does not record which way it "
        "translates; pass --direction a2b or b2a"
    )


def load_generators(checkpoint: Path, direction: str) -> tuple[dict[str, Any], dict[str, str]]:
    """``({direction: (model, info)}, {direction: why it is unavailable})``.

    ``direction`` ``both`` takes what the file holds (a CUT checkpoint: a2b only); a direction
    asked for by name must be there (:func:`~cyclekit.generator_io.load_generator`'s error).
    The file is read once, however many generators come from it."""
    from cyclekit.generator_io import generator_from, load_generator, read_checkpoint

    checkpoint = Path(checkpoint)
    if direction != "both":
        return {direction: load_generator(checkpoint, direction)}, {}
    obj = read_checkpoint(checkpoint)
    held, why = _held_directions(obj, checkpoint)
    loaded = {d: generator_from(obj, checkpoint, d) for d in held}
    return loaded, {d: why for d in DIRECTIONS if d not in held}


class Translator:
    """A generator as a function of (N, S, S, 3) uint8 batches, padded as it needs."""

    def __init__(self, model: Any, spec: dict[str, Any], device: Any, precision: str) -> None:
        from cyclekit.translate.tiling import make_runner

        self.spec = spec
        self.run = make_runner(model.to(device).eval(), device, precision)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        from PIL import Image

        from cyclekit.translate.batching import pad_image, padded_size
        from cyclekit.translate.tiling import from_model_output, to_model_input

        if self.spec["input_nc"] == 1:  # as decode_image(channels=1) would give it
            batch = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in batch])
            batch = batch[..., None]
        h, w = batch.shape[1:3]
        size = padded_size(h, w, self.spec)
        if size != (h, w):
            batch = np.stack([pad_image(im, size) for im in batch])
        return from_model_output(self.run(to_model_input(batch)))[:, :h, :w]


# -- the runs -------------------------------------------------------------------------------


def _compare(
    fake: np.ndarray, real: FeatureStats, real_feats: np.ndarray, subsets: int
) -> dict[str, Any]:
    """FID (against the real images' statistics) and KID (against their features)."""
    k = kid(fake, real_feats, subsets=subsets)
    return {
        "fid": fid(fake, real),
        "kid_mean": k.mean,
        "kid_std": k.std,
        "kid_subset_size": k.subset_size,
    }


def _direction_scores(
    input_feats: np.ndarray,
    fake_feats: np.ndarray,
    ssims: np.ndarray,
    real_stats: FeatureStats,
    real_feats: np.ndarray,
    kid_subsets: int,
) -> dict[str, Any]:
    return {
        **_compare(fake_feats, real_stats, real_feats, kid_subsets),
        "ssim_mean": float(ssims.mean()),
        "ssim_std": float(ssims.std()),
        "doing_nothing": {
            **_compare(input_feats, real_stats, real_feats, kid_subsets),
            "ssim_mean": 1.0,
        },
    }


def score_translations(
    inputs: np.ndarray,
    fakes: np.ndarray,
    real_features: np.ndarray,
    extractor: features.Extractor,
    kid_subsets: int = KID_SUBSETS,
    batch_size: int = 32,
) -> dict[str, Any]:
    """What ``cyclekit eval`` reports for one direction, from images in memory.

    ``inputs`` and their translations ``fakes``: (N, S, S, C) uint8, pair by pair, at the
    evaluation size; ``real_features``: ``extractor``'s features of the real target images
    (computed once, e.g. at the start of training). Returns ``fid``, ``kid_mean``, ``kid_std``,
    ``kid_subset_size``, ``ssim_mean``, ``ssim_std`` and the same scores of the untranslated
    inputs under ``doing_nothing``."""
    input_feats = features.extract(inputs, extractor, batch_size)
    fake_feats = features.extract(fakes, extractor, batch_size)
    return _direction_scores(
        input_feats,
        fake_feats,
        ssim(inputs, fakes),
        feature_stats(real_features),
        real_features,
        kid_subsets,
    )


def _device_and_batch(settings: EvalSettings) -> tuple[Any, str, int]:
    from cyclekit.devices import resolve_device, resolve_precision

    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    batch = settings.batch_size or (32 if device.type == "cuda" else 8)
    return device, precision, batch


def _protocol(extractor: features.Extractor, settings: EvalSettings, **extra: Any) -> dict:
    from cyclekit import __version__

    size = settings.size
    return {
        **extractor.protocol(),
        "size": [size, size],
        "resize": f"every image resized to {size}x{size} px with Pillow's bicubic filter "
        "before the generator and the feature network",
        "fid": "Frechet distance of Gaussians fitted to the features (float64)",
        "kid": {
            "kernel": "polynomial (x.y/d + 1)^3",
            "estimate": "unbiased MMD^2",
            "subsets": settings.kid_subsets,
            "subset_size": f"half the smaller set, at most {KID_MAX_SUBSET}",
            "seed": KID_SEED,
        },
        "structure": f"SSIM on BT.601 luminance, {SSIM_WINDOW}x{SSIM_WINDOW} Gaussian window "
        f"(sigma {SSIM_SIGMA}), K1 0.01, K2 0.03, range 255 (Wang et al. 2004)",
        **extra,
        "cyclekit": __version__,
    }


def _folder_pass(
    paths: list[Path],
    size: int,
    batch_size: int,
    extractor: features.Extractor,
    translators: dict[str, Translator],
    desc: str,
    progress: bool,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Features of the images, and of each translation of them with its SSIM to its input."""
    from tqdm import tqdm

    feats: list[np.ndarray] = []
    fakes: dict[str, list[np.ndarray]] = {d: [] for d in translators}
    scores: dict[str, list[np.ndarray]] = {d: [] for d in translators}
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for batch in _batches(paths, size, batch_size):
            feats.append(extractor(batch))
            for d, translate in translators.items():
                out = translate(batch)
                fakes[d].append(extractor(out))
                scores[d].append(ssim(batch, out))
            bar.update(len(batch))
    return (
        np.concatenate(feats),
        {d: np.concatenate(v) for d, v in fakes.items()},
        {d: np.concatenate(v) for d, v in scores.items()},
    )


def evaluate_checkpoint(
    checkpoint: Path,
    folder_a: tuple[Path, str],
    folder_b: tuple[Path, str],
    direction: str = "both",
    settings: EvalSettings | None = None,
    extractor: features.Extractor | None = None,
) -> dict[str, Any]:
    """Translate the images of A (and/or B) with ``checkpoint``'s generators and score them
    against the real images of the other domain; returns the report (see :func:`format_table`).

    ``folder_a``/``folder_b``: (folder, the flag it came from, for messages). ``extractor``:
    default the FID Inception network (downloaded once)."""
    settings = settings or EvalSettings()
    paths_a = scan_folder(*folder_a)
    paths_b = scan_folder(*folder_b)
    gens, missing = load_generators(checkpoint, direction)
    device, precision, batch = _device_and_batch(settings)
    if extractor is None:
        extractor = features.load_inception(device, settings.progress)
    translators = {
        d: Translator(m, info["spec"], device, precision) for d, (m, info) in gens.items()
    }
    passes = {}
    for name, paths, d in (("A", paths_a, "a2b"), ("B", paths_b, "b2a")):
        todo = {d: translators[d]} if d in translators else {}
        desc = f"domain {name}: features" + (f" + translating {d}" if todo else "")
        passes[name] = _folder_pass(
            paths, settings.size, batch, extractor, todo, desc, settings.progress
        )
    stats = {name: feature_stats(p[0]) for name, p in passes.items()}
    results: dict[str, Any] = {}
    for d in DIRECTIONS:
        src, dst = ("A", "B") if d == "a2b" else ("B", "A")
        if d not in gens:
            if d in missing:
                results[d] = {"available": False, "reason": missing[d]}
            continue
        inputs, fakes, scores = passes[src][0], passes[src][1][d], passes[src][2][d]
        reals = passes[dst][0]
        results[d] = {
            "available": True,
            "input_folder": str((folder_a if src == "A" else folder_b)[0]),
            "input_images": len(inputs),
            "target_folder": str((folder_b if src == "A" else folder_a)[0]),
            "target_images": len(reals),
            **_direction_scores(inputs, fakes, scores, stats[dst], reals, settings.kid_subsets),
        }
    return {
        REPORT_KEY: REPORT_VERSION,
        "mode": "checkpoint",
        "checkpoint": str(checkpoint),
        "protocol": _protocol(
            extractor,
            settings,
            device=str(device),
            generator_precision=precision,
            generators={d: info["spec"] for d, (_, info) in gens.items()},
        ),
        "results": results,
    }


def evaluate_folders(
    fake: Path,
    real: Path,
    settings: EvalSettings | None = None,
    extractor: features.Extractor | None = None,
) -> dict[str, Any]:
    """FID and KID of the images in ``fake`` against those in ``real`` (any method's outputs)."""
    settings = settings or EvalSettings()
    paths_fake = scan_folder(fake, "--fake")
    paths_real = scan_folder(real, "--real")
    device, _, batch = _device_and_batch(settings)
    if extractor is None:
        extractor = features.load_inception(device, settings.progress)
    found = {}
    for name, paths in (("fake", paths_fake), ("real", paths_real)):
        desc = f"{name}: features"
        found[name] = _folder_pass(
            paths, settings.size, batch, extractor, {}, desc, settings.progress
        )[0]
    result = {
        "fake_folder": str(fake),
        "fake_images": len(found["fake"]),
        "real_folder": str(real),
        "real_images": len(found["real"]),
        **_compare(
            found["fake"], feature_stats(found["real"]), found["real"], settings.kid_subsets
        ),
    }
    return {
        REPORT_KEY: REPORT_VERSION,
        "mode": "folders",
        "protocol": _protocol(extractor, settings, device=str(device)),
        "results": {"fake_vs_real": result},
    }


# -- output ---------------------------------------------------------------------------------


def _kid_text(r: dict[str, Any]) -> str:
    # Shown x100, as CycleGAN-family papers print it; the JSON keeps the raw value.
    return f"{100 * r['kid_mean']:6.2f} ± {100 * r['kid_std']:.2f}"


def format_table(report: dict[str, Any]) -> str:
    """The report as a few readable lines (the JSON holds everything)."""
    proto = report["protocol"]
    size = "x".join(str(s) for s in proto["size"])
    lines = []
    if report["mode"] == "folders":
        r = report["results"]["fake_vs_real"]
        lines.append(f"{'':14}{'images':>13}{'FID':>10}  {'KID x100':<15}")
        images = f"{r['fake_images']} / {r['real_images']}"
        lines.append(f"{'fake vs real':14}{images:>13}{r['fid']:10.2f}  {_kid_text(r):<15}")
        lines.append(f"images: {r['fake_folder']} (fake) / {r['real_folder']} (real)")
    else:
        head = f"{'':18}{'images':>13}{'FID':>10}  {'KID x100':<15}  {'SSIM':<14}"
        lines.append(head)
        for d, r in report["results"].items():
            if not r["available"]:
                lines.append(f"{d:<18}unavailable: {r['reason']}")
                continue
            images = f"{r['input_images']} -> {r['target_images']}"
            ssim_text = f"{r['ssim_mean']:.3f} ± {r['ssim_std']:.3f}"
            lines.append(
                f"{d + ' translated':18}{images:>13}{r['fid']:10.2f}  {_kid_text(r):<15}  "
                f"{ssim_text}"
            )
            n = r["doing_nothing"]
            lines.append(
                f"{'    doing nothing':18}{images:>13}{n['fid']:10.2f}  {_kid_text(n):<15}  "
                f"{n['ssim_mean']:.3f}"
            )
        lines.append("images: inputs -> real images of the target domain")
    sha = proto.get("weights_sha256")
    lines.append(
        f"features: {proto['feature_extractor']}"
        + (f"; weights sha256 {sha[:16]}..." if sha else "")
    )
    lines.append(
        f"all images resized to {size} px (bicubic); KID: mean ± std over "
        f"{proto['kid']['subsets']} subsets of half the smaller set (at most {KID_MAX_SUBSET})"
    )
    lines.append(
        "lower FID/KID is better. Below ~2000 images trust KID: FID is biased upward and "
        "depends on the image count."
    )
    if report["mode"] != "folders":
        lines.append("SSIM: 1 = all of the input's structure kept, 0 = none, < 0 = inverted.")
    return "\n".join(lines)


def _is_report(path: Path) -> bool:
    try:
        if path.stat().st_size > 10 << 20:
            return False
        with open(path, encoding="utf-8") as f:
            return isinstance(obj := json.load(f), dict) and REPORT_KEY in obj
    except (OSError, ValueError):
        return False


def check_report_target(path: Path, inputs: list[Path]) -> Path:
    """Refuse, before any work, a ``--json`` name that would replace an input, a folder or a
    file that is not an earlier report, or that lies where nothing can be written."""
    from cyclekit.files import check_writable_dir, refuse_overwrite

    target = refuse_overwrite(
        path,
        "--json",
        inputs=inputs,
        suffixes=(".json",),
        is_own=_is_report,
        own_kind="an earlier cyclekit eval report",
    )
    check_writable_dir(target.parent, "--json", EvalError)
    return target


def write_report(path: Path, report: dict[str, Any]) -> None:
    """The report as JSON, written under a temporary name and renamed."""
    from cyclekit.files import atomic_write

    try:
        with atomic_write(path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    except OSError as e:
        raise EvalError(f"--json {path}: cannot write ({e.strerror or e})") from None
