#!/usr/bin/env bash
# A local Label Studio 1.23.2 for development and tests, in its own virtual environment.
#
#   bash scripts/label_studio.sh install      # create .ls-venv (~1 GB, ~90 s; once)
#   bash scripts/label_studio.sh start        # install if missing, then run in the foreground
#
# Label Studio pins its own label-studio-sdk and ~160 packages, so it never goes into .venv.
# Settings (environment):
#   LS_PORT      port on 127.0.0.1 (default 8080). Label Studio silently moves to port+1 when the
#                port is busy, so this script refuses a busy port instead.
#   LS_DATA_DIR  data directory: SQLite db, media (default .ls/data)
#   LS_USERNAME, LS_PASSWORD  the admin user created on first start (default admin@example.com /
#                admin-password)
#   LS_TOKEN     its legacy API token (> 5 characters; default annotator-dev-token); use it as
#                ANNOTATOR_LABEL_STUDIO_TOKEN. Only applied when the organisation is created, i.e.
#                on the first start with an empty data directory.
#   LS_VENV      the virtual environment (default .ls-venv); PYTHON the interpreter that creates it
set -euo pipefail
cd "$(dirname "$0")/.."

LS_VERSION=1.23.2
LS_VENV=${LS_VENV:-.ls-venv}
PYTHON=${PYTHON:-python3}

install() {
  if [ -x "$LS_VENV/bin/label-studio" ] \
    && "$LS_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('label-studio') != '$LS_VERSION')" 2>/dev/null; then
    return 0
  fi
  echo "installing label-studio==$LS_VERSION into $LS_VENV (~1 GB, ~90 s) ..." >&2
  # Install into a temporary directory and move it into place, so an interrupted install never
  # leaves a half-built venv that looks complete.
  local tmp="$LS_VENV.partial"
  rm -rf "$tmp"
  "$PYTHON" -m venv "$tmp"
  # (pip's notes about unreachable extra index locations are dropped; errors still show)
  { "$tmp/bin/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true; }
  "$tmp/bin/python" -m pip install --quiet "label-studio==$LS_VERSION" 2>&1 \
    | { grep -v "is ignored: it is neither" || true; }
  "$tmp/bin/python" -c "import label_studio" # fail here, not at start, if the install failed
  rm -rf "$LS_VENV"
  mv "$tmp" "$LS_VENV"
  # A moved venv keeps the old path in its scripts' shebangs: rewrite them.
  local abs_tmp abs_venv
  abs_tmp="$(cd "$(dirname "$LS_VENV")" && pwd)/$(basename "$tmp")"
  abs_venv="$(cd "$(dirname "$LS_VENV")" && pwd)/$(basename "$LS_VENV")"
  grep -rlI --null "$abs_tmp" "$LS_VENV/bin" | xargs -0 -r sed -i "s#$abs_tmp#$abs_venv#g"
  echo "label-studio $LS_VERSION installed in $LS_VENV" >&2
}

start() {
  install
  local port=${LS_PORT:-8080}
  local data_dir=${LS_DATA_DIR:-.ls/data}
  if "$LS_VENV/bin/python" - "$port" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
PY
  then
    echo "port $port on 127.0.0.1 is busy (Label Studio would silently use another): set LS_PORT" >&2
    exit 1
  fi
  mkdir -p "$data_dir"
  export LABEL_STUDIO_BASE_DATA_DIR
  LABEL_STUDIO_BASE_DATA_DIR="$(cd "$data_dir" && pwd)"
  export LABEL_STUDIO_USERNAME=${LS_USERNAME:-admin@example.com}
  export LABEL_STUDIO_PASSWORD=${LS_PASSWORD:-admin-password}
  export LABEL_STUDIO_USER_TOKEN=${LS_TOKEN:-annotator-dev-token}
  export LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true
  export LATEST_VERSION_CHECK=false
  export COLLECT_ANALYTICS=false
  export SENTRY_DSN="" FRONTEND_SENTRY_DSN=""  # no error reports leave the machine
  # Our webhook receiver and image server run on 127.0.0.1: allow loopback targets.
  export SSRF_PROTECTION_ENABLED=false
  # Its own SQLite file in the data directory (LS would otherwise honour a DJANGO_DB from the
  # environment, whose "default" is a PostgreSQL database on localhost).
  export DJANGO_DB=sqlite DATABASE_NAME="$LABEL_STUDIO_BASE_DATA_DIR/label_studio.sqlite3"
  exec "$LS_VENV/bin/label-studio" start --no-browser --port "$port" --internal-host 127.0.0.1 \
    --host "http://127.0.0.1:$port"
}

case "${1:-start}" in
  install) install ;;
  start) start ;;
  *)
    echo "usage: $0 [install|start]" >&2
    exit 2
    ;;
esac
