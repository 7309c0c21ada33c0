#!/usr/bin/env bash
# Run the ROS-free core tests on the oldest stack we support (Humble on Jetson:
# Python 3.10, numpy 1.21, OpenCV 4.5, onnxruntime 1.16, scipy 1.7) in
# .venv-humble-compat. Needs a python3.10 (PYTHON310=... to choose one).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON310:-}
if [[ -z "$PY" ]]; then
  for c in python3.10 "$HOME"/.pyenv/versions/3.10.*/bin/python; do
    if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; then
      PY=$c; break
    fi
  done
fi
[[ -n "$PY" ]] || { echo "no Python 3.10 found; set PYTHON310" >&2; exit 1; }
VENV="$ROOT/.venv-humble-compat"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -r "$ROOT/requirements/compat-humble.txt" 2>&1 | grep -v '^WARNING: Location' || true
cd "$ROOT"
PYTHONPATH="$ROOT" exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  test/test_types.py test/test_frames_stats.py test/test_preprocess.py test/test_nms.py \
  test/test_decoders.py test/test_detector_reference.py test/test_detector_real_model.py \
  test/test_detect_cli.py test/test_engines_onnxruntime.py test/test_engine_cache.py \
  test/test_engines_factory.py test/test_detector_swap.py test/test_tracking_core.py \
  test/test_tracking_tracker.py test/test_tracking_sequences.py test/test_track_cli.py \
  test/test_pixel_input.py test/test_graph_rewrites.py test/test_seg_pose_obb.py \
  test/test_seg_pose_obb_reference.py "$@"
