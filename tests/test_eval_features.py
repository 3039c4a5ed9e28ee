"""The FID Inception weights: downloaded once from a stand-in server on 127.0.0.1, kept only
when whole and of the right sha256, one clear line when offline; the torch-fidelity network
built from them (stand-in weights of the real shapes: the real file is not in the test data)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cyclekit.evaluate import EvalError, features


@contextlib.contextmanager
def serve(payloads: dict[str, bytes], short: set[str] = frozenset()) -> Iterator[tuple[str, list]]:
    """An HTTP server on 127.0.0.1: ``/NAME`` answers ``payloads[NAME]`` (cut short, with a
    longer Content-Length, for names in ``short``). Yields (base URL, log of paths asked)."""
    log: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            log.append(self.path)
            body = payloads.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header(
                "Content-Length", str(len(body) + (100 if self.path[1:] in short else 0))
            )
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{features.INCEPTION_FILE}"


def small_weights() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(6.0)}, buf)
    return buf.getvalue()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_once_into_the_cache_then_offline_reuse(tmp_path, monkeypatch):
    body = small_weights()
    sha = hashlib.sha256(body).hexdigest()
    monkeypatch.setenv("CYCLEKIT_CACHE", str(tmp_path / "cache"))
    with serve({"w.pth": body}) as (base, log):
        monkeypatch.setenv(features.URL_ENV, f"{base}/w.pth")
        path = features.fetch_weights(sha256=sha, progress=False)
        assert path == tmp_path / "cache" / "inception" / features.INCEPTION_FILE
        assert path.read_bytes() == body
        assert leftovers(path.parent) == [features.INCEPTION_FILE]  # no temporary left
        assert features.fetch_weights(sha256=sha, progress=False) == path
    assert log == ["/w.pth"]  # the second call asked nothing
    assert torch.equal(features.read_weights(path, sha)["w"], torch.arange(6.0))


def test_a_file_of_the_wrong_hash_is_never_kept(tmp_path):
    dst = tmp_path / "c" / features.INCEPTION_FILE
    with serve({"w.pth": b"<html>proxy login</html>"}) as (base, _):
        with pytest.raises(EvalError) as e:
            features.fetch_weights(f"{base}/w.pth", dst, progress=False)
    text = str(e.value)
    assert "sha256" in text and f"{base}/w.pth" in text and str(dst) in text
    assert "\n" not in text
    assert leftovers(dst.parent) == []


def test_a_cut_short_download_is_never_kept(tmp_path):
    body = small_weights()
    dst = tmp_path / features.INCEPTION_FILE
    with serve({"w.pth": body}, short={"w.pth"}) as (base, _):
        with pytest.raises(EvalError, match="cannot download"):
            features.fetch_weights(f"{base}/w.pth", dst, hashlib.sha256(body).hexdigest(), False)
    assert leftovers(tmp_path) == []


def test_offline_says_which_file_from_where_and_where_to_put_it(tmp_path):
    dst = tmp_path / features.INCEPTION_FILE
    url = closed_port_url()
    with pytest.raises(EvalError) as e:
        features.fetch_weights(url, dst, progress=False, timeout=5)
    text = str(e.value)
    assert url in text and features.INCEPTION_FILE in text and str(dst) in text
    assert features.INCEPTION_URL in text and features.INCEPTION_SHA256 in text
    assert "\n" not in text
    assert not dst.exists()


def test_a_wrong_file_in_the_cache_is_refused_by_name(tmp_path):
    bad = tmp_path / features.INCEPTION_FILE
    bad.write_bytes(small_weights())
    with pytest.raises(EvalError) as e:
        features.read_weights(bad)
    assert str(bad) in str(e.value) and "delete" in str(e.value)
    assert bad.exists()  # the user's file is theirs to delete


def test_download_url_can_be_overridden(monkeypatch):
    monkeypatch.delenv(features.URL_ENV, raising=False)
    assert features.weights_url() == features.INCEPTION_URL
    monkeypatch.setenv(features.URL_ENV, "http://127.0.0.1:9/x.pth")
    assert features.weights_url() == "http://127.0.0.1:9/x.pth"


def inception_shaped_weights(path: Path) -> str:
    """Random weights with the keys and shapes of the real file; returns their sha256."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
            return None  # keep the random initialisation

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    torch.manual_seed(0)
    net = Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
    torch.save(net.state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_inception_extractor_builds_from_checked_weights(tmp_path):
    path = tmp_path / "stand-in.pth"
    sha = inception_shaped_weights(path)
    extractor = features.InceptionExtractor(path, "cpu", sha256=sha)
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 1), dtype=np.uint8)
    out = extractor(images)  # gray, repeated to RGB
    assert out.shape == (2, 2048) and out.dtype == np.float64 and np.isfinite(out).all()
    proto = extractor.protocol()
    assert proto["weights_sha256"] == sha and "torch-fidelity" in proto["feature_extractor"]
    # The weights were loaded, not left at a fresh initialisation.
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(extractor.net.fc.weight, loaded["fc.weight"])
    with pytest.raises(EvalError, match="sha256"):
        features.InceptionExtractor(path, "cpu")  # not the real file's hash


def test_pixel_stats_stand_in_is_deterministic_and_sized():
    images = np.random.default_rng(1).integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    ex = features.PixelStatsExtractor()
    assert ex(images).shape == (3, ex.dims)
    assert np.array_equal(ex(images), ex(images))
    gray = images[..., :1]  # one channel is repeated to RGB, as for the Inception network
    assert np.allclose(ex(gray), ex(np.repeat(gray, 3, axis=3)))
    batched = features.extract(images, ex, batch_size=2)
    assert np.allclose(batched, ex(images))
