#!/usr/bin/env bash
# Create .venv and install annotator with everything the tests and the main job need.
# On a machine without an NVIDIA GPU the CPU build of torch is installed first, so the
# bounded `torch` requirement is already met and pip never pulls the CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    $PIP install --quiet "torch>=2.4,<3"
  else
    # CPU build: the wheel this kind of machine ships (pip finds it), else the index named by
    # TORCH_INDEX_URL (e.g. PyTorch's CPU wheel index), else the default index.
    if ! $PIP install --quiet "torch==2.13.0" 2>/dev/null; then
      if [ -n "${TORCH_INDEX_URL:-}" ]; then
        $PIP install --quiet "torch>=2.4,<3" --index-url "$TORCH_INDEX_URL"
      else
        echo "note: no local CPU torch wheel; installing torch from the default index" >&2
        $PIP install --quiet "torch>=2.4,<3"
      fi
    fi
  fi
fi
$PIP install --quiet -e ".[all,dev]"
# The tests validate docker-compose.yml with `docker compose config` (or Debian's docker-compose
# 1.29, which needs no Docker daemon). Install the latter when neither is present and this is a
# Debian machine we may administer: about a dozen small python3 packages, ~10 s. Best effort:
# without it the compose test checks the file's structure only and says why.
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose \
      >/dev/null 2>&1 || echo "note: could not install docker-compose (apt)" >&2
  fi
fi
# The browser test (tests/web/test_browser.py) drives Debian's Chromium through Playwright; a
# browser is never downloaded (no `playwright install`). Install it when missing and this is a
# Debian machine we may administer; best effort: without it that test fails and says why.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends chromium chromium-driver) >/dev/null 2>&1 \
      || echo "note: could not install chromium (apt)" >&2
  fi
fi
echo "annotator installed in $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
