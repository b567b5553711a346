#!/usr/bin/env bash
# `make bench`: every benchmark, full size, against the local stack (started if needed, stopped afterwards
# if started here). Each prints its figures as ratios to a goal or baseline measured in the same run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kappa-operator/target}
started=0
stack_status=$(hack/stack.sh status)
if ! grep -q '^kube-apiserver: running' <<<"$stack_status"; then
  hack/stack.sh up >/dev/null
  started=1
fi
cleanup() { if [ $started = 1 ]; then hack/stack.sh down; fi; }
trap cleanup EXIT
# shellcheck disable=SC1091
. .stack/env
cargo bench --benches
