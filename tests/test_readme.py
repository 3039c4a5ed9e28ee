"""Every command in README.md is run: here, by another named test, or by .ci/run."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cyclekit.cli import main
from tests.helpers import make_image_tree

REPO = Path(__file__).resolve().parents[1]
SMOKE = (
    "--ngf 8 --ndf 8 --netG resnet_6blocks --load-size 36 --crop-size 32 --max-steps 1 "
    "--num-workers 0 --no-progress --wandb-mode disabled --device cpu"
)


def readme_commands() -> list[str]:
    """Lines of the ```bash blocks (comments stripped, in order)."""
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _covered_elsewhere(cmd: str) -> str | None:
    """Where a command is run when this test does not run it itself (None: run it here)."""
    if cmd.startswith("./scripts/"):
        ci = (REPO / ".ci" / "run").read_text()
        assert cmd.split()[0] in ci, f"{cmd}: not run by .ci/run"
        return ".ci/run"
    if cmd.startswith(("cyclekit gan ", "cyclekit ae ")):
        from tests.test_mnist_cli import README_COMMANDS

        assert cmd in README_COMMANDS, f"{cmd}: not in tests/test_mnist_cli.py README_COMMANDS"
        return "tests/test_mnist_cli.py"
    if cmd.startswith("cyclekit datasets "):
        from tests.test_datasets import readme_commands as datasets_commands

        assert cmd in datasets_commands(), f"{cmd}: not run by tests/test_datasets.py"
        return "tests/test_datasets.py"
    if cmd.startswith("cyclekit eval "):
        from tests.test_eval_cli import README_COMMANDS as EVAL_COMMANDS

        assert cmd in EVAL_COMMANDS, f"{cmd}: not in tests/test_eval_cli.py README_COMMANDS"
        return "tests/test_eval_cli.py"
    if cmd.startswith("cyclekit translate"):
        from tests.test_video_readme import COMMANDS as VIDEO_COMMANDS

        if cmd in VIDEO_COMMANDS:
            return "tests/test_video_readme.py"
    if cmd.startswith(("cyclekit translate", "cyclekit export")):
        from tests.test_translate_readme import COMMANDS

        assert cmd in COMMANDS, f"{cmd}: not in tests/test_translate_readme.py"
        return "tests/test_translate_readme.py"
    return None


def test_readme_has_the_two_commands_first():
    cmds = readme_commands()
    assert cmds[:2] == ["./scripts/demo.sh", "./scripts/test.sh"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "./scripts/test.sh" in ci and "CYCLEKIT_REQUIRE_SHARED=1" in ci


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_image_tree(tmp_path / "datasets" / "horse2zebra")
    make_image_tree(tmp_path / "datasets" / "day2film")
    make_image_tree(tmp_path / "art")
    (tmp_path / "photos").symlink_to(tmp_path / "art" / "trainA")
    (tmp_path / "paintings").symlink_to(tmp_path / "art" / "trainB")
    (tmp_path / "run.yaml").write_text(
        yaml.safe_dump({"data": "datasets/horse2zebra", "name": "from_yaml", "log_every": 1})
    )
    ran = []
    for cmd in readme_commands():
        if _covered_elsewhere(cmd):
            continue
        args = shlex.split(cmd)
        if args[0] == "cyclekit":
            assert args[1] in ("train",), f"{cmd}: add it to this test"
            r = CliRunner().invoke(main, [*args[1:], *SMOKE.split()], catch_exceptions=False)
            assert r.exit_code == 0, f"{cmd}\n{r.output}"
            if "--resume" in args:
                assert "resuming" in r.output
        elif args[0] == "torchrun":
            env = os.environ | {
                "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": str(_free_port()),
            }
            full = [sys.executable, "-m", "torch.distributed.run", *args[1:], *SMOKE.split()]
            out = subprocess.run(full, capture_output=True, text=True, env=env, timeout=300)
            assert out.returncode == 0, f"{cmd}\n{out.stdout}{out.stderr}"
            assert "weights identical on all 2 ranks: yes" in out.stdout + out.stderr
        elif args[0] == "python" and args[1] == "scripts/bench_train.py":
            quick = "--size 32 --ngf 8 --ndf 8 --iters 1 --rounds 1 --warmup 0 --precision fp32"
            full = [sys.executable, *args[1:], *quick.split()]
            out = subprocess.run(full, capture_output=True, text=True, cwd=REPO, timeout=300)
            assert out.returncode == 0, out.stderr
            result = json.loads(out.stdout)
            if "--models" in args:  # the three models side by side, ratios to CycleGAN
                assert set(result["ratio_to_cyclegan"]["fp32"]) == {"cyclegan", "cut", "fastcut"}
            else:
                assert "official_fp32" in result["seconds_per_iter"]
        else:
            raise AssertionError(f"README command not covered by any test: {cmd}")
        ran.append(cmd)
    assert len(ran) >= 5
    assert (tmp_path / "checkpoints" / "from_yaml" / "last.pt").is_file()
    assert (tmp_path / "checkpoints" / "monet" / "G_ab.pt").is_file()
