#!/usr/bin/env bash
# Run the real `tritonserver` shipped in the nvidia-pytriton wheel on deploy/triton/models (CPU).
# Usage: deploy/local/tritonserver.sh [extra tritonserver flags...]
# Env: TRITON_VENV (default .venv-triton), TRITON_HOME (runtime copy, default var/triton/server),
#      ANNOT_TRITON_HTTP_PORT / ANNOT_TRITON_GRPC_PORT / ANNOT_TRITON_METRICS_PORT (8000/8001/8002).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${TRITON_VENV:-$ROOT/.venv-triton}"
HOME_DIR="${TRITON_HOME:-$ROOT/var/triton/server}"
PY="$VENV/bin/python"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
SRC="$SITE/pytriton/tritonserver"
PYVER="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"

# The wheel keeps one Python-backend stub per Python version beside the backend; the backend looks
# for it inside its own folder, so run from a copy with the right stub in place (as pytriton does).
if [[ ! -x "$HOME_DIR/bin/tritonserver" || "$SRC/bin/tritonserver" -nt "$HOME_DIR/bin/tritonserver" ]]; then
  rm -rf "$HOME_DIR.tmp" && mkdir -p "$(dirname "$HOME_DIR")"
  cp -r "$SRC" "$HOME_DIR.tmp"
  rm -rf "$HOME_DIR.tmp/python_backend_stubs"
  cp "$SRC/python_backend_stubs/$PYVER/triton_python_backend_stub" "$HOME_DIR.tmp/backends/python/"
  rm -rf "$HOME_DIR" && mv "$HOME_DIR.tmp" "$HOME_DIR"
fi

# The stub links libpython3.x.so: take the interpreter's own (DESIGN.md), then the wheel's libraries.
LIBDIR="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
export LD_LIBRARY_PATH="$LIBDIR:$SITE/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The stub's embedded interpreter ignores PYTHONPATH; the model adds this venv's packages (torch, OpenCV)
# and the repository root, for the project modules a model imports (services/models/grabcut.py).
export TRITON_MODEL_SITE_PACKAGES="$SITE:$ROOT"

exec "$HOME_DIR/bin/tritonserver" \
  --model-repository "${TRITON_MODEL_REPOSITORY:-$ROOT/deploy/triton/models}" \
  --backend-directory "$HOME_DIR/backends" \
  --http-port "${ANNOT_TRITON_HTTP_PORT:-8000}" \
  --grpc-port "${ANNOT_TRITON_GRPC_PORT:-8001}" \
  --metrics-port "${ANNOT_TRITON_METRICS_PORT:-8002}" \
  --log-verbose 0 \
  "$@"
