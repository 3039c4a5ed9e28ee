#!/usr/bin/env bash
# GPU figures in one call: install cyclekit (./.venv, dev extras), then time on the GPU
#   - a CycleGAN training step at 256x256 and 1024x1024, batch 1: the official step (fp32)
#     beside cyclekit's fp32, bf16 and bf16 + torch.compile, with the fraction of the GPU's
#     bf16 peak each reaches (scripts/bench_train.py);
#   - cyclekit translate end to end, JPEG in and out, at 256x256 and 1024x1024, with the
#     official way (fp32, batch 1) beside the default (scripts/bench_translate.py).
# Prints one JSON object on stdout (progress on stderr).
#
#   bash scripts/bench_gpu.sh                 # on a machine with a CUDA GPU
#   BENCH_GPU_SMOKE=1 bash scripts/bench_gpu.sh   # tiny sizes on any device: checks the script
set -euo pipefail
CYCLEKIT_EXTRAS=dev source "$(dirname "$0")/_env.sh"
py=.venv/bin/python
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

if [ "${BENCH_GPU_SMOKE:-}" = "1" ]; then
    device=auto
    train=(--ngf 8 --ndf 8 --iters 1 --rounds 1)
    sizes=(32 64)
    translate=(--n256 2 --n1024 1 --no-big --baseline)
else
    if ! "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
        echo "Error: no CUDA GPU visible to PyTorch (BENCH_GPU_SMOKE=1 checks the script on a CPU)" >&2
        exit 1
    fi
    device=cuda
    train=(--iters 20 --rounds 3 --compile)
    sizes=(256 1024)
    translate=(--n256 200 --n1024 20 --baseline)
fi

for size in "${sizes[@]}"; do
    echo "training step at ${size}x${size}" >&2
    "$py" scripts/bench_train.py --device "$device" --size "$size" --batch-size 1 \
        --precision fp32 bf16 "${train[@]}" --json "$out/train_$size.json" > /dev/null
done
echo "translate" >&2
"$py" scripts/bench_translate.py "${translate[@]}" > "$out/translate.json"

"$py" - "$out" "${sizes[@]}" <<'PY'
import json
import sys
from pathlib import Path

out, sizes = Path(sys.argv[1]), sys.argv[2:]
result = {
    "benchmark": "gpu",
    "train": {s: json.loads((out / f"train_{s}.json").read_text()) for s in sizes},
    "translate": json.loads((out / "translate.json").read_text()),
}
print(json.dumps(result, indent=2))
PY
