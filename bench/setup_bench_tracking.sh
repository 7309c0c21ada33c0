#!/usr/bin/env bash
# Create the benchmark-only venv used by bench/bench_tracking.py for the boxmot
# side of the comparison: <repo>/.venv-bench-tracking (gitignored by .venv-*/).
# Usage: bench/setup_bench_tracking.sh [VENV_DIR]
# Re-running reuses an existing venv and only installs what is missing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-$root/.venv-bench-tracking}
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --upgrade pip
# The constraints file pins torch/torchvision to CPU wheels; without it pip
# pulls a multi-GB CUDA torch as a boxmot dependency.
"$venv/bin/python" -m pip install \
  -r "$root/requirements/bench-tracking.txt" \
  -c "$root/requirements/bench-constraints.txt"
"$venv/bin/python" -c "import boxmot, torch; print('boxmot', boxmot.__version__, 'torch', torch.__version__)"
