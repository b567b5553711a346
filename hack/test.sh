#!/usr/bin/env bash
# `make test`: lint, then every test (unit and integration) against the local stack. Starts the stack if
# it is not running, and stops it afterwards if it started it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kappa-operator/target}
# Cargo's fingerprint of this package leaves its path out, so a test binary built in another checkout
# sharing CARGO_TARGET_DIR (CI's clone, a worktree) is reused when this checkout's files are older, and it
# reads its fixtures from that checkout (env!("CARGO_MANIFEST_DIR")). Rebuild when the checkout changes.
mkdir -p "$CARGO_TARGET_DIR"
if [ "$(cat "$CARGO_TARGET_DIR/.kappa-checkout" 2>/dev/null)" != "$PWD" ]; then
  touch src/lib.rs src/main.rs
  echo "$PWD" >"$CARGO_TARGET_DIR/.kappa-checkout"
fi

started=0
# (status into a variable first: with pipefail, `grep -q` closing the pipe early would fail the pipeline)
stack_status=$(hack/stack.sh status)
if ! grep -q '^kube-apiserver: running' <<<"$stack_status"; then
  hack/stack.sh up >/dev/null
  started=1
fi
# A demo operator watches every namespace and would reconcile the tests' objects too.
if [ -f .stack/operator.pid ] && kill -0 "$(cat .stack/operator.pid)" 2>/dev/null; then
  echo "[test] stopping the demo operator (pid $(cat .stack/operator.pid)) so it does not race the tests"
  kill "$(cat .stack/operator.pid)"
fi
cleanup() { if [ $started = 1 ]; then hack/stack.sh down; else echo "[test] the stack was already up; left running"; fi; }
trap cleanup EXIT
# shellcheck disable=SC1091
. .stack/env

# crane, promtool, actionlint, zig: built once, cached (tests/image.rs, tests/chart_observability.rs, ...).
hack/tools.sh install
echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy -D warnings"
cargo clippy --all-targets --features failpoints --quiet -- -D warnings
# The local stack's Lambda functions run the operator binary these tests build (hack/local_lambda.py).
echo "$CARGO_TARGET_DIR/debug/kappa-operator" >.stack/lambda-binary
# cargo-nextest runs every test in its own process, several at once (.config/nextest.toml); the tests
# that replace the cluster's CRDs (tests/crd_skew.rs) run alone afterwards. KAPPA_TEST_THREADS overrides
# the number at once.
NEXTEST=$(hack/tools.sh path cargo-nextest)
# Given on the command line so that no NEXTEST_* variable of the machine changes it: every test beside
# another shares the one emulator process.
threads=(--test-threads "${KAPPA_TEST_THREADS:-4}")
failed=0
echo "[test] cargo nextest ($("$NEXTEST" nextest --version | head -1)): unit and integration tests" \
  "(with the crash points compiled in), ${KAPPA_TEST_THREADS:-4} at once"
"$NEXTEST" nextest run --lib --bins --tests --features failpoints "${threads[@]}" \
  -E 'not binary(crd_skew)' || failed=1
echo "[test] cargo nextest: tests/crd_skew.rs alone (it replaces the CRDs every other test uses)"
"$NEXTEST" nextest run --lib --bins --tests --features failpoints -E 'binary(crd_skew)' || failed=1
# The benchmarks' smoke runs (nextest lists tests; a bench binary is a program of its own). Named one by
# one: `--benches` would run the library's unit tests again (a lib target counts as a bench target).
echo "[test] the benchmarks' smoke runs"
cargo test --features failpoints --bench backfill_pipeline --bench aggregates --bench operator_scale || failed=1
echo "[test] the local stack's Lambda harness (hack/local-lambda-tests)"
KAPPA_TEST_OPERATOR_BINARY=$CARGO_TARGET_DIR/debug/kappa-operator \
  "${KAPPA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kappa-operator}/venv-moto-5.2.5/bin/python" \
  -m unittest discover -s hack/local-lambda-tests || failed=1
if [ $failed = 1 ]; then
  echo "[test] FAILED: see the failures above (nextest prints each failing test's output)" >&2
  exit 1
fi
echo "[test] all passed"
