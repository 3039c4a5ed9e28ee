"""`cyclekit train` end to end: flags, config files, errors, W&B offline, real photos."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from cyclekit.cli import main
from cyclekit.files import safe_load
from tests.helpers import TINY_TRAIN_FLAGS, make_image_tree
from tests.wandb_reader import config_keys, history, wait_until_complete

TINY = TINY_TRAIN_FLAGS


def run(args, **kw):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kw)


def test_importing_the_cli_is_light():
    code = (
        "import sys, cyclekit, cyclekit.cli, cyclekit.cli.train;"
        "bad = [m for m in ('wandb', 'albumentations', 'torch') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_texts_teach():
    top = run(["--help"])
    assert top.exit_code == 0 and "train" in top.output and "Examples" not in top.output
    r = run(["train", "--help"])
    assert r.exit_code == 0
    for text in (
        "--resume",
        "auto|PATH",
        "--config",
        "Examples:",
        "--wandb-mode",
        "[default: 256]",
    ):
        assert text in r.output


def test_train_end_to_end_with_config_file_and_flag_override(tmp_path):
    data = make_image_tree(tmp_path / "data")
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(
        yaml.safe_dump(
            {
                "data": str(data),
                "max-steps": 5,
                "name": "fromfile",
                "checkpoints_dir": str(tmp_path / "ck"),
                "log_every": 1,
            }
        )
    )
    r = run(
        ["train", "--config", str(cfg_file), "--max-steps", "2", "--wandb-mode", "disabled", *TINY]
    )
    assert r.exit_code == 0, r.output
    run_dir = tmp_path / "ck" / "fromfile"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["max_steps"] == 2 and saved["data"] == str(data) and saved["ngf"] == 8
    assert safe_load(run_dir / "last.pt")["step"] == 2
    # --resume auto continues from last.pt without repeating the architecture flags.
    r = run(
        [
            "train",
            "--config",
            str(cfg_file),
            "--max-steps",
            "3",
            "--resume",
            "auto",
            "--wandb-mode",
            "disabled",
            "--no-progress",
            "--num-workers",
            "0",
        ]
    )
    assert r.exit_code == 0, r.output
    assert "resuming" in r.output and safe_load(run_dir / "last.pt")["step"] == 3


def test_user_errors_are_one_line_and_name_the_flag(tmp_path):
    data = make_image_tree(tmp_path / "data")
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("crop_sise: 3\n")
    cases = [
        (["train", "--config", str(bad_key)], "unknown setting 'crop_sise'"),
        (
            ["train", "--data", str(data), "--crop-size", "30"],
            "--crop-size 30 must be a multiple of 4",
        ),
        (
            ["train", "--data", str(data), "--crop-size", "20", "--load-size", "20"],
            "needs sides >= 24",
        ),
        (["train"], "give --data"),
        (["train", "--data", str(tmp_path / "nope"), "--name", "x"], "folder does not exist"),
        (
            ["train", "--data", str(tmp_path), "--checkpoints-dir", str(tmp_path / "ck")],
            "missing trainA/",
        ),
    ]
    for args, message in cases:
        r = CliRunner().invoke(main, args)
        assert r.exit_code != 0, args
        assert message in r.output, (args, r.output)
        assert "Traceback" not in r.output


def test_uncropped_sizes_are_checked_up_front(tmp_path):
    data = make_image_tree(tmp_path / "data", size=(48, 40))
    from PIL import Image

    Image.new("RGB", (20, 64)).save(data / "trainB" / "narrow.png")
    base = ["train", "--data", str(data), "--checkpoints-dir", str(tmp_path / "ck")]
    r = CliRunner().invoke(main, [*base, "--preprocess", "none"])
    assert r.exit_code != 0 and "narrow.png: 20x64 is too small" in r.output
    (data / "trainB" / "narrow.png").unlink()
    Image.new("RGB", (64, 64)).save(data / "trainB" / "square.png")
    r = CliRunner().invoke(main, [*base, "--preprocess", "none", "--batch-size", "2"])
    assert r.exit_code != 0 and "needs images of one size" in r.output
    r = CliRunner().invoke(main, [*base, "--preprocess", "none", "--gan-mode", "wgangp"])
    assert r.exit_code != 0 and "wgangp with --preprocess none needs images of one size" in r.output


def test_images_smaller_than_the_crop_are_upscaled_with_a_warning(tmp_path):
    data = make_image_tree(tmp_path / "data", size=(48, 40))
    from PIL import Image

    Image.new("RGB", (20, 30)).save(data / "trainA" / "tiny.png")
    args = [
        "train",
        "--data",
        str(data),
        "--preprocess",
        "crop",
        "--max-steps",
        "1",
        "--wandb-mode",
        "disabled",
        "--checkpoints-dir",
        str(tmp_path / "ck"),
        *TINY,
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "1 image(s) in domain A are smaller than --crop-size 32 and will be upscaled" in r.output
    assert "tiny.png" in r.output


def test_unreadable_files_reported_and_empty_domain_rejected(tmp_path):
    data = make_image_tree(tmp_path / "data")
    (data / "trainA" / "broken.jpg").write_text("not a jpeg")
    (data / "trainA" / "zero.png").write_bytes(b"")
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            str(data),
            "--max-steps",
            "1",
            "--wandb-mode",
            "disabled",
            "--checkpoints-dir",
            str(tmp_path / "ck"),
            *TINY,
        ],
    )
    assert r.exit_code == 0, r.output
    assert "skipping 2 unreadable file(s) in domain A" in r.output
    assert "broken.jpg: not an image" in r.output and "zero.png: file is empty" in r.output
    for f in (data / "trainB").iterdir():
        f.write_text("junk")
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            str(data),
            "--checkpoints-dir",
            str(tmp_path / "ck"),
            "--overwrite",
            *TINY,
        ],
    )
    assert r.exit_code == 1 and "domain B: no readable image" in r.output


def test_wandb_offline_records_losses_lr_images_and_config(tmp_path):
    data = make_image_tree(tmp_path / "data")
    args = [
        "train",
        "--data",
        str(data),
        "--name",
        "wb",
        "--checkpoints-dir",
        str(tmp_path / "ck"),
        "--max-steps",
        "4",
        "--log-every",
        "2",
        "--sample-every",
        "2",
        "--wandb-mode",
        "offline",
        "--tag",
        "test",
        *TINY,
    ]
    r = run(args)
    assert r.exit_code == 0, r.output
    run_dir = tmp_path / "ck" / "wb"
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    assert f"upload later with: wandb sync {files[0].parent}" in r.output
    wait_until_complete(files[0])
    rows = history(files[0])
    assert [int(row["_step"]) for row in rows] == [2, 4]
    for key in (
        "loss/G",
        "loss/D_a",
        "loss/D_b",
        "loss/cycle_a",
        "loss/idt_b",
        "lr/G",
        "lr/D",
        "perf/images_per_s",
        "samples/_type",
    ):
        assert all(key in row for row in rows), key
    assert {"crop_size", "ngf", "gan_mode", "lambda_identity"} <= config_keys(files[0])
    assert list((files[0].parent / "files" / "media" / "images").glob("samples_*.png"))
    run_id = safe_load(run_dir / "last.pt")["wandb_run_id"]
    assert run_id and run_id in files[0].name
    # Resuming continues the same W&B run id at the next steps.
    at = args.index("--max-steps") + 1
    r = run([*args[:at], "6", *args[at + 1 :], "--resume", "auto"])
    assert r.exit_code == 0, r.output
    resumed = [f for f in (run_dir / "wandb").glob("offline-run-*/run-*.wandb") if f != files[0]]
    assert len(resumed) == 1 and run_id in resumed[0].name
    wait_until_complete(resumed[0])
    assert [int(row["_step"]) for row in history(resumed[0])] == [6]


def test_real_horse2zebra_photos_with_a_grayscale_zebra(tmp_path, horse2zebra):
    data = tmp_path / "h2z"
    picks = {
        "trainA": sorted((horse2zebra / "trainA").iterdir())[:3],
        "trainB": [
            horse2zebra / "trainB" / "n02391049_226.jpg",  # a mode-L image
            *sorted((horse2zebra / "trainB").iterdir())[:2],
        ],
        "testA": sorted((horse2zebra / "testA").iterdir())[:1],
        "testB": sorted((horse2zebra / "testB").iterdir())[:1],
    }
    for sub, files in picks.items():
        (data / sub).mkdir(parents=True)
        for f in files:
            shutil.copy(f, data / sub / f.name)
    r = run(
        [
            "train",
            "--data",
            str(data),
            "--name",
            "h2z",
            "--checkpoints-dir",
            str(tmp_path / "ck"),
            "--max-steps",
            "3",
            "--sample-every",
            "3",
            "--wandb-mode",
            "disabled",
            "--ngf",
            "8",
            "--ndf",
            "8",
            "--load-size",
            "72",
            "--crop-size",
            "64",
            "--num-workers",
            "0",
            "--no-progress",
        ]
    )
    assert r.exit_code == 0, r.output
    grid = Path(tmp_path / "ck" / "h2z" / "samples" / "step_00000003.png")
    from PIL import Image

    assert Image.open(grid).size == (6 * 64 + 7 * 2, 64 + 2 * 2)


def test_existing_run_is_not_overwritten_by_accident(tmp_path):
    data = make_image_tree(tmp_path / "data")
    base = [
        "train",
        "--data",
        str(data),
        "--name",
        "keep",
        "--checkpoints-dir",
        str(tmp_path / "ck"),
        "--max-steps",
        "2",
        "--wandb-mode",
        "disabled",
        *TINY,
    ]
    r = run(base)
    assert r.exit_code == 0
    # A step limit is not the end of the run: the message says how to go on.
    assert "stopped at step 2, limit reached" in r.output and "--resume auto" in r.output
    before = (tmp_path / "ck" / "keep" / "last.pt").read_bytes()
    r = CliRunner().invoke(main, base)
    assert r.exit_code == 1 and "already holds a run" in r.output and "--overwrite" in r.output
    assert (tmp_path / "ck" / "keep" / "last.pt").read_bytes() == before
    assert run([*base, "--overwrite"]).exit_code == 0


def test_resume_drops_the_step_limit_and_can_switch_data_source(tmp_path):
    data = make_image_tree(tmp_path / "data")
    ck = str(tmp_path / "ck")
    first = [
        "train",
        "--data-a",
        str(data / "trainA"),
        "--data-b",
        str(data / "trainB"),
        "--name",
        "lim",
        "--checkpoints-dir",
        ck,
        "--max-steps",
        "2",
        "--epochs",
        "1",
        "--epochs-decay",
        "1",
        "--wandb-mode",
        "disabled",
        *TINY,
    ]
    assert run(first).exit_code == 0
    # --max-steps belonged to the first invocation; --data replaces --data-a/--data-b.
    r = run(
        [
            "train",
            "--data",
            str(data),
            "--name",
            "lim",
            "--checkpoints-dir",
            ck,
            "--resume",
            "auto",
            "--no-progress",
            "--num-workers",
            "0",
        ]
    )
    assert r.exit_code == 0, r.output
    assert "done: step 10" in r.output  # 5 steps x (1 + 1) epochs: ran to the end
