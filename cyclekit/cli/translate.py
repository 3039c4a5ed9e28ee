"""``cyclekit translate`` and ``cyclekit export``: click options over importable functions.

Only click is imported at module level; torch and the engine load when a command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from cyclekit.cli.common import CONTEXT, DEVICE, choice, leave, user_errors

DIRECTION = choice(["a2b", "b2a"])
# Kept equal to cyclekit.translate.batching.MIN_TILE and image_io.MAX_PIXELS (a test checks):
# importing them here would load torch for `--help`.
MIN_TILE = 256
MAX_MEGAPIXELS = 400
# Kept equal to cyclekit.translate.video.CODECS and choices.TEMPORAL_MODES (a test checks).
VIDEO_CODECS = ["h264", "hevc", "vp9", "av1", "ffv1"]
TEMPORAL = ["none", "stats", "flow"]
DEFAULT_TEMPORAL = "flow"


@click.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "-o",
    "--output",
    "output_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for the results (created). Never the inputs' folder or one above it; "
    "a new subfolder of it is fine.",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Generator file: a cyclekit last.pt / G_ab.pt, or an official .pth.",
)
@click.option(
    "--model",
    "model_name",
    metavar="NAME",
    help="An official pretrained model by name, e.g. horse2zebra, style_monet "
    "(downloaded once into ~/.cache/cyclekit or $CYCLEKIT_CACHE).",
)
@click.option(
    "--direction",
    type=DIRECTION,
    help="a2b or b2a: which generator of a training checkpoint (last.pt) to use.",
)
@click.option(
    "--max-size",
    type=click.IntRange(min=1),
    metavar="N",
    help="Run the model with the long side at most N px (faster, less detail), keeping the "
    "aspect ratio (no side below 4 px).",
)
@click.option(
    "--resize",
    metavar="WxH",
    help="Run the model at exactly WxH px, e.g. 256x256 (not with --max-size).",
)
@click.option(
    "--keep-resized",
    is_flag=True,
    help="With --max-size/--resize: keep the model-size result, don't resize back.",
)
@click.option(
    "--tile",
    type=int,
    metavar="N",
    help=f"Translate in overlapping N-px tiles (less memory), N >= {MIN_TILE}: smaller tiles "
    "change the result visibly. Without it, images too large for memory are tiled "
    f"automatically. Scans up to {MAX_MEGAPIXELS} megapixels are accepted.",
)
@click.option(
    "--format",
    "fmt",
    type=choice(["jpg", "png", "webp"]),
    help="Output format. Default: the same as each input, under the same name. With a "
    "format, an input in another one gets .FORMAT after its name (x.png -> x.png.webp).",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=95,
    show_default=True,
    help="JPEG/WebP quality.",
)
@click.option(
    "--skip-existing",
    is_flag=True,
    help="Skip inputs whose output (by the naming rule) an earlier run wrote: resumes an "
    "interrupted run.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.jsonl",
    help="Write one JSON line per input (status, reason, seconds of work) to a new "
    ".jsonl file (or an earlier report).",
)
@click.option(
    "--gallery",
    is_flag=True,
    help="Write OUTPUT/index.html showing inputs and outputs side by side.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Images of the same size run together. Default: 8 on CUDA; on a CPU 1 in torch "
    "(fastest there), two per core with OpenVINO (they run side by side while the next "
    "images are decoded).",
)
@click.option("--device", type=DEVICE, default="auto", show_default=True, help="Where to run.")
@click.option(
    "--precision",
    type=choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="auto: bf16 on CPU and CUDA (2-3x faster, visually identical); fp32: exact.",
)
@click.option(
    "--backend",
    type=choice(["auto", "torch", "openvino"]),
    default="auto",
    show_default=True,
    help="What runs the generator. auto: OpenVINO on a CPU when installed (pip install "
    "'cyclekit[fast]'; about 2x faster than torch in bf16; the generator is converted once, "
    "then cached), else torch. Very large images (tiled) and videos always run in torch.",
)
@click.option(
    "--num-workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Threads decoding and encoding images while the model runs.",
)
@click.option(
    "--memory-budget",
    "memory_budget_mb",
    type=click.IntRange(min=16),
    metavar="MB",
    help="Memory for the model's activations; larger images are tiled. "
    "Default: 1536 on CPU, half the free GPU memory.",
)
@click.option(
    "--codec",
    type=choice(VIDEO_CODECS),
    default="h264",
    show_default=True,
    help="Videos: the encoder. A video keeps its name when its container holds the codec "
    "(.mp4/.mov/.mkv for h264), else gets the codec's after it (x.webm -> x.webm.mp4).",
)
@click.option(
    "--crf",
    type=int,
    metavar="N",
    help="Videos: quality, lower is better (h264 0-51, default 18; hevc 20; vp9/av1 0-63, "
    "31/30; ffv1 is lossless).",
)
@click.option(
    "--temporal",
    type=choice(TEMPORAL),
    default=DEFAULT_TEMPORAL,
    show_default=True,
    help="Videos: against flicker. flow: blend each frame with the previous result moved "
    "along the input's optical flow, where reliable (plus stats); stats: instance-norm "
    "statistics smoothed over frames; none: each frame alone. All cost about the same.",
)
@click.option(
    "--frames",
    "frames_dir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Videos: also write the translated frames as PNGs, in DIR/<the video's output "
    "path>/000001.png...",
)
@click.option(
    "--no-video",
    is_flag=True,
    help="With --frames: write only the frames, no video.",
)
@click.option(
    "--sequence",
    is_flag=True,
    help="Each INPUT folder is one clip of frames (its images in name order), written as a "
    "video FOLDER.mp4, with the --temporal smoothing of a video.",
)
@click.option(
    "--fps",
    type=float,
    default=25.0,
    show_default=True,
    help="With --sequence: the frame rate of the clip.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def translate(
    inputs: tuple[str, ...],
    checkpoint: Path | None,
    model_name: str | None,
    direction: str | None,
    resize: str | None,
    codec: str,
    crf: int | None,
    temporal: str,
    frames_dir: Path | None,
    no_video: bool,
    sequence: bool,
    fps: float,
    **options: Any,
) -> None:
    """Stylise images and videos: every INPUT (file, folder or glob) is written to OUTPUT,
    at its original size and orientation, keeping alpha, EXIF and colour profile.

    \b
    Examples:
      cyclekit translate photos/ -o zebras/ --model horse2zebra
      cyclekit translate photos/ -o out/ --checkpoint checkpoints/h2z/last.pt --direction a2b
      cyclekit translate 'shoot/**/*.jpg' -o out/ --checkpoint latest_net_G.pth --gallery
      cyclekit translate big.tif -o out/ --checkpoint G_ab.pt --tile 1024 --format png
      cyclekit translate photos/ -o out/ --checkpoint G_ab.pt --skip-existing   # resume
      cyclekit translate clip.mp4 -o out/ --model style_monet --crf 20

    Folders are searched recursively and their subfolders recreated in OUTPUT. An output
    has its input's path below the folder (or glob) it was found in, or a file's own name,
    whatever other files exist; two inputs that would share one output name are both
    reported, never renamed. A file that cannot be translated is reported on one line and
    the rest go on; the exit status is 0 only if every file succeeded. Nothing is ever
    written over an input or over a file in OUTPUT that an earlier run did not write.

    Videos (.mp4 .mov .mkv .webm .avi .m4v, given as files or globs; needs
    pip install 'cyclekit[video]') keep their size, frame timing, rotation and frame count;
    their audio is copied unchanged.
    """
    from cyclekit.translate.engine import (
        TranslateOptions,
        open_model,
        parse_size,
        translate_paths,
    )
    from cyclekit.translate.video import VideoOptions

    try:
        with user_errors():
            video = VideoOptions(
                codec=codec,
                crf=crf,
                temporal=temporal,
                frames_dir=frames_dir,
                write_video=not no_video,
                sequence=sequence,
                fps=fps,
            )
            opts = TranslateOptions(
                resize=parse_size(resize) if resize else None, video=video, **options
            )
            model, info = open_model(checkpoint, model_name, direction, opts)
            report = translate_paths(inputs, model, info, opts)
    except KeyboardInterrupt:
        click.echo(
            "interrupted: finished images and videos are complete; rerun with --skip-existing "
            "to resume",
            err=True,
        )
        sys.exit(130)
    click.echo(report.summary(), err=True)
    if opts.gallery:
        click.echo(f"gallery: {opts.output_dir / 'index.html'}", err=True)
    leave(report.exit_code)


@click.command(context_settings=CONTEXT)
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Generator file: a cyclekit last.pt / G_ab.pt, or an official .pth.",
)
@click.option("--direction", type=DIRECTION, help="a2b or b2a, for a training checkpoint.")
@click.option(
    "--format",
    "fmt",
    required=True,
    type=choice(["onnx", "torchscript", "official"]),
    help="onnx / torchscript: run without cyclekit, on any image height and width; "
    "official: a latest_net_G.pth-style state_dict for the official CycleGAN code.",
)
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write: a new one, or an earlier export in the same format (never the "
    "checkpoint or another file).",
)
def export(checkpoint: Path, direction: str | None, fmt: str, output: Path) -> None:
    """Export a generator for use without cyclekit.

    An ONNX or TorchScript export takes a float32 (N, C, H, W) tensor in [-1, 1], any H and
    W (1x1 included, every architecture), and returns the translated image in [-1, 1] at the
    same size.

    \b
    Examples:
      cyclekit export --checkpoint checkpoints/h2z/last.pt --direction a2b \\
          --format torchscript -o h2z.ts
      cyclekit export --checkpoint latest_net_G.pth --format onnx -o h2z.onnx
      cyclekit export --checkpoint checkpoints/h2z/G_ab.pt --format official -o latest_net_G_A.pth
    """
    from cyclekit.translate.engine import load_model
    from cyclekit.translate.export import check_export_target, export_generator

    with user_errors():
        check_export_target(output, fmt, checkpoint)  # before loading: fail fast
        model, info = load_model(checkpoint, None, direction)
        export_generator(model, info, fmt, output)
    click.echo(f"wrote {output}", err=True)
