#!/usr/bin/env bash
# Installs everything the engine and its tests need on a Debian machine:
# Debian packages (only those missing), the Python virtual environment with
# the project and its extras, and the npm packages of the browser tests.
# Safe to run again: each step is skipped when it is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TEST_TOOLS="${1:-}"   # "--test" also installs what the test suite needs
PY="${PYTHON:-python3}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_pkgs=()
command -v ffmpeg >/dev/null || need_pkgs+=(ffmpeg)
if [ "$WITH_TEST_TOOLS" = "--test" ]; then
  [ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need_pkgs+=(nginx-light libnginx-mod-rtmp)
  command -v gst-launch-1.0 >/dev/null || need_pkgs+=(gstreamer1.0-tools gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav)
  command -v chromium >/dev/null || need_pkgs+=(chromium)
  command -v node >/dev/null || need_pkgs+=(nodejs npm)
  command -v pg_ctlcluster >/dev/null || need_pkgs+=(postgresql)
  command -v redis-server >/dev/null || need_pkgs+=(redis-server)
fi
"$PY" -c 'import venv' 2>/dev/null || need_pkgs+=(python3-venv)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${need_pkgs[*]}"
  as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
extras="all"
[ "$WITH_TEST_TOOLS" = "--test" ] && extras="all,test"
stamp=".venv/.fanz-installed-$extras"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing Python packages ($extras)"
  .venv/bin/pip install -q --disable-pip-version-check -e ".[$extras]"
  # The effects use the face detection and selfie segmentation models that
  # ship inside this wheel, read with OpenCV's DNN module; mediapipe's own
  # dependencies (jax, matplotlib, opencv-contrib) are not needed.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps "mediapipe==0.10.14"
  echo "$want" > "$stamp"
fi

if [ "$WITH_TEST_TOOLS" = "--test" ] && [ -f tests/browser/package.json ]; then
  lock_stamp="tests/browser/node_modules/.fanz-lock"
  want_lock="$(sha256sum tests/browser/package-lock.json 2>/dev/null | cut -d' ' -f1)"
  if [ ! -f "$lock_stamp" ] || [ "$(cat "$lock_stamp")" != "$want_lock" ]; then
    echo "bootstrap: installing npm packages for the browser tests"
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    echo "$want_lock" > "$lock_stamp"
  fi
fi
