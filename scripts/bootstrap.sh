#!/usr/bin/env bash
# One idempotent environment step for perception.
#
# - A ROS 2 install is sourced (ROS_DISTRO set and rclpy importable): make
#   .venv with --system-site-packages on top of it and add only what ROS does
#   not provide, keeping the system numpy (ROS C extensions are built on it).
# - No ROS 2: make .venv with pinned ROS 2 Kilted wheels from PyPI.
# In both cases, when `import vision_msgs` fails, build the vision_msgs 4.x
# stand-in in interfaces/vision_msgs into .venv/opt/vision_msgs, then install
# this project in editable mode. The result is written to
# .venv/perception-env.sh, which scripts/env.sh sources.
#
# Re-running is cheap: a stamp holds a hash of every input, and nothing is
# redone while it matches. PERCEPTION_VENV overrides the venv location;
# PYTHON picks the interpreter (3.10-3.12; Kilted wheels exist for those).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PERCEPTION_VENV:-$ROOT/.venv}
STAMP="$VENV/.perception-bootstrap"
ENVFILE="$VENV/perception-env.sh"
log() { printf '[bootstrap] %s\n' "$*" >&2; }

if [[ -n "${ROS_DISTRO:-}" ]] && python3 -c 'import rclpy' >/dev/null 2>&1; then
  MODE="system-${ROS_DISTRO}"
else
  MODE="wheels-kilted"
fi

inputs_hash() {
  (cd "$ROOT" && cat requirements/*.txt setup.py setup.cfg package.xml \
     scripts/bootstrap.sh interfaces/vision_msgs/CMakeLists.txt \
     interfaces/vision_msgs/package.xml interfaces/vision_msgs/msg/*.msg) | sha256sum | cut -c1-16
}
WANT="$MODE:$(inputs_hash)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -f "$ENVFILE" ]]; then
  exit 0
fi
# One bootstrap at a time: every `./dev` call runs this script, and two runs
# rebuilding the same venv at once would break each other. The second waits,
# then finds the stamp written.
mkdir -p "$VENV"
if command -v flock >/dev/null; then
  exec 9>"$VENV/.bootstrap.lock"
  flock -n 9 || { log "waiting for another bootstrap of $VENV"; flock 9; }
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -f "$ENVFILE" ]]; then
    exit 0
  fi
fi
log "setting up $VENV ($MODE)"
T0=$(date +%s)

pick_python() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
  if [[ "$MODE" == system-* ]]; then command -v python3; return; fi
  for p in python3 python3.12 python3.11 python3.10; do
    if command -v "$p" >/dev/null 2>&1 &&
       "$p" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))'; then
      command -v "$p"; return
    fi
  done
  log "no Python 3.10-3.12 found (ROS 2 Kilted wheels exist only for those); set PYTHON=..."
  exit 1
}
PY=$(pick_python)

if [[ ! -x "$VENV/bin/python" ]]; then
  if [[ "$MODE" == system-* ]]; then
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
VPY="$VENV/bin/python"
LOG="$VENV/bootstrap.log"
pip_install() {
  # Quiet unless it fails; the full output stays in .venv/bootstrap.log.
  if ! "$VPY" -m pip install --disable-pip-version-check -q "$@" >>"$LOG" 2>&1; then
    grep -v '^WARNING: Location' "$LOG" | tail -20 >&2
    log "pip install $* failed (full log: $LOG)"
    return 1
  fi
}
pip_install --upgrade pip setuptools wheel

# open3d's wheel links libusb-1.0, which a minimal Debian/Ubuntu lacks.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing libusb-1.0-0 (needed by open3d)"
    apt-get update -qq >/dev/null && apt-get install -y -qq libusb-1.0-0 >/dev/null
  else
    log "WARNING: libusb-1.0-0 is missing; run 'sudo apt-get install libusb-1.0-0' or open3d will not import"
  fi
fi

if [[ "$MODE" == wheels-* ]]; then
  pip_install -r "$ROOT/requirements/ros-kilted.txt" -r "$ROOT/requirements/base.txt" \
              -r "$ROOT/requirements/dev.txt" -r "$ROOT/requirements/replay.txt"
  "$VPY" -m pip check >/dev/null 2>&1 || log "WARNING: pip check reports conflicts"
else
  # Keep the numpy that ROS was built against: pin it while adding our packages.
  SYS_NUMPY=$("$VPY" -c 'import numpy; print(numpy.__version__)')
  CONSTRAINTS="$VENV/system-constraints.txt"
  echo "numpy==$SYS_NUMPY" > "$CONSTRAINTS"
  for pair in onnxruntime:onnxruntime onnx:onnx scipy:scipy lap:lap rosbags:rosbags open3d-cpu:open3d \
              pytest:pytest pytest-timeout:pytest_timeout ruff:ruff catkin-pkg:catkin_pkg \
              opencv-python-headless:cv2 cv-bridge:cv_bridge PyYAML:yaml; do
    if ! "$VPY" -c "import ${pair#*:}" >/dev/null 2>&1; then
      PIP_CONSTRAINT="$CONSTRAINTS" pip_install "${pair%%:*}" || log "WARNING: could not install ${pair%%:*}"
    fi
  done
  # Ray for `perception replay --ray` (requirements/replay.txt). ray[data] needs
  # pandas >= 2.2.3, hence numpy >= 1.22.4: with an older system numpy (Humble:
  # 1.21) install plain ray + pyarrow, which is all the replay runner uses.
  REPLAY_REQ="$ROOT/requirements/replay.txt"
  if ! "$VPY" -c 'import numpy as n; raise SystemExit(tuple(map(int, n.__version__.split(".")[:2])) < (1, 23))'; then
    sed -E 's/^ray\[data\]/ray/' "$REPLAY_REQ" > "$VENV/replay-core.txt"
    REPLAY_REQ="$VENV/replay-core.txt"
  fi
  PIP_CONSTRAINT="$CONSTRAINTS" pip_install -r "$REPLAY_REQ" ||
    log "WARNING: could not install Ray; 'perception replay --ray' will ask for it"
  # The type checker and its stubs (pure Python, run by `./dev test`), pinned as in dev.txt.
  pip_install $(grep -E '^(mypy|types-PyYAML)==' "$ROOT/requirements/dev.txt") ||
    log "WARNING: could not install mypy"
fi

SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PYVER=$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# Environment for the wheels: every ros_*.libs folder on LD_LIBRARY_PATH so
# that subprocesses and pytest workers load the same libraries (instead of
# ros-wheels-bootstrapper re-executing the interpreter).
{
  echo "# generated by scripts/bootstrap.sh ($MODE); do not edit"
  echo "export VIRTUAL_ENV='$VENV'"
  echo "case \":\$PATH:\" in *\":$VENV/bin:\"*) ;; *) export PATH='$VENV/bin':\"\$PATH\";; esac"
  if [[ "$MODE" == wheels-* ]]; then
    libs="$VENV/lib"
    for d in "$SITE"/ros_*.libs "$SITE"/*.libs; do [[ -d "$d" ]] && libs="$libs:$d"; done
    echo "export PERCEPTION_LD_LIBRARY_PATH='$libs'"
    echo "export AMENT_PREFIX_PATH='$VENV'\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
    echo "export CMAKE_PREFIX_PATH='$VENV'\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}"
    echo "export RMW_IMPLEMENTATION=\${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
  else
    echo "export PERCEPTION_LD_LIBRARY_PATH="
  fi
} > "$ENVFILE.tmp"
mv "$ENVFILE.tmp" "$ENVFILE"

# shellcheck source=/dev/null
source "$ROOT/scripts/env.sh" --quiet

VM_PREFIX="$VENV/opt/vision_msgs"
# The stand-in is rebuilt only when what it is built from changed (not for
# every requirements change: removing it would break tests running meanwhile).
VM_WANT="$MODE:$PYVER:$( (cd "$ROOT" && cat requirements/ros-kilted.txt requirements/ros-build.txt \
  interfaces/vision_msgs/CMakeLists.txt interfaces/vision_msgs/package.xml \
  interfaces/vision_msgs/msg/*.msg) | sha256sum | cut -c1-16)"
if "$VPY" -c 'import vision_msgs.msg' >/dev/null 2>&1 && [[ ! -d "$VM_PREFIX" ]]; then
  log "using the installed vision_msgs: $("$VPY" -c 'import vision_msgs, os; print(os.path.dirname(vision_msgs.__file__))')"
elif [[ -f "$VM_PREFIX/.perception-build" && "$(cat "$VM_PREFIX/.perception-build")" == "$VM_WANT" ]]; then
  log "vision_msgs stand-in up to date ($VM_PREFIX)"
else
  log "vision_msgs not found: building the 4.x-compatible stand-in (interfaces/vision_msgs)"
  if [[ "$MODE" == wheels-* ]]; then
    pip_install -r "$ROOT/requirements/ros-build.txt"
    # The message wheels' exported CMake targets carry include paths of the
    # wheel build host (/opt/python/cpXY-cpXY/...). Point them at this venv's
    # Python and numpy headers so CMake's generate step succeeds.
    PYINC=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    NPINC=$("$VPY" -c 'import numpy; print(numpy.get_include())')
    [[ -f "$PYINC/Python.h" ]] || { log "Python headers missing at $PYINC (install python3-dev)"; exit 1; }
    { grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$VENV/share" --include='*.cmake' 2>/dev/null || true; } |
      while read -r f; do
        sed -i -E \
          -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$NPINC#g" \
          -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$PYINC#g" "$f"
      done
  fi
  BUILD="$VENV/build/vision_msgs"
  mkdir -p "$VENV/build"
  rm -rf "$BUILD" "$VM_PREFIX"
  cmake -S "$ROOT/interfaces/vision_msgs" -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$VM_PREFIX" \
        -DPython3_EXECUTABLE="$VPY" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
        > "$VENV/build/vision_msgs.cmake.log" 2>&1 ||
    { tail -30 "$VENV/build/vision_msgs.cmake.log" >&2; log "vision_msgs configure failed"; exit 1; }
  make -C "$BUILD" -j"$(nproc)" install > "$VENV/build/vision_msgs.make.log" 2>&1 ||
    { tail -30 "$VENV/build/vision_msgs.make.log" >&2; log "vision_msgs build failed"; exit 1; }
  echo "$VM_WANT" > "$VM_PREFIX/.perception-build"
fi
if [[ -d "$VM_PREFIX" ]]; then
  {
    echo "export PERCEPTION_LD_LIBRARY_PATH=\"\$PERCEPTION_LD_LIBRARY_PATH:$VM_PREFIX/lib\""
    echo "export PYTHONPATH='$VM_PREFIX/lib/python$PYVER/site-packages'\${PYTHONPATH:+:\$PYTHONPATH}"
    echo "export AMENT_PREFIX_PATH='$VM_PREFIX':\$AMENT_PREFIX_PATH"
  } >> "$ENVFILE"
  source "$ROOT/scripts/env.sh" --quiet
fi
"$VPY" -c 'import vision_msgs.msg as m; m.Detection2DArray(); m.LabelInfo()' ||
  { log "vision_msgs does not import after the build"; exit 1; }

pip_install --no-deps --no-build-isolation -e "$ROOT"

echo "$WANT" > "$STAMP"
log "ready in $(( $(date +%s) - T0 )) s: source scripts/env.sh, or use ./dev"
