"""A careless user's afternoon with `cyclekit train`, `datasets` and `demo`: wrong paths, bad
YAML, bad flags, typos. Every case must end with a non-zero exit, exactly one ``Error:`` line
naming the file or flag, no traceback, no model trained and no file of the user's changed."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from cyclekit.cli import main
from cyclekit.data.official import URL_ENV
from tests.helpers import make_image_tree

# (arguments, exit code, text the Error line must hold). In the arguments and the text, {data}
# is a good dataset, {tmp} the scratch folder, {photo} a JPEG, {yaml} a config with a typo'd
# type, {empty} a dataset whose domain B holds no readable image, {web} a folder holding the
# user's own index.html, {mine} a datasets root whose day2night/ is the user's own data.
# Exit 2: click refused the flag itself; exit 1: cyclekit refused the value.
CASES = [
    # --- train: paths
    (["train", "--data", "{tmp}/nope"], 1, "--data {tmp}/nope: folder does not exist"),
    (["train", "--data", "{photo}"], 2, "--data"),
    (["train", "--data", "{tmp}"], 1, "--data {tmp}: missing trainA/"),
    (
        ["train", "--data-a", "{tmp}/nope", "--data-b", "{data}/trainB"],
        1,
        "--data-a {tmp}/nope: folder does not exist",
    ),
    (["train", "--data-a", "{data}/trainA", "--data-b", "{photo}"], 2, "--data-b"),
    (["train", "--data-a", "{data}/trainA"], 1, "--data-b is missing"),
    (["train", "--data", "{data}", "--data-a", "{data}/trainA"], 1, "not both"),
    (["train", "--data", "{empty}"], 1, "domain B: no readable image in {empty}/trainB"),
    (["train", "--data", "{data}", "--checkpoints-dir", "{photo}"], 1, "--checkpoints-dir"),
    (["train", "--data", "{data}", "--resume", "{tmp}/last.pt"], 1, "--resume {tmp}/last.pt"),
    (["train", "--data", "{data}", "--resume", "{photo}"], 1, "{photo}: "),
    (["train", "--data", "{data}", "--resume", "auto", "--overwrite"], 1, "give only one"),
    (["train", "--name", "typo", "--resume", "auto"], 1, "nothing to resume at {tmp}/ck/typo"),
    # --- train: config files
    (["train", "--config", "{tmp}/missing.yaml"], 1, "{tmp}/missing.yaml: cannot read config"),
    (["train", "--config", "{data}"], 2, "--config"),
    (["train", "--config", "{photo}"], 1, "{photo}: cannot read config"),
    (["train", "--config", "{yaml}"], 1, "{yaml}: batch_size: 'four' is not an integer"),
    # --- train: flags and values
    (["train", "--data", "{data}", "--crop-sise", "32"], 2, "--crop-sise"),
    (["train", "--data", "{data}", "--crop-size", "abc"], 2, "--crop-size"),
    (["train", "--data", "{data}", "--crop-size", "30"], 1, "--crop-size 30"),
    (["train", "--data", "{data}", "--load-size", "20", "--crop-size", "32"], 1, "--load-size"),
    (["train", "--data", "{data}", "--netG", "resnet9"], 2, "--netG"),
    (["train", "--data", "{data}", "--device", "gpu"], 2, "--device"),
    (["train", "--data", "{data}", "--input-nc", "2"], 2, "--input-nc"),
    (["train", "--data", "{data}", "--max-steps", "0"], 1, "--max-steps"),
    (["train", "--data", "{data}", "--lr", "-1"], 1, "--lr"),
    (["train", "--data", "{data}", "--wandb-mode", "onlin"], 2, "--wandb-mode"),
    (["train", "--data", "{data}", "--wandb-mode", "online"], 1, "--wandb-mode online"),
    (["train", "--data", "{data}", "--name", "a/b"], 1, "--name"),
    # --- datasets
    (["datasets", "synth", "day2nite", "--root", "{tmp}/ds"], 1, "'day2nite'"),
    (["datasets", "synth", "day2night", "--size", "100000", "--root", "{tmp}/ds"], 1, "--size"),
    (["datasets", "synth", "day2night", "--n", "0", "--root", "{tmp}/ds"], 1, "--n"),
    (["datasets", "synth", "day2night", "--n", "ten"], 2, "--n"),
    (["datasets", "synth", "day2night", "--root", "{photo}"], 2, "--root"),
    (["datasets", "synth", "day2night", "--root", "{mine}"], 1, "{mine}/day2night already"),
    (["datasets", "download", "horse2zebr"], 2, "horse2zebr"),
    (["datasets", "download", "mini", "--root", "{photo}/x"], 1, "--root {photo}/x"),
    # --- demo
    (["demo", "--task", "day2nite"], 2, "--task"),
    (["demo", "--minutes", "0"], 1, "--minutes"),
    (["demo", "--device", "gpu"], 2, "--device"),
    (["demo", "--out", "{photo}"], 2, "--out"),
    (["demo", "--out", "{web}"], 1, "--out {web}"),
    (["demo", "--datasets-root", "{mine}"], 1, "--datasets-root {mine}"),
    (["demo", "--wandb-mode", "online"], 1, "--wandb-mode online"),
    (["demo", "--max-steps", "0"], 1, "--max-steps"),
]


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """The user's files, and an environment where nothing can reach the network."""
    make_image_tree(tmp_path / "data")
    Image.new("RGB", (40, 30), (200, 100, 50)).save(tmp_path / "photo.jpg")
    (tmp_path / "run.yaml").write_text(f"data: {tmp_path / 'data'}\nbatch_size: four\n")
    empty = make_image_tree(tmp_path / "empty")
    for f in (empty / "trainB").iterdir():
        f.write_text("not an image")
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "index.html").write_text("<html>my homepage</html>")
    own = make_image_tree(tmp_path / "mine" / "day2night")  # the user's own data, no synth.json
    (own / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path / "web")  # demo's default --out and --datasets-root land here
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv(URL_ENV, closed)
    monkeypatch.setenv("WANDB_BASE_URL", closed)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc with a W&B key
    return tmp_path


def _fill(text: str, root: Path) -> str:
    names = {
        "data": root / "data",
        "tmp": root,
        "photo": root / "photo.jpg",
        "yaml": root / "run.yaml",
        "empty": root / "empty",
        "web": root / "web",
        "mine": root / "mine",
    }
    return text.format(**{k: str(v) for k, v in names.items()})


@pytest.mark.parametrize("args, code, names", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_error_line_naming_it_and_changes_nothing(workspace, args, code, names):
    before = _hashes(workspace)
    args = [_fill(a, workspace) for a in args]
    # Tiny, short settings first (the case's own flags come after and win), so a case that
    # wrongly starts training ends in seconds, visibly: it leaves a last.pt.
    if args[0] == "train":
        tiny = ["--max-steps", "1", "--num-workers", "0", "--no-progress", "--ngf", "8"]
        tiny += ["--ndf", "8", "--load-size", "36", "--crop-size", "32", "--device", "cpu"]
        tiny += ["--checkpoints-dir", str(workspace / "ck")]
        args = ["train", *tiny, *args[1:]]
    if args[0] == "demo":
        args = ["demo", "--preset", "tiny", "--max-steps", "1", "--no-progress", *args[1:]]
    r = CliRunner().invoke(main, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == code, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, r.output
    assert _fill(names, workspace) in errors[0], r.output
    if code == 1:  # cyclekit's own messages: the Error line is the whole output
        assert r.output.strip() == errors[0], r.output
    after = _hashes(workspace)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing changed
    assert set(before) <= set(after)  # nothing deleted
    assert not list(workspace.rglob("last.pt"))  # no training started
