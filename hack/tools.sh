#!/usr/bin/env bash
# The release and chart tools, pinned and cached like hack/stack.sh's (same $KAPPA_CACHE/bin and path/):
#
#   hack/tools.sh install      build or find every tool below
#   hack/tools.sh path NAME    print the path of one (building it first if missing)
#
#   crane         go-containerregistry's CLI: assembles and pushes OCI images without a container daemon
#   ocitar        hack/tools/ocitar: an OCI layout to a `docker load` tarball under its release name
#                 (go-containerregistry's tarball writer; built from the module here, keyed by its sources)
#   promtool      Prometheus's rule checker (`promtool check rules`)
#   actionlint    the GitHub Actions workflow linter
#   cargo-zigbuild, zig   link Rust binaries against an older glibc (Lambda's provided.al2023 has 2.34)
#   helm          the version hack/stack.sh pins, built the same way into the same place (for jobs that
#                 need helm but no cluster)
#   ShellCheck    Debian's shellcheck package (actionlint checks the workflows' scripts with it)
#   cargo-nextest the test runner `make test` uses: every test its own process, several at once (the
#                 integration tests mostly wait on the stack), built from crates.io with `cargo install
#                 --locked` (about 12 minutes the first time)
#
# Go tools are built from their modules through the module proxy with the machine's Go (GOTOOLCHAIN=local);
# zig and cargo-zigbuild come from their PyPI packages (prebuilt) in a venv of their own.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CRANE_VERSION=v0.22.1       # github.com/google/go-containerregistry
PROMETHEUS_VERSION=v0.316.0 # github.com/prometheus/prometheus (Go module version of Prometheus 3.16)
ACTIONLINT_VERSION=v1.7.12  # github.com/rhysd/actionlint
ZIG_VERSION=0.17.0          # PyPI ziglang
ZIGBUILD_VERSION=0.24.0     # PyPI cargo-zigbuild
HELM_VERSION=$(sed -n 's/^HELM_VERSION=//p' "$REPO/hack/stack.sh")
NEXTEST_VERSION=0.9.151     # crates.io cargo-nextest

KAPPA_CACHE=${KAPPA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kappa-operator}
BIN=$KAPPA_CACHE/bin
ZIG_VENV=$KAPPA_CACHE/venv-zig-$ZIG_VERSION-zigbuild-$ZIGBUILD_VERSION
export GOTOOLCHAIN=local
export GOFLAGS=-mod=mod
export GOMODCACHE=${GOMODCACHE:-$HOME/.cache/go-mod}
export GOCACHE=${GOCACHE:-$HOME/.cache/go-build}

say() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] error: %s\n' "$*" >&2; exit 1; }

go_tool() { # name, version, package@version, note, extra ldflags
  local name=$1 version=$2 pkg=$3 note=$4 ldflags=${5:-}
  [ -x "$BIN/$name-$version" ] && return 0
  command -v go >/dev/null || die "Go is needed to build $name; install Go 1.25 or newer."
  say "building $name $version from its Go module ($note)."
  local out; out=$(mktemp -d)
  GOBIN=$out nice -n 19 go install -trimpath -ldflags "-s -w $ldflags" "$pkg" || die "go install $pkg failed"
  mkdir -p "$BIN" && mv "$out/$name" "$BIN/$name-$version" && rm -rf "$out"
}

# A Go tool whose module is in this repository (hack/tools/NAME): cached under the hash of its sources.
local_go_tool() { # name
  local name=$1 dir=$REPO/hack/tools/$1
  local bin; bin=$(local_go_path "$name")
  [ -x "$bin" ] && return 0
  command -v go >/dev/null || die "Go is needed to build $name; install Go 1.25 or newer."
  say "building $name from hack/tools/$name (go-containerregistry; seconds when crane is built)."
  mkdir -p "$BIN"
  (cd "$dir" && nice -n 19 go build -trimpath -ldflags "-s -w" -o "$bin.tmp" .) || die "go build $name failed"
  mv "$bin.tmp" "$bin"
}

local_go_path() { # name
  local sum; sum=$(cat "$REPO/hack/tools/$1"/go.mod "$REPO/hack/tools/$1"/go.sum "$REPO/hack/tools/$1"/*.go \
    | sha256sum | cut -c1-12)
  echo "$BIN/$1-$sum"
}

zig_tools() {
  [ -x "$ZIG_VENV/bin/cargo-zigbuild" ] && "$ZIG_VENV/bin/python" -c 'import ziglang' 2>/dev/null && return 0
  say "installing ziglang==$ZIG_VERSION and cargo-zigbuild==$ZIGBUILD_VERSION into $ZIG_VENV."
  python3 -m venv "$ZIG_VENV" || die "python3 -m venv failed; install python3-venv."
  "$ZIG_VENV/bin/pip" install -q --disable-pip-version-check "ziglang==$ZIG_VERSION" \
    "cargo-zigbuild==$ZIGBUILD_VERSION" || die "pip install ziglang cargo-zigbuild failed"
}

nextest() {
  [ -x "$BIN/cargo-nextest-$NEXTEST_VERSION" ] && return 0
  say "building cargo-nextest $NEXTEST_VERSION from crates.io (about 12 minutes the first time)."
  local out; out=$(mktemp -d)
  nice -n 19 cargo install --locked --quiet "cargo-nextest@$NEXTEST_VERSION" --root "$out" \
    --target-dir "$KAPPA_CACHE/nextest-build" || die "cargo install cargo-nextest@$NEXTEST_VERSION failed"
  mkdir -p "$BIN" && mv "$out/bin/cargo-nextest" "$BIN/cargo-nextest-$NEXTEST_VERSION"
  rm -rf "$out" "$KAPPA_CACHE/nextest-build"
}

shellcheck_package() {
  command -v shellcheck >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "shellcheck is missing: sudo apt-get install -y shellcheck"
  say "installing Debian's shellcheck."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q shellcheck >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q shellcheck >/dev/null; } \
    || die "apt-get install -y shellcheck failed"
}

build() {
  case $1 in
    crane) go_tool crane "$CRANE_VERSION" "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION" \
      "about a minute the first time" ;;
    ocitar) local_go_tool ocitar ;;
    promtool) go_tool promtool "$PROMETHEUS_VERSION" \
      "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" "5-15 minutes the first time" ;;
    actionlint) go_tool actionlint "$ACTIONLINT_VERSION" \
      "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" "about a minute the first time" ;;
    cargo-zigbuild | zig) zig_tools ;;
    helm) go_tool helm "$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "about 3 minutes the first time" \
      "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" ;; # as hack/stack.sh builds it
    shellcheck) shellcheck_package ;;
    cargo-nextest) nextest ;;
    *) die "unknown tool $1 (crane, ocitar, promtool, actionlint, cargo-zigbuild, zig, helm, shellcheck, cargo-nextest)" ;;
  esac
}

where() {
  case $1 in
    crane) echo "$BIN/crane-$CRANE_VERSION" ;;
    ocitar) local_go_path ocitar ;;
    promtool) echo "$BIN/promtool-$PROMETHEUS_VERSION" ;;
    actionlint) echo "$BIN/actionlint-$ACTIONLINT_VERSION" ;;
    cargo-zigbuild) echo "$ZIG_VENV/bin/cargo-zigbuild" ;;
    # cargo-zigbuild runs `python3 -m ziglang` from its venv when no `zig` is on PATH.
    zig) echo "$ZIG_VENV/bin/python3" ;;
    helm) echo "$BIN/helm-$HELM_VERSION" ;;
    shellcheck) command -v shellcheck ;;
    cargo-nextest) echo "$BIN/cargo-nextest-$NEXTEST_VERSION" ;;
    *) die "unknown tool $1" ;;
  esac
}

# Stable names beside hack/stack.sh's, on the PATH that .stack/env exports.
link() {
  mkdir -p "$KAPPA_CACHE/path"
  local name
  for name in crane promtool actionlint cargo-zigbuild cargo-nextest; do
    [ -x "$(where "$name")" ] && ln -sf "$(where "$name")" "$KAPPA_CACHE/path/$name"
  done
  return 0
}

case ${1:-} in
  install)
    for t in crane actionlint shellcheck cargo-zigbuild promtool cargo-nextest; do build "$t"; done
    link ;;
  path)
    [ -n "${2:-}" ] || die "usage: hack/tools.sh path NAME"
    build "$2" && link && where "$2" ;;
  *) die "usage: hack/tools.sh install | path NAME" ;;
esac
