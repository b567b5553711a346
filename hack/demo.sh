#!/usr/bin/env bash
# `make demo`: the local stack, the operator, the examples. Ends by telling you how to look around and stop.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kappa-operator/target}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Starting the local stack (kube-apiserver, etcd, kube-controller-manager, AWS API)"
hack/stack.sh up >/dev/null
# shellcheck disable=SC1091
. .stack/env

say "Building the operator"
cargo build --quiet --bin kappa-operator
bin=$CARGO_TARGET_DIR/debug/kappa-operator

say "Installing the CRDs"
"$bin" crds | kubectl apply --server-side -f - >/dev/null
kubectl wait --for=condition=Established crd/eventlogs.kappa.dev crd/materializedviews.kappa.dev --timeout=60s >/dev/null

say "Starting the operator (log: .stack/logs/operator.log)"
if [ -f .stack/operator.pid ] && kill -0 "$(cat .stack/operator.pid)" 2>/dev/null; then
  kill "$(cat .stack/operator.pid)"; sleep 1
fi
kubectl create namespace kappa-demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
"$bin" run --cluster-id demo --lease-namespace kappa-demo --http-addr 127.0.0.1:0 \
  >.stack/logs/operator.log 2>&1 &
echo $! >.stack/operator.pid
for _ in $(seq 1 50); do grep -q "watching EventLogs" .stack/logs/operator.log && break; sleep 0.2; done
grep -q "watching EventLogs" .stack/logs/operator.log || { tail -20 .stack/logs/operator.log; exit 1; }
grep -E "connected to Kubernetes|became leader|watching" .stack/logs/operator.log | sed 's/^/  /'

say "Applying the game examples (examples/game) to namespace kappa-demo"
kubectl -n kappa-demo apply -k examples/game
sleep 3

say "kubectl get kappa -n kappa-demo"
kubectl -n kappa-demo get kappa

cat <<TXT

The operator runs in the background (pid $(cat .stack/operator.pid)). Look around:
  source .stack/env
  kubectl -n kappa-demo get mv                     # phase, backfill progress, readiness
  kubectl -n kappa-demo describe mv players        # conditions and Events
  kubectl explain materializedview.spec.projection # the API, documented
  aws dynamodb list-tables                         # the AWS API of the local stack
  tail -f .stack/logs/operator.log
Stop everything with: make stack-down
TXT
