"""Time the bare generator on each CPU inference engine and print JSON.

    .venv/bin/python scripts/bench_engines.py                 # 256x256, 2 rounds
    .venv/bin/python scripts/bench_engines.py --size 512 --no-compile

Issue 15's levers for translate's model on a CPU, side by side in one process (full-size
ResNet-9, ngf 64, random weights, batch 1, the process's threads): torch eager in fp32 and
bf16 autocast, bf16 with channels_last, TorchScript frozen with optimize_for_inference (fp32,
and with bf16 weights), torch.compile (bf16 autocast; its compile time reported), onnxruntime
(fp32, the ONNX export's graph) and OpenVINO (fp32 and bf16, one image at a time and
images/s with its throughput streams). Each engine's seconds per image are the median over
``--runs`` after a warm-up, alternated over ``--rounds``; the output of each is compared
with torch fp32's (mean and max absolute difference, in 1/255 steps of the output's
[-1, 1] range). Engines that are not installed are reported as missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cyclekit.devices import speed_flags
from cyclekit.models import build_generator, generator_spec

Engine = Callable[[np.ndarray], np.ndarray]


def _torch_engine(model: torch.nn.Module, bf16: bool, channels_last: bool = False) -> Engine:
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def run(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x)
        if channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return model(t).float().numpy()

    return run


def _frozen_engine(model: torch.nn.Module, x: np.ndarray, bf16: bool) -> Engine:
    import copy

    net = copy.deepcopy(model).eval()
    dtype = torch.bfloat16 if bf16 else torch.float32
    net = net.to(dtype)
    with torch.no_grad():
        traced = torch.jit.trace(net, torch.from_numpy(x).to(dtype))
    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))

    def run(inp: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return frozen(torch.from_numpy(inp).to(dtype)).float().numpy()

    return run


def _compiled_engine(model: torch.nn.Module, x: np.ndarray) -> tuple[Engine, float]:
    compiled = torch.compile(model)
    run = _torch_engine(compiled, bf16=True)
    start = time.perf_counter()
    run(x)  # compiles
    return run, time.perf_counter() - start


def _onnx_engine(model: torch.nn.Module, spec: dict[str, Any], x: np.ndarray, work: Path) -> Engine:
    import onnxruntime as ort

    from cyclekit.translate.export import export_generator

    path = work / "g.onnx"
    export_generator(model, {"spec": spec, "direction": "a2b"}, "onnx", path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda inp: session.run(None, {name: inp})[0]


def _openvino_engines(model: torch.nn.Module, x: np.ndarray) -> dict[str, Any]:
    import openvino as ov

    core = ov.Core()
    converted = ov.convert_model(model, example_input=torch.from_numpy(x))
    engines: dict[str, Any] = {}
    for hint, name in (("f32", "openvino_fp32"), ("bf16", "openvino_bf16")):
        compiled = core.compile_model(
            converted, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        )
        request = compiled.create_infer_request()
        engines[name] = lambda inp, r=request: next(iter(r.infer([inp]).values())).copy()
    streams = core.compile_model(
        converted, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "THROUGHPUT"}
    )
    engines["openvino_bf16_streams"] = streams
    return engines


def _streams_images_per_s(compiled: Any, x: np.ndarray, n: int) -> float:
    import openvino as ov

    queue = ov.AsyncInferQueue(
        compiled, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    )
    for _ in range(len(queue)):
        queue.start_async([x])
    queue.wait_all()
    start = time.perf_counter()
    for _ in range(n):
        queue.start_async([x])
    queue.wait_all()
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5, help="timed runs per engine and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes)")
    args = ap.parse_args()

    torch.manual_seed(0)
    spec = generator_spec("resnet_9blocks", 3, 3, 64, "instance", False)
    model = build_generator(**spec).eval()
    x = np.random.default_rng(0).random((1, 3, args.size, args.size), np.float32) * 2 - 1
    engines: dict[str, Engine] = {
        "torch_fp32": _torch_engine(model, bf16=False),
        "torch_bf16": _torch_engine(model, bf16=True),
        # (a copy with the same weights: channels_last changes the module in place)
        "torch_bf16_channels_last": _torch_engine(
            _same_weights(model, spec), bf16=True, channels_last=True
        ),
        "torchscript_frozen_fp32": _frozen_engine(model, x, bf16=False),
        "torchscript_frozen_bf16_weights": _frozen_engine(model, x, bf16=True),
    }
    extra: dict[str, Any] = {"missing": []}
    if not args.no_compile:
        engines["torch_compile_bf16"], extra["torch_compile_seconds"] = _compiled_engine(
            _same_weights(model, spec), x
        )
    streams = None
    with tempfile.TemporaryDirectory() as tmp:
        if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
            engines["onnxruntime_fp32"] = _onnx_engine(model, spec, x, Path(tmp))
        else:
            extra["missing"].append("onnxruntime")
        if importlib.util.find_spec("openvino"):
            ov_engines = _openvino_engines(model, x)
            streams = ov_engines.pop("openvino_bf16_streams")
            engines.update(ov_engines)
        else:
            extra["missing"].append("openvino")
        reference = engines["torch_fp32"](x)
        seconds: dict[str, list[float]] = {name: [] for name in engines}
        streams_ips: list[float] = []
        for _ in range(args.rounds):
            for name, run in engines.items():
                run(x)  # warm-up
                for _ in range(args.runs):
                    start = time.perf_counter()
                    run(x)
                    seconds[name].append(time.perf_counter() - start)
            if streams is not None:
                streams_ips.append(_streams_images_per_s(streams, x, 4 * args.runs))
        diffs = {}
        for name, run in engines.items():
            d = np.abs(run(x) - reference) * 127.5  # in 1/255 steps of the output
            diffs[name] = {
                "mean_255ths": round(float(d.mean()), 3),
                "max_255ths": round(float(d.max()), 2),
            }
    median = {name: statistics.median(s) for name, s in seconds.items()}
    result: dict[str, Any] = {
        "model": "resnet_9blocks ngf=64, batch 1",
        "size": args.size,
        "cpu_flags": speed_flags(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "seconds_per_image_median": {n: round(v, 4) for n, v in median.items()},
        "speedup_vs_torch_fp32": {n: round(median["torch_fp32"] / v, 2) for n, v in median.items()},
        "difference_to_torch_fp32": diffs,
        **extra,
    }
    if streams_ips:
        result["openvino_bf16_streams_images_per_s"] = round(max(streams_ips), 2)
    print(json.dumps(result, indent=2))


def _same_weights(model: torch.nn.Module, spec: dict[str, Any]) -> torch.nn.Module:
    copy = build_generator(**spec).eval()
    copy.load_state_dict(model.state_dict())
    return copy


if __name__ == "__main__":
    main()
