"""Where the generator runs for ``cyclekit translate``: torch, or OpenVINO on a CPU.

Measured on a 2-core Intel Xeon with AMX (ResNet-9, ngf 64, 256x256, batch 1): OpenVINO in
bf16 ran the generator in 0.23 s against torch bf16 autocast's 1.1 s on the same busy machine
(0.157 s vs 0.29 s on a quiet one, issue 15's probe), and OpenVINO fp32 beat torch fp32 too;
so ``auto`` picks OpenVINO for the CPU when it is installed (``pip install 'cyclekit[fast]'``),
and torch elsewhere (CUDA, MPS) or without it. Precision follows ``--precision``: bf16 only
where the CPU computes it natively (:func:`~cyclekit.devices.resolve_precision`).

Converting a generator to OpenVINO takes seconds, so the converted model is cached in
``cache_dir("openvino")``, named by a hash of the weights and the spec: the second run of a
checkpoint starts at once (and, with :mod:`cyclekit.translate.deferred`, without torch). The
OpenVINO runner takes and returns numpy arrays (``numpy_io``) or CPU torch tensors, whichever it
is given, so the rest of translate does not know which backend ran. Tiled images (very large
scans) always run in torch: their shared instance-norm statistics hook into the torch modules.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cyclekit.devices import device_type
from cyclekit.errors import UsageError
from cyclekit.translate.deferred import DeferredGenerator, remember, torch_module

if TYPE_CHECKING:  # torch is imported where it is used: translate may run without it
    import torch
    from torch import nn

BACKENDS = ("auto", "torch", "openvino")


class BackendError(UsageError):
    """The chosen backend cannot run this generator; ``str()`` is one line."""


Runner = Callable[[Any], Any]


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def resolve_backend(name: str, device: torch.device | str) -> str:
    """``auto`` -> openvino on a CPU where it is installed, else torch; a named backend that
    cannot run here is a one-line :class:`~cyclekit.errors.UsageError`."""
    if name not in BACKENDS:
        raise UsageError(f"unknown --backend {name!r}; choose one of {', '.join(BACKENDS)}")
    kind = device_type(device)
    if name == "auto":
        return "openvino" if kind == "cpu" and openvino_available() else "torch"
    if name == "openvino":
        if kind != "cpu":
            raise UsageError(f"--backend openvino runs on the CPU; use --device cpu, not {device}")
        if not openvino_available():
            raise UsageError(
                "--backend openvino needs the openvino package: pip install 'cyclekit[fast]'"
            )
    return name


def weights_key(model: nn.Module, spec: dict[str, Any]) -> str:
    """A hash of the weights and the architecture: the name of a cached conversion."""
    h = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def openvino_cache() -> Path:
    """Where converted generators (and :mod:`~cyclekit.translate.deferred`'s index) live: one
    folder per OpenVINO version."""
    import openvino as ov

    from cyclekit.files import cache_dir

    return cache_dir("openvino", ov.get_version().split("-")[0])


def _openvino_model(model: nn.Module | DeferredGenerator, spec: dict[str, Any], key: str) -> Any:
    """The generator as an OpenVINO model with any batch and image size, converted once and
    then read from the cache (as ``key``.xml)."""
    import openvino as ov

    from cyclekit.files import atomic_path

    folder = openvino_cache()
    xml = folder / f"{key}.xml"
    core = ov.Core()
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return core.read_model(xml)
    import torch

    model = torch_module(model)
    print(
        f"converting the generator for OpenVINO (once per model; cached in {folder})",
        file=sys.stderr,
    )
    example = torch.zeros(1, spec.get("input_nc", 3), 64, 64)
    # Tracing warns about Python-side shape checks in the norm layers; the graph is the same
    # for every size (tested), so the warnings would only alarm the user.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = ov.convert_model(
            model.eval(), example_input=example, input=[ov.PartialShape([-1, -1, -1, -1])]
        )
    # The .bin first, then the .xml that names it: a reader that finds the .xml finds both.
    # Weights stay fp32 on disk (OpenVINO would halve them to fp16 by default).
    with atomic_path(xml, suffix=".xml") as tmp_xml:
        try:
            ov.save_model(converted, tmp_xml, compress_to_fp16=False)
            tmp_xml.with_suffix(".bin").replace(xml.with_suffix(".bin"))
        finally:
            tmp_xml.with_suffix(".bin").unlink(missing_ok=True)
    return core.read_model(xml)


class Pending:
    """The outputs of one batch submitted to OpenVINO's streams, filled in by its callbacks
    (on OpenVINO's threads) as each image finishes."""

    def __init__(self, n: int) -> None:
        self._outputs: list[Any] = [None] * n
        self._left = n
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()

    def _finish(self, request: Any, i: int) -> None:
        try:
            out = request.get_output_tensor(0).data.copy()
        except BaseException as e:  # the inference failed: keep the error for result()
            out, self._error = None, e
        with self._lock:
            self._outputs[i] = out
            self._left -= 1
            if self._left == 0:
                self._done.set()

    @property
    def ready(self) -> bool:
        return self._done.is_set()

    def result(self) -> np.ndarray:
        self._done.wait()
        if self._error is not None:
            raise RuntimeError(f"OpenVINO inference failed: {self._error}") from self._error
        return np.concatenate(self._outputs)


class OpenVinoRunner:
    """``run(x)`` on OpenVINO. One image runs on every core (the latency mode); a batch of
    several is split into single images that run side by side on OpenVINO's streams (its
    throughput mode: on a 2-core CPU, two streams of one core each).

    :meth:`submit` starts a batch and returns at once, so that translate decodes the next
    images while the streams work, and the streams never wait between batches: it keeps up to
    two requests per stream queued. On a 2-core Xeon with AMX at 256x256, batches of 8 ran at
    1.25x the images/s of one image at a time across both cores, batches of 2 at 0.91x
    (medians of per-round ratios over 12 interleaved rounds; scripts/bench_translate.py)."""

    numpy_io = True  # takes numpy input as it is (see batching.Batcher)

    def __init__(self, ov_model: Any, hint: str, key: str) -> None:
        import openvino as ov

        self.weights_key = key
        self._ov, self._model, self._hint = ov, ov_model, hint
        core = ov.Core()
        self._core = core
        self._single = core.compile_model(
            ov_model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        )
        self._request = self._single.create_infer_request()
        self._queue: Any = None  # the streams, compiled when a batch first comes
        # An estimate of the throughput mode's streams without compiling it: one per
        # physical core, at most 4; each batch fills every stream twice over.
        self.preferred_batch = 2 * max(1, min(4, _physical_cores()))

    def _streams(self) -> Any:
        if self._queue is None:
            compiled = self._core.compile_model(
                self._model,
                "CPU",
                {"INFERENCE_PRECISION_HINT": self._hint, "PERFORMANCE_HINT": "THROUGHPUT"},
            )
            n = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            # Two requests per stream: one runs while the next waits, already set up.
            self._queue = self._ov.AsyncInferQueue(compiled, 2 * max(1, n))
            self._queue.set_callback(lambda request, slot: slot[0]._finish(request, slot[1]))
        return self._queue

    def submit(self, x: np.ndarray | torch.Tensor) -> Pending:
        """Start ``x``'s images on the streams; the result (numpy) comes from ``.result()``.
        Blocks only while every request is busy."""
        x = _as_array(x)
        queue = self._streams()
        pending = Pending(x.shape[0])
        for i in range(x.shape[0]):
            # OpenVINO copies the input into the request before start_async returns.
            queue.start_async([x[i : i + 1]], (pending, i))
        return pending

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """The outputs of ``x``'s images, as numpy for numpy input, else as a torch tensor."""
        a = _as_array(x)
        if a.shape[0] == 1:
            out = next(iter(self._request.infer([a]).values())).copy()
        else:
            out = self.submit(a).result()
        return out if isinstance(x, np.ndarray) else sys.modules["torch"].from_numpy(out)


def _as_array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A C-contiguous float32 numpy array: ``x`` itself, or a CPU tensor's memory."""
    a = x if isinstance(x, np.ndarray) else x.contiguous().numpy()
    return np.ascontiguousarray(a, dtype=np.float32)


def _physical_cores() -> int:
    """Cores the process may use, counting hyper-threads once where Linux says so."""
    import os

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    usable = usable or 1
    try:
        siblings = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text()
        per_core = len(_cpu_list(siblings))
    except (OSError, ValueError):
        per_core = 1
    return max(1, usable // max(1, per_core))


def _cpu_list(text: str) -> list[int]:
    """``"0-1,4"`` -> [0, 1, 4] (the kernel's CPU list format)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def make_openvino_runner(
    model: nn.Module | DeferredGenerator, spec: dict[str, Any], precision: str
) -> OpenVinoRunner:
    hint = {"bf16": "bf16", "fp32": "f32"}.get(precision)
    if hint is None:
        raise UsageError(f"--backend openvino runs in bf16 or fp32, not {precision}")
    if isinstance(model, DeferredGenerator):
        key = model.weights_key
    else:
        key = weights_key(model, spec)
    return OpenVinoRunner(_openvino_model(model, spec, key), hint, key)


def remember_conversion(runner: Runner, info: dict[str, Any]) -> None:
    """After a run made an OpenVINO runner for a generator whose file's bytes were hashed as
    they were loaded (``info["file_key"]``, see engine.open_model): index it, so that the next
    run of that file starts without torch (see :mod:`cyclekit.translate.deferred`)."""
    weights, key = getattr(runner, "weights_key", None), info.get("file_key")
    if weights is not None and key is not None:
        remember(openvino_cache(), key, info, weights)


def make_runner(
    model: nn.Module | DeferredGenerator,
    spec: dict[str, Any],
    device: torch.device | str,
    precision: str,
    backend: str,
    fallback: Runner | None = None,
) -> Runner:
    """``run(x)``: the generator on a CPU float batch in [-1, 1], on ``backend`` (auto, torch
    or openvino). With ``auto``, a generator OpenVINO cannot convert runs in torch (one warning
    line); a backend asked for by name that cannot run is a one-line error."""
    resolved = resolve_backend(backend, device)
    if resolved == "openvino":
        try:
            return make_openvino_runner(model, spec, precision)
        except UsageError:
            raise
        except Exception as e:  # a conversion the library cannot do: its problem, not a bug here
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if backend != "auto":
                msg = f"--backend openvino: cannot convert the generator ({reason})"
                raise BackendError(msg) from None
            # One line, like translate's other warnings (stdout stays free for piping).
            print(
                f"warning: OpenVINO cannot run this generator ({reason}); using torch",
                file=sys.stderr,
            )
    if fallback is not None:
        return fallback
    import torch

    from cyclekit.translate.tiling import make_runner as make_torch_runner

    return make_torch_runner(torch_module(model), torch.device(device), precision)
