"""Shared fixtures. ``shared_dir`` is ../shared beside the repo: tests that need it skip when it
is absent, unless CYCLEKIT_REQUIRE_SHARED=1 (CI), where a missing folder is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _require(path: Path) -> Path:
    if path.exists():
        return path
    msg = f"shared test data not found: {path}"
    if os.environ.get("CYCLEKIT_REQUIRE_SHARED") == "1":
        pytest.fail(msg + " (CYCLEKIT_REQUIRE_SHARED=1)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def official_fixtures() -> Path:
    return _require(SHARED / "fixtures" / "official")


@pytest.fixture(scope="session")
def mnist_raw() -> Path:
    return _require(SHARED / "data" / "MNIST" / "raw")


@pytest.fixture(scope="session")
def horse2zebra() -> Path:
    return _require(SHARED / "data" / "horse2zebra")


@pytest.fixture(scope="session", autouse=True)
def _test_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # cyclekit's cache (OpenVINO conversions, their index, downloaded models) goes to a folder
    # of this session's, also for the commands tests run in fresh processes: tests never write
    # into the user's ~/.cache. A test may still point CYCLEKIT_CACHE elsewhere.
    os.environ["CYCLEKIT_CACHE"] = str(tmp_path_factory.mktemp("cyclekit-cache"))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty CYCLEKIT_CACHE for this test (e.g. to see a conversion happen)."""
    monkeypatch.setenv("CYCLEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Tests never talk to W&B servers and never write into the user's home.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")  # no crash reports (DNS) to sentry
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / ".wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".wandb-config"))


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    # Set once for the whole suite: tests use tiny models, for which a second thread mostly
    # adds synchronisation cost, and CI shares 2 cores with the data loaders.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _torch_backend_by_default(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    # translate's --backend auto would convert every test's new tiny generator to OpenVINO
    # (seconds each); tests/test_translate_backends.py tests that path on purpose.
    if "openvino" not in request.keywords:
        from cyclekit.translate import backends

        monkeypatch.setattr(backends, "openvino_available", lambda: False)


@pytest.fixture
def gen(tmp_path: Path) -> Path:
    """A tiny random generator saved as cyclekit's G_ab.pt (for translate tests)."""
    from tests.test_translate_common import make_generator

    return make_generator(tmp_path / "G_ab.pt")
