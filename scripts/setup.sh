#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian 12 machine: the Debian packages the tests and the demo
# use as real peers (dcmtk, dicom3tools, Orthanc, Debian's PyTorch), the Go modules, and the pinned
# onnxruntime shared library. `make test`, `make demo` and `make bench` run it first; a second run
# finds everything in place and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  make gcc ca-certificates curl
  dcmtk dicom3tools orthanc orthanc-dicomweb libgdcm-tools plastimatch
  python3 python3-torch python3-onnx python3-numpy python3-scipy python3-pydicom
  python3-matplotlib python3-pil python3-tqdm python3-pytest python3-yaml systemd
)

# Pinned onnxruntime: the npm package onnxruntime-node ships the CPU library for linux-x64. We only
# unpack the tarball (its install script would fetch CUDA parts from elsewhere) and check both the
# tarball and the library against these digests.
ORT_VERSION=1.27.0
ORT_TGZ_SHA256=c3779c01c59832f8c03e2c392ac3af10bf08579f1822e8b1c63cc451edb302a2
ORT_LIB_SHA256=d8aff4aa8abee8fb2abb2f2f2459ffc94461e781e41b9f7c072829dd0d470221
ORT_DIR=third_party/onnxruntime
ORT_LIB=$ORT_DIR/libonnxruntime.so.$ORT_VERSION

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Node's npm fetches the pinned onnxruntime; a machine that has npm from elsewhere keeps it.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
  echo "setup: Go (1.21 or newer; it fetches the toolchain go.mod names) is required and was not found on PATH" >&2
  exit 1
fi
go mod download

if [ ! -f "$ORT_LIB" ] || ! echo "$ORT_LIB_SHA256  $ORT_LIB" | sha256sum -c --status; then
  echo "setup: fetching onnxruntime $ORT_VERSION (npm onnxruntime-node, CPU library for linux-x64)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null)
  echo "$ORT_TGZ_SHA256  $tmp/onnxruntime-node-$ORT_VERSION.tgz" | sha256sum -c --status \
    || { echo "setup: onnxruntime-node tarball checksum mismatch" >&2; exit 1; }
  tar -xzf "$tmp/onnxruntime-node-$ORT_VERSION.tgz" -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1
  mkdir -p "$ORT_DIR"
  install -m 0644 "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$ORT_LIB.tmp"
  echo "$ORT_LIB_SHA256  $ORT_LIB.tmp" | sha256sum -c --status \
    || { rm -f "$ORT_LIB.tmp"; echo "setup: libonnxruntime checksum mismatch" >&2; exit 1; }
  mv "$ORT_LIB.tmp" "$ORT_LIB"
fi
# staticcheck, pinned: `make test` runs it. 2026.2.2 (v0.8.2) is the release that supports the Go
# version go.mod names; it goes into bin/ next to the build, not into the user's GOPATH.
STATICCHECK_VERSION=v0.8.2
STATICCHECK=bin/staticcheck
if ! [ -x "$STATICCHECK" ] || ! "$STATICCHECK" -version 2>/dev/null | grep -q "(${STATICCHECK_VERSION#v})"; then
  echo "setup: installing staticcheck $STATICCHECK_VERSION"
  GOBIN="$PWD/bin" go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION"
fi
# dcmjs, the library OHIF loads DICOM SEG through, for the viewer check of our SEGs
# (pipeline/viewer_dcmjs_test.go): installed from its lock file, again only when the lock changes.
VIEWER_CHECK=testdata/viewer
VIEWER_LOCK_SUM=$(sha256sum "$VIEWER_CHECK/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$VIEWER_CHECK/node_modules/.dpersona-lock-sha256" 2>/dev/null)" != "$VIEWER_LOCK_SUM" ]; then
  echo "setup: installing $VIEWER_CHECK's npm packages (npm ci)"
  (cd "$VIEWER_CHECK" && npm ci --no-audit --no-fund --silent)
  echo "$VIEWER_LOCK_SUM" > "$VIEWER_CHECK/node_modules/.dpersona-lock-sha256"
fi
echo "setup: ok (onnxruntime $ORT_VERSION at $ORT_LIB, staticcheck $STATICCHECK_VERSION, dcmjs in $VIEWER_CHECK)"
