#!/usr/bin/env bash
# `make image`: the operator's OCI image, built without a container daemon (the Containerfile describes the
# same image for machines that have one).
#
#   hack/image.sh [--binary PATH] [--out DIR] [--arch amd64|arm64 (default: this machine's)]
#
# 1. Builds the release binary with cargo-zigbuild against glibc 2.34 (what Lambda's provided.al2023
#    has), so the very binary the image runs is also the built-in Lambda functions' `bootstrap`
#    (the operator zips its own executable). --binary takes an existing build instead (tests use the
#    debug binary to check the image's assembly in seconds).
# 2. Lays out a distroless-style root file system: the binary, exactly the shared libraries it links
#    (from this machine's Debian packages, their copyright files beside them), the CA bundle, and
#    passwd/group with the non-root user 65532 (`nonroot`). No shell, no package manager.
# 3. crane (go-containerregistry) appends that layer to an empty OCI base, sets the entrypoint, user and
#    labels, and writes an OCI image layout and an image tarball (`docker load`, `podman load`,
#    `kind load image-archive`) to DIR (default dist/image). A registry served by crane on 127.0.0.1
#    for the duration of the build carries the image between those steps; nothing leaves the machine.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Lambda's provided.al2023 runtime has glibc 2.34: the binary may need no newer symbol version.
GLIBC=2.34
# The name the chart pulls (its image.repository) and the tarball carries.
IMAGE_NAME=${KAPPA_IMAGE_NAME:-ghcr.io/kappa-dev/kappa-operator}
binary=""
out=$REPO/dist/image
case $(uname -m) in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
usage() { echo "usage: hack/image.sh [--binary PATH] [--out DIR] [--arch amd64|arm64]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --binary | --out | --arch)
      [ $# -ge 2 ] && [ -n "$2" ] || usage
      case $1 in --binary) binary=$2 ;; --out) out=$2 ;; --arch) arch=$2 ;; esac
      shift 2
      ;;
    *) usage ;;
  esac
done

say() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] error: %s\n' "$*" >&2; exit 1; }

case $arch in
  amd64) rust_arch=x86_64 ;;
  # The image's libraries are this machine's: an arm64 image is assembled on an arm64 machine
  # (the release workflow's arm64 runner), not cross-assembled here.
  arm64) rust_arch=aarch64 ;;
  *) die "--arch: amd64 or arm64" ;;
esac
[ "$(uname -m)" = "$rust_arch" ] || die "an $arch image is assembled on an $arch machine (this is $(uname -m))"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/Cargo.toml" | head -n 1)
[ -n "$version" ] || die "no version in Cargo.toml"
crane=$("$REPO/hack/tools.sh" path crane)
ocitar=$("$REPO/hack/tools.sh" path ocitar)
for tool in ldd tar dpkg-query python3; do
  command -v "$tool" >/dev/null || die "$tool is missing: apt-get install -y libc-bin tar dpkg python3"
done
[ -f /etc/ssl/certs/ca-certificates.crt ] || die "no CA bundle: apt-get install -y ca-certificates"

# ---------------------------------------------------------------- 1. the binary
built_here=false
if [ -z "$binary" ]; then
  built_here=true
  zigbuild=$("$REPO/hack/tools.sh" path cargo-zigbuild)
  PATH=$(dirname "$zigbuild"):$PATH # its venv's python3 has ziglang
  export PATH
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kappa-operator/target}
  export CARGO_PROFILE_RELEASE_STRIP=symbols
  # Reproducible: the paths compiled into panic messages name no build machine's directories (the
  # repository and CARGO_HOME are remapped; the standard library's are /rustc/<commit> already), so the
  # same commit and pinned toolchain give the same binary wherever it is built.
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  export RUSTFLAGS="--remap-path-prefix=$REPO=/kappa-operator --remap-path-prefix=$cargo_home=/cargo"
  say "cargo zigbuild --release for $rust_arch-unknown-linux-gnu.$GLIBC (cold: 15-40 minutes on 2 cores)"
  nice -n 19 cargo zigbuild --release --locked --bin kappa-operator \
    --target "$rust_arch-unknown-linux-gnu.$GLIBC" || die "cargo zigbuild failed"
  binary=$CARGO_TARGET_DIR/$rust_arch-unknown-linux-gnu/release/kappa-operator
fi
[ -x "$binary" ] || die "$binary is not an executable"

# ---------------------------------------------------------------- 2. the root file system
work=$(mktemp -d)
registry_pid=""
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
root=$work/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
chmod 1777 "$root/tmp"
install -m 0755 "$binary" "$root/usr/local/bin/kappa-operator"

# The shared libraries the dynamic loader would load, at the paths it looks in.
packages=()
while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
  pkg=$(dpkg-query -S "$(readlink -f "$lib")" 2>/dev/null | head -n 1 | cut -d: -f1) \
    || pkg=$(dpkg-query -S "$lib" 2>/dev/null | head -n 1 | cut -d: -f1) || pkg=""
  [ -n "$pkg" ] && packages+=("$pkg")
done < <(ldd "$binary" | grep -o '/[^ ]*' | sort -u)
[ ${#packages[@]} -gt 0 ] || die "ldd found no shared libraries in $binary"
base=""
for pkg in $(printf '%s\n' "${packages[@]}" | sort -u); do
  mkdir -p "$root/usr/share/doc/$pkg"
  cp "/usr/share/doc/$pkg/copyright" "$root/usr/share/doc/$pkg/" 2>/dev/null || true
  base+="${base:+ }$pkg=$(dpkg-query -W -f '${Version}' "$pkg")"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"

# One reproducible layer: sorted, root-owned but for the user's home (appended last, the user's own),
# timestamps of the last commit. No chown: it works the same when the build does not run as root.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)}
reproducible=(--sort=name --numeric-owner --mtime="@$epoch" --format=posix
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime)
tar "${reproducible[@]}" --owner=0 --group=0 --exclude=./home/nonroot -C "$root" -cf "$work/layer.tar" .
tar "${reproducible[@]}" --owner=65532 --group=65532 --no-recursion -C "$root" -rf "$work/layer.tar" \
  ./home/nonroot

# ---------------------------------------------------------------- 3. the image
mkdir -p "$work/registry"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
"$crane" registry serve --address "127.0.0.1:$port" --disk "$work/registry" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 1 40); do
  curl -sf "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
  kill -0 "$registry_pid" 2>/dev/null || { cat "$work/registry.log" >&2; die "crane registry serve exited"; }
  sleep 0.25
done
ref=127.0.0.1:$port/kappa-operator:$version
"$crane" append --oci-empty-base --platform "linux/$arch" -f "$work/layer.tar" -t "$ref" >/dev/null
# The commit the binary was built from: known only when this script built it from this checkout.
revision=unknown
if $built_here && git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
  revision=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)
fi
"$crane" mutate "$ref" -t "$ref" --set-platform "linux/$arch" \
  --entrypoint /usr/local/bin/kappa-operator --user 65532:65532 --workdir / \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  -l org.opencontainers.image.title=kappa-operator \
  -l org.opencontainers.image.version="$version" \
  -l org.opencontainers.image.revision="$revision" \
  -l org.opencontainers.image.source=https://github.com/kappa-dev/kappa-operator \
  -l dev.kappa.glibc-required="<=$GLIBC" \
  -l dev.kappa.base-packages="$base" >/dev/null

# Only what an earlier build wrote there: DIR may hold other files (the --binary given, say).
mkdir -p "$out"
rm -rf "$out/oci" "$out/digest" "$out/kappa-operator-$version-$arch.tar"
"$crane" pull --format oci "$ref" "$out/oci"
# The tarball under the name users pull (crane would name it after the build's own registry).
"$ocitar" -layout "$out/oci" -tag "$IMAGE_NAME:$version" -out "$out/kappa-operator-$version-$arch.tar"
digest=$("$crane" digest "$ref")
echo "$digest" >"$out/digest"
say "kappa-operator:$version ($arch) $digest"
say "  OCI layout:  $out/oci   (push: crane push $out/oci <registry>/kappa-operator:$version)"
say "  tarball:     $out/kappa-operator-$version-$arch.tar   (docker load -i / kind load image-archive)"
say "  libraries from: $base"
