#!/usr/bin/env bash
# Create the reference-only venv <repo>/.venv-ref (gitignored by .venv-*/) with
# Ultralytics, used to regenerate test/fixtures/reference/ and for the
# Ultralytics side of bench/bench_detection.py. Run everything in it with
# YOLO_OFFLINE=1: nothing downloads weights; models are built from yaml.
# Usage: tools/setup_reference_venv.sh [VENV_DIR]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-$root/.venv-ref}
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
# torch first and pinned: otherwise ultralytics' dependency resolves to an
# unpinned (multi-GB CUDA) torch.
"$venv/bin/python" -m pip install torch==2.14.1 torchvision==0.29.1
"$venv/bin/python" -m pip install -r "$root/requirements/reference.txt"
YOLO_OFFLINE=1 "$venv/bin/python" -c \
  "import ultralytics, torch, onnxruntime; print('ultralytics', ultralytics.__version__, 'torch', torch.__version__, 'onnxruntime', onnxruntime.__version__)"
