# Source this file (bash/zsh): `source scripts/env.sh`. It loads the environment
# made by scripts/bootstrap.sh and the DDS settings that are mandatory on
# shared machines: discovery stays on this host, and each run gets its own
# ROS_DOMAIN_ID unless one is already set.
_perception_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
_perception_venv=${PERCEPTION_VENV:-$_perception_root/.venv}
if [ ! -f "$_perception_venv/perception-env.sh" ]; then
  echo "perception: no environment yet; run scripts/bootstrap.sh (or ./dev) first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck source=/dev/null
. "$_perception_venv/perception-env.sh"
if [ -n "$PERCEPTION_LD_LIBRARY_PATH" ]; then
  case ":${LD_LIBRARY_PATH:-}:" in
    *":$PERCEPTION_LD_LIBRARY_PATH:"*) ;;
    *) export LD_LIBRARY_PATH="$PERCEPTION_LD_LIBRARY_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
  esac
fi
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST   # Jazzy and later
export ROS_LOCALHOST_ONLY=1                      # Humble and older
if [ -z "${ROS_DOMAIN_ID:-}" ]; then
  export ROS_DOMAIN_ID=$(( ($$ % 100) + 1 ))
fi
if [ "${1:-}" != "--quiet" ]; then
  echo "perception env: $VIRTUAL_ENV, ROS_DOMAIN_ID=$ROS_DOMAIN_ID, discovery LOCALHOST" >&2
fi
unset _perception_root _perception_venv
