"""`cyclekit train` end to end: flags, config files, errors, W&B offline, real photos."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cyclekit.cli import main
from cyclekit.files import safe_load
from cyclekit.training import tracking
from cyclekit.training.config import ConfigError, TrainConfig, load_yaml_config
from tests.helpers import TINY_TRAIN_FLAGS, make_image_tree
from tests.wandb_reader import config_keys, history, wait_until_complete

TINY = TINY_TRAIN_FLAGS


def run(args, **kw):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kw)


@pytest.fixture
def fake_train(monkeypatch):
    """Stand in for the trainer: the command's parsing and checks run, no model is built.

    Returns the list of configs the command would have trained.
    """
    calls = []

    def train(cfg, resume=None, explicit=None, progress=True, overwrite=False):
        calls.append(types.SimpleNamespace(cfg=cfg, resume=resume, explicit=explicit))
        return types.SimpleNamespace(
            run_dir=cfg.run_dir, ranks_in_sync=None, is_main=True, interrupted=False,
            finished=True, step=0,
        )  # fmt: skip

    module = types.ModuleType("cyclekit.training.loop")
    module.train = train
    monkeypatch.setitem(sys.modules, "cyclekit.training.loop", module)
    return calls


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def no_traceback(r) -> bool:
    return r.exception is None or isinstance(r.exception, SystemExit)


def fresh_python(code: str) -> str:
    """What ``code`` prints in a new interpreter (this one has torch loaded already)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout


def test_importing_the_cli_is_light():
    code = (
        "import sys, cyclekit, cyclekit.cli, cyclekit.cli.train;"
        "bad = [m for m in ('wandb', 'albumentations', 'torch') if m in sys.modules];"
        "print(','.join(bad))"
    )
    assert fresh_python(code).strip() == ""


def test_train_help_lists_every_choice_without_importing_torch():
    # --help shows each setting's allowed values; they once came from the torch modules,
    # and help took seconds.
    code = (
        "import sys; from click.testing import CliRunner; from cyclekit.cli import main;"
        "r = CliRunner().invoke(main, ['train', '--help']); print(r.exit_code);"
        "print(r.output); print('torch loaded' if 'torch' in sys.modules else 'no torch')"
    )
    out = fresh_python(code)
    lines = out.strip().splitlines()
    assert lines[0] == "0" and lines[-1] == "no torch"
    flat = " ".join(out.split())
    for listed in ("instance|batch|none", "transpose|resize-conv|antialias", "fp32|bf16|fp16|auto"):
        assert listed in flat


def test_the_choice_lists_are_the_ones_the_code_uses():
    from cyclekit import choices, devices
    from cyclekit.models import init, norm, resnet

    assert devices.PRECISIONS is choices.PRECISIONS and devices.DEVICES is choices.DEVICES
    assert norm.NORMS is choices.NORMS and init.INITS is choices.INITS
    assert resnet.UPSAMPLES is choices.UPSAMPLES and resnet.DOWNSAMPLES is choices.DOWNSAMPLES


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
        (
            ["train", "--data", str(tmp_path / "nope"), "--name", "x", "--device", "cpu"],
            f"--data {tmp_path / 'nope'}: folder does not exist",
        ),
        (
            ["train", "--data-a", str(tmp_path / "nope"), "--data-b", str(data / "trainB")]
            + ["--checkpoints-dir", str(tmp_path / "ck"), "--device", "cpu"],
            f"--data-a {tmp_path / 'nope'}: folder does not exist",
        ),
        (
            ["train", "--data", str(tmp_path), "--checkpoints-dir", str(tmp_path / "ck")],
            "missing trainA/",
        ),
    ]
    for args, message in cases:
        r = CliRunner().invoke(main, args)
        assert r.exit_code != 0, args
        assert message in r.output, (args, r.output)
        assert r.exception is None or isinstance(r.exception, SystemExit), (args, r.exception)
        errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, (args, r.output)


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
    ):
        assert all(key in row for row in rows), key
    # wandb >= 0.18 records an image as nested keys, older versions as one JSON value.
    assert all("samples/_type" in row or "image-file" in row.get("samples", "") for row in rows)
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


# ------------------------------------------------------------------------------------------------
# Flag types (click 8.1 and later), the device flag, YAML types


def test_channel_flags_are_ints_on_every_click(tmp_path, fake_train):
    data = make_image_tree(tmp_path / "data")
    base = ["train", "--data", str(data), "--checkpoints-dir", str(tmp_path / "ck")]
    assert run(base).exit_code == 0
    assert fake_train[-1].cfg.input_nc == 3 and fake_train[-1].cfg.output_nc == 3
    r = run([*base, "--input-nc", "1", "--output-nc", "1"])
    cfg = fake_train[-1].cfg
    assert r.exit_code == 0 and (cfg.input_nc, cfg.output_nc) == (1, 1)
    assert isinstance(cfg.input_nc, int)
    r = CliRunner().invoke(main, [*base, "--input-nc", "2"])
    assert (
        r.exit_code == 2
        and "--input-nc" in r.output
        and "'2' is not 1 (grayscale) or 3" in r.output
    )
    assert len(fake_train) == 2


def test_device_and_choice_flags_take_any_case(tmp_path, fake_train):
    data = make_image_tree(tmp_path / "data")
    base = ["train", "--data", str(data), "--checkpoints-dir", str(tmp_path / "ck")]
    flags = ["--device", "CUDA:1", "--norm", "BATCH", "--precision", "BF16", "--gan-mode"]
    flags += ["Hinge", "--wandb-mode", "Disabled", "--netG", "UNET_256"]
    r = run([*base, *flags])
    assert r.exit_code == 0, r.output
    cfg = fake_train[-1].cfg
    assert (cfg.device, cfg.norm, cfg.precision) == ("cuda:1", "batch", "bf16")
    assert cfg.gan_mode == "hinge"
    assert (cfg.wandb_mode, cfg.netG) == ("disabled", "unet_256")
    for bad in ("gpu", "cuda:x", "cuda1"):
        r = CliRunner().invoke(main, [*base, "--device", bad])
        assert r.exit_code == 2 and "--device" in r.output and no_traceback(r), bad
    assert len(fake_train) == 1


def test_yaml_values_are_coerced_when_unambiguous(tmp_path, fake_train):
    data = make_image_tree(tmp_path / "data")
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(
        f"data: {data}\ncrop_size: 32.0\nload-size: '36'\nlr: 2e-4\nbatch_size: '4'\n"
        "no_flip: 'no'\ndropout: yes\ncompile: 'True'\ntags: solo\nname: 2024\n"
        "max_minutes: 1\nnetG: ResNet_6Blocks\ndevice: CPU\nmax-steps: 1e3\n"
    )
    r = run(["train", "--config", str(cfg_file), "--checkpoints-dir", str(tmp_path / "ck")])
    assert r.exit_code == 0, r.output
    cfg = fake_train[-1].cfg
    assert cfg.crop_size == 32 and type(cfg.crop_size) is int and cfg.load_size == 36
    assert cfg.lr == 2e-4 and type(cfg.lr) is float and cfg.batch_size == 4
    assert cfg.no_flip is False and cfg.dropout is True and cfg.compile is True
    assert cfg.tags == ["solo"] and cfg.name == "2024" and cfg.max_minutes == 1.0
    assert (cfg.netG, cfg.device, cfg.max_steps) == ("resnet_6blocks", "cpu", 1000)


@pytest.mark.parametrize(
    "line, message",
    [
        ("crop_size: 32.5", "crop_size: 32.5 is not an integer"),
        ("batch_size: four", "batch_size: 'four' is not an integer"),
        ("batch_size: true", "batch_size: True is not an integer"),
        ("lr: fast", "lr: 'fast' is not a number"),
        ("no_flip: 'maybe'", "no_flip: 'maybe' is not true or false"),
        ("no_flip: 1", "no_flip: 1 is not true or false"),
        ("name: [a, b]", "name: ['a', 'b'] is not a string"),
        ("name: null", "name: None is not a string"),
        ("tags: {a: 1}", "tags: {'a': 1} is not a list of strings"),
        ("crop_size: 32\ncrop-size: 64", "setting 'crop_size' is given twice"),
        ("crop_sise: 32", "unknown setting 'crop_sise'"),
        ("- crop_size", "a config file must be a mapping"),
        ("crop_size: [", "cannot read config"),
    ],
)
def test_yaml_values_of_the_wrong_type_are_refused_naming_key_value_and_type(
    tmp_path, fake_train, line, message
):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(line + "\n")
    r = CliRunner().invoke(main, ["train", "--config", str(cfg_file), "--data", str(tmp_path)])
    assert r.exit_code == 1 and no_traceback(r), r.output
    errors = [x for x in r.output.splitlines() if x.startswith("Error:")]
    assert len(errors) == 1 and str(cfg_file) in errors[0] and message in errors[0], r.output
    assert fake_train == []


def test_a_binary_config_file_is_one_line(tmp_path):
    cfg_file = tmp_path / "photo.yaml"
    cfg_file.write_bytes(b"\xff\xd8\xff\xe0 not text")
    with pytest.raises(ConfigError, match="photo.yaml: cannot read config .not a UTF-8 text"):
        load_yaml_config(cfg_file)


def test_resumed_configs_are_type_checked_too():
    cfg = TrainConfig.from_dict({"data": "d", "crop_size": 32.0, "lr": "1e-3", "no-flip": "off"})
    assert (cfg.crop_size, cfg.lr, cfg.no_flip) == (32, 1e-3, False)
    with pytest.raises(ConfigError, match="checkpoint config: ngf: '8x' is not an integer"):
        TrainConfig.from_dict({"data": "d", "ngf": "8x"}, "checkpoint config")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--load-size", "100000"], "--load-size 100000 is too large (at most 8192)"),
        (["--ngf", "100000"], "--ngf 100000 is too large"),
        (["--netD", "n_layers", "--n-layers-D", "40"], "--n-layers-D 40 is too large"),
        (["--seed", str(2**40)], "--seed 1099511627776 is too large"),
        (["--max-minutes", "nan"], "--max-minutes must be a finite number"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--beta1", "1"], "--beta1 must be in [0, 1)"),
        (["--name", ""], "--name '' must be a plain folder name"),
        (["--name", "../up"], "--name '../up' must be a plain folder name"),
        (["--data-a", "x"], "--data-b is missing"),
    ],
)
def test_values_that_would_crash_or_escape_are_refused_up_front(
    tmp_path, fake_train, flags, message
):
    data = make_image_tree(tmp_path / "data")
    base = ["train", "--checkpoints-dir", str(tmp_path / "ck")]
    if "--data-a" not in flags:
        base += ["--data", str(data)]
    r = CliRunner().invoke(main, [*base, *flags])
    assert r.exit_code == 1 and no_traceback(r) and message in r.output, r.output
    assert r.output.count("\n") == 1 and fake_train == [] and not (tmp_path / "ck").exists()


# ------------------------------------------------------------------------------------------------
# Resume, and checks made before anything is written


def test_resume_takes_the_data_from_the_checkpoint(tmp_path):
    data = make_image_tree(tmp_path / "data")
    ck = str(tmp_path / "ck")
    first = ["train", "--data", str(data), "--name", "r", "--checkpoints-dir", ck, "--max-steps"]
    assert run([*first, "1", "--wandb-mode", "disabled", *TINY]).exit_code == 0
    r = run(["train", "--name", "r", "--checkpoints-dir", ck, "--resume", "auto", "--max-steps"]
            + ["2", "--no-progress", "--num-workers", "0"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "resuming" in r.output and safe_load(tmp_path / "ck" / "r" / "last.pt")["step"] == 2
    assert yaml.safe_load((tmp_path / "ck" / "r" / "config.yaml").read_text())["data"] == str(data)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--resume", "auto", "--overwrite"], "give only one"),
        (["--resume", "atuo"], "--resume atuo: no such file (give auto or a last.pt path)"),
        (["--checkpoints-dir", "FILE/sub"], "FILE is a file, not a folder"),
    ],
)
def test_preflight_errors_come_before_anything_is_written(tmp_path, fake_train, flags, message):
    data = make_image_tree(tmp_path / "data")
    (tmp_path / "FILE").write_text("mine")
    flags = [f.replace("FILE", str(tmp_path / "FILE")) for f in flags]
    message = message.replace("FILE", str(tmp_path / "FILE"))
    r = CliRunner().invoke(main, ["train", "--data", str(data), *flags])
    assert r.exit_code == 1 and no_traceback(r) and message in r.output, r.output
    assert r.output.count("\n") == 1 and fake_train == []
    assert (tmp_path / "FILE").read_text() == "mine"


def test_wgangp_under_torchrun_is_refused_before_training(tmp_path, fake_train, monkeypatch):
    from cyclekit.training.prepare import check_distributed_config

    cfg = TrainConfig(data="d", gan_mode="wgangp")
    check_distributed_config(cfg, 1)  # one process: fine
    check_distributed_config(TrainConfig(data="d"), 4)  # other modes: fine
    with pytest.raises(ConfigError, match="--gan-mode wgangp does not work with torchrun"):
        check_distributed_config(cfg, 2)
    data = make_image_tree(tmp_path / "data")
    monkeypatch.setenv("WORLD_SIZE", "2")
    r = CliRunner().invoke(main, ["train", "--data", str(data), "--gan-mode", "wgangp"])
    assert r.exit_code == 1 and "double backward" in r.output and fake_train == []


# ------------------------------------------------------------------------------------------------
# W&B: never on the network in tests; unreachable hosts are closed local ports


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    """A configured API key, no WANDB_MODE override, and a W&B host that refuses connections."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no real ~/.netrc
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", closed_port_url())
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)


def test_auto_with_a_key_but_no_network_falls_back_offline_quickly(tmp_path, wandb_env, capfd):
    run_dir = tmp_path / "my runs" / "a"  # a space: the printed sync command must be quoted
    run_dir.mkdir(parents=True)
    t0 = time.monotonic()
    tracker = tracking.start_tracker("auto", "p", None, "a", {"x": 1}, run_dir)
    assert time.monotonic() - t0 < 15
    try:
        err = capfd.readouterr().err
        assert "W&B is not reachable (127.0.0.1:" in err and "logging offline instead" in err
        offline = next((run_dir / "wandb").glob("offline-run-*"))
        assert f"wandb sync {shlex.quote(str(offline))}" in err
        assert shlex.split(err.split("wandb sync ", 1)[1].splitlines()[0]) == [str(offline)]
    finally:
        tracker.finish()


def test_online_without_credentials_is_one_line_before_anything_is_written(
    tmp_path, wandb_env, fake_train, monkeypatch
):
    monkeypatch.delenv("WANDB_API_KEY")
    data = make_image_tree(tmp_path / "data")
    args = ["train", "--data", str(data), "--checkpoints-dir", str(tmp_path / "ck")]
    r = CliRunner().invoke(main, [*args, "--wandb-mode", "online"])
    assert r.exit_code == 1 and no_traceback(r) and r.output.count("\n") == 1, r.output
    assert "--wandb-mode online needs W&B credentials" in r.output
    assert fake_train == [] and not (tmp_path / "ck").exists()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a key, but the host is not reachable
    t0 = time.monotonic()
    r = CliRunner().invoke(main, [*args, "--wandb-mode", "online"])
    assert r.exit_code == 1 and "W&B is not reachable" in r.output and fake_train == []
    assert time.monotonic() - t0 < 10


def test_auto_falls_back_when_wandb_itself_fails_to_start(tmp_path, wandb_env, monkeypatch, capsys):
    monkeypatch.setattr(tracking, "probe_wandb_host", lambda *a, **k: None)  # "reachable"
    started = []

    class Flaky:
        def __init__(self, mode, *args, init_timeout=None):
            started.append((mode, init_timeout))
            if mode in fail:
                raise RuntimeError("CommError: Timed out while retrying\nmore detail")
            self.run_id = "r1"

    monkeypatch.setattr(tracking, "WandbTracker", Flaky)
    fail = {"online"}
    tracker = tracking.start_tracker("auto", "p", None, "n", {}, tmp_path)
    assert started == [
        ("online", tracking.AUTO_INIT_TIMEOUT),
        ("offline", tracking.AUTO_INIT_TIMEOUT),
    ]
    assert isinstance(tracker, Flaky)
    err = capsys.readouterr().err
    assert "online run did not start (CommError: Timed out while retrying)" in err
    fail = {"online", "offline"}
    tracker = tracking.start_tracker("auto", "p", None, "n", {}, tmp_path)
    assert isinstance(tracker, tracking.NullTracker)
    assert "training without tracking" in capsys.readouterr().err
    with pytest.raises(tracking.UsageError, match="online: W&B run did not start"):
        tracking.start_tracker("online", "p", None, "n", {}, tmp_path)


def test_wandb_failures_mid_run_never_stop_training(capsys):
    class Run:
        calls = 0

        def log(self, *a, **k):
            Run.calls += 1
            raise OSError("wandb service went away")

        def finish(self):
            raise RuntimeError("cannot finish")

    tracker = object.__new__(tracking.WandbTracker)
    tracker.run, tracker._broken, tracker._wandb = Run(), False, None
    tracker.log({"loss": 1.0}, step=1)
    tracker.log({"loss": 1.0}, step=2)  # tracking is off after the first failure
    tracker.finish()
    err = capsys.readouterr().err
    assert Run.calls == 1 and err.count("warning:") == 1 and "wandb service went away" in err


def test_yaml_paths_expand_the_home_folder_and_tags_fit_wandb(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = TrainConfig.from_dict({"data": "~/photos", "checkpoints_dir": "~/runs"})
    assert (cfg.data, cfg.checkpoints_dir) == (str(tmp_path / "photos"), str(tmp_path / "runs"))
    for bad in ("", "x" * 65):
        with pytest.raises(ConfigError, match="a tag has 1 to 64 characters"):
            TrainConfig(data="d", tags=[bad])


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "2"}, {"WORLD_SIZE": "two", "RANK": "0"}])
def test_a_hand_set_world_size_is_one_clear_error(monkeypatch, env):
    import torch

    from cyclekit.errors import UsageError
    from cyclekit.training.distributed import init_distributed

    monkeypatch.delenv("RANK", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(UsageError, match="start multi-process runs with torchrun"):
        init_distributed(torch.device("cpu"))


def test_each_choice_list_is_defined_once_and_used_by_the_flags():
    import click

    from cyclekit import devices, models
    from cyclekit.cli.train import train
    from cyclekit.training import config, losses

    lists = config.choice_lists()
    assert lists["norm"] is models.NORMS and lists["init_type"] is models.INITS
    assert lists["precision"] is devices.PRECISIONS and lists["wandb_mode"] is tracking.WANDB_MODES
    assert losses.GAN_MODES is config.GAN_MODES is lists["gan_mode"]
    for param in train.params:
        if isinstance(param.type, click.Choice) and param.name in lists:
            assert tuple(param.type.choices) == tuple(lists[param.name]), param.name
