#!/usr/bin/env bash
# `make demo`: the local stack, the operator, the examples. Ends by telling you how to look around and stop.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/kappa-operator/target}
KAPPA_CACHE_DIR=${KAPPA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kappa-operator}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Starting the local stack (kube-apiserver, etcd, kube-controller-manager, AWS API)"
hack/stack.sh up >/dev/null
# shellcheck disable=SC1091
. .stack/env

say "Building the operator"
cargo build --quiet --bin kappa-operator
bin=$CARGO_TARGET_DIR/debug/kappa-operator

say "Installing the CRDs"
# --force-conflicts: the CRDs are the demo's to set, also on a stack the tests (another field manager) used.
"$bin" crds | kubectl apply --server-side --force-conflicts -f - >/dev/null
kubectl wait --for=condition=Established crd/eventlogs.kappa.dev crd/materializedviews.kappa.dev --timeout=60s >/dev/null

say "Starting the operator (log: .stack/logs/operator.log)"
if [ -f .stack/operator.pid ] && kill -0 "$(cat .stack/operator.pid)" 2>/dev/null; then
  kill "$(cat .stack/operator.pid)"; sleep 1
fi
kubectl create namespace kappa-demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# A debug build is far over Lambda's 50 MB upload limit: the built-in functions (the log's writer) are
# created from a stand-in bootstrap, which the local stack's Lambda harness points at this binary.
echo "$bin" >.stack/lambda-binary
push_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
KAPPA_LAMBDA_CODE=hack/lambda-bootstrap-standin.sh \
  "$bin" run --cluster-id demo --lease-namespace kappa-demo --http-addr 127.0.0.1:0 \
  --push-addr "127.0.0.1:$push_port" \
  >.stack/logs/operator.log 2>&1 &
echo $! >.stack/operator.pid
for _ in $(seq 1 50); do grep -q "watching EventLogs" .stack/logs/operator.log && break; sleep 0.2; done
grep -q "watching EventLogs" .stack/logs/operator.log || { tail -20 .stack/logs/operator.log; exit 1; }
grep -E "connected to Kubernetes|became leader|watching" .stack/logs/operator.log | sed 's/^/  /'

py=$KAPPA_CACHE_DIR/venv-moto-5.2.5/bin/python
say "The seed's flow on the Lambda runtime (examples/lambda): producers -> ingest queue -> writer -> log -> router -> SNS -> projectors -> views"
kubectl -n kappa-demo apply -k examples/lambda
for _ in $(seq 1 240); do
  [ "$(kubectl -n kappa-demo get elog shop-orders -o jsonpath='{.status.phase}')" = Ready ] && break
  sleep 0.5
done
wait_live_lambda() { # views...
  local v
  for _ in $(seq 1 240); do
    local all=1
    for v in "$@"; do
      [ "$(kubectl -n kappa-demo get mv "$v" -o jsonpath='{.status.phase}' 2>/dev/null || true)" = Live ] || all=0
    done
    [ $all = 1 ] && return 0
    sleep 1
  done
  echo "timed out waiting for $* to be Live; see: kubectl -n kappa-demo describe mv" >&2
  return 1
}
wait_live_lambda order-latest customer-totals
kubectl -n kappa-demo get elog shop-orders
kubectl -n kappa-demo get mv order-latest customer-totals
echo "  the functions the operator created (run by the local stack's Lambda harness, the operator binary as bootstrap):"
aws --endpoint-url "$AWS_ENDPOINT_URL" lambda list-functions --query 'Functions[].FunctionName' --output text \
  | tr '\t' '\n' | grep -E 'shop-orders|order-latest|customer-totals' | sed 's/^/    /'
dead_before=$(kubectl -n kappa-demo get elog shop-orders -o jsonpath='{.status.deadLetters}')
shop_queue=$(kubectl -n kappa-demo get elog shop-orders -o jsonpath='{.status.ingestQueueUrl}')
shop_views=$(kubectl -n kappa-demo get mv order-latest -o jsonpath='{.status.tableName}')
"$py" hack/demo-events.py send "$shop_queue" 100 "$shop_views" \
  "$(kubectl -n kappa-demo get mv order-latest -o jsonpath='{.status.keyPrefix}')"
"$py" hack/demo-events.py show "$shop_views" \
  "$(kubectl -n kappa-demo get mv customer-totals -o jsonpath='{.status.keyPrefix}')" 4
echo "  the malformed message is retried once the ingest queue's visibility timeout (3 min) passes, then"
echo "  moves to the dead-letter queue: shown at the end of the demo"

say "The in-cluster runtime, the small-deployment option: the operator's pods read the stream and project"
say "Creating the export bucket the EventLog names (spec.export.bucket: kappa-game-exports)"
aws --endpoint-url "$AWS_ENDPOINT_URL" s3 mb s3://kappa-game-exports >/dev/null 2>&1 || true

say "Applying the EventLog (examples/game/game-events.yaml) to namespace kappa-demo"
kubectl -n kappa-demo apply -f examples/game/game-events.yaml
for _ in $(seq 1 60); do
  [ "$(kubectl -n kappa-demo get elog game-events -o jsonpath='{.status.phase}')" = Ready ] && break
  sleep 0.5
done
log_table=$(kubectl -n kappa-demo get elog game-events -o jsonpath='{.status.table.name}')

say "Writing 300 game events to the log ($log_table)"
"$py" hack/demo-events.py write "$log_table" 300

say "Applying the views (examples/game): each is backfilled from an export of the log, then goes Live"
kubectl -n kappa-demo apply -k examples/game
wait_live() { # views...
  local v phase
  for _ in $(seq 1 240); do
    local all=1
    for v in "$@"; do
      phase=$(kubectl -n kappa-demo get mv "$v" -o jsonpath='{.status.phase}' 2>/dev/null || true)
      [ "$phase" = Live ] || all=0
    done
    [ $all = 1 ] && return 0
    sleep 1
  done
  echo "timed out waiting for $* to be Live; see: kubectl -n kappa-demo describe mv" >&2
  kubectl -n kappa-demo get mv >&2
  return 1
}
wait_live players games player-scores game-feed

say "Where each view's items live"
kubectl -n kappa-demo get mv -o custom-columns='VIEW:.metadata.name,TABLE:.status.tableName,KEY PREFIX:.status.keyPrefix'

say "What the operator created on the AWS API (tagged kappa.dev/*)"
aws --endpoint-url "$AWS_ENDPOINT_URL" dynamodb list-tables --query 'TableNames[?starts_with(@, `kappa-demo-`)]' --output table
aws --endpoint-url "$AWS_ENDPOINT_URL" sqs list-queues --queue-name-prefix kappa-demo- --query 'QueueUrls' --output table
aws --endpoint-url "$AWS_ENDPOINT_URL" sns list-topics --query 'Topics[].TopicArn' --output table | grep -E 'kappa-demo-|TopicArn|-{3}' || true

say "What the views hold"
for v in players games player-scores game-feed; do
  table=$(kubectl -n kappa-demo get mv "$v" -o jsonpath='{.status.tableName}')
  prefix=$(kubectl -n kappa-demo get mv "$v" -o jsonpath='{.status.keyPrefix}')
  echo "$v:"
  "$py" hack/demo-events.py show "$table" "$prefix" 4
done

say "Adding a view to a log with history: examples/new-view/game-activity.yaml (Count per game)"
"$py" hack/demo-events.py write "$log_table" 60 301
kubectl -n kappa-demo apply -f examples/new-view/game-activity.yaml
for _ in $(seq 1 240); do
  line=$(kubectl -n kappa-demo get mv game-activity --no-headers 2>/dev/null || true)
  echo "  $line"
  case "$line" in *Live*) break ;; esac
  sleep 2
done
wait_live game-activity
"$py" hack/demo-events.py show "$(kubectl -n kappa-demo get mv game-activity -o jsonpath='{.status.tableName}')" \
  "$(kubectl -n kappa-demo get mv game-activity -o jsonpath='{.status.keyPrefix}')" 5

say "A reactive view: examples/reactive/live-games.yaml pushes each game change to WebSocket subscribers"
kubectl -n kappa-demo apply -f examples/reactive/live-games.yaml
for _ in $(seq 1 120); do
  url=$(kubectl -n kappa-demo get mv live-games -o jsonpath='{.status.push.url}' 2>/dev/null || true)
  [ -n "$url" ] && break
  sleep 0.5
done
[ -n "$url" ] || { echo "live-games got no push URL; see: kubectl -n kappa-demo describe mv live-games" >&2; exit 1; }
kubectl -n kappa-demo get mv live-games -o wide
# The endpoint admits a Kubernetes identity allowed to watch the namespace's views; the stack's kubeconfig
# holds a client certificate, not a token, so the subscriber is a service account with a view-only role.
# The 30 events change each of the 5 games at least once (a batch may carry several events of a game and
# the view keeps the latest), so 5 changes are awaited.
apply() { kubectl apply -f - >/dev/null; }
kubectl -n kappa-demo create serviceaccount demo-watcher --dry-run=client -o yaml | apply
kubectl -n kappa-demo create role kappa-view-watcher --verb=get,list,watch \
  --resource=materializedviews.kappa.dev --dry-run=client -o yaml | apply
kubectl -n kappa-demo create rolebinding demo-watcher --role=kappa-view-watcher \
  --serviceaccount=kappa-demo:demo-watcher --dry-run=client -o yaml | apply
kubectl -n kappa-demo create token demo-watcher >.stack/watch-token
echo "  kappa-operator watch live-games -n kappa-demo --url ws://127.0.0.1:$push_port --token-file .stack/watch-token   (then 30 more events)"
"$bin" watch live-games -n kappa-demo --url "ws://127.0.0.1:$push_port" --token-file .stack/watch-token \
  --count 5 --timeout 60 >.stack/logs/watch.out 2>&1 &
watch_pid=$!
sleep 1
"$py" hack/demo-events.py write "$log_table" 30 400
wait "$watch_pid" || { cat .stack/logs/watch.out >&2; exit 1; }
sed 's/^/  /' .stack/logs/watch.out | cut -c1-200

say "Changing a view: game-activity counts only 'playing' games now; version 2 is built beside version 1"
kubectl -n kappa-demo patch mv game-activity --type merge \
  -p '{"spec":{"projection":{"filter":[{"attribute":"status","operator":"Equals","value":"playing"}]}}}'
for _ in $(seq 1 120); do
  line=$(kubectl -n kappa-demo get mv game-activity --no-headers 2>/dev/null || true)
  echo "  $line"
  [ "$(kubectl -n kappa-demo get mv game-activity -o jsonpath='{.status.activeVersion}')" = 2 ] && break
  sleep 2
done
[ "$(kubectl -n kappa-demo get mv game-activity -o jsonpath='{.status.activeVersion}')" = 2 ] \
  || { echo "game-activity was not promoted to version 2; see: kubectl -n kappa-demo describe mv game-activity" >&2; exit 1; }
echo "  readers follow the pointer ConfigMap game-activity:"
kubectl -n kappa-demo get configmap game-activity -o jsonpath='{.data}' | sed 's/^/  /'; echo
"$py" hack/demo-events.py show "$(kubectl -n kappa-demo get mv game-activity -o jsonpath='{.status.tableName}')" \
  "$(kubectl -n kappa-demo get mv game-activity -o jsonpath='{.status.keyPrefix}')" 5

say "The malformed message of the Lambda part: in the ingest dead-letter queue, counted in status"
for _ in $(seq 1 90); do
  [ "$(kubectl -n kappa-demo get elog shop-orders -o jsonpath='{.status.deadLetters}')" -gt "${dead_before:-0}" ] && break
  sleep 5
done
kubectl -n kappa-demo get elog shop-orders -o wide
kubectl -n kappa-demo get events --field-selector involvedObject.name=shop-orders,reason=DeadLetters \
  -o custom-columns='TYPE:.type,REASON:.reason,MESSAGE:.message' | sed 's/^/  /'
echo "  after fixing a cause outside the message (a permission, a throttled table), send them back with:"
echo "    $bin redrive shop-orders -n kappa-demo     (kubectl kappa redrive)"

say "kubectl get kappa -n kappa-demo"
kubectl -n kappa-demo get kappa

say "What this topology costs per million writes (kappa-operator cost -f examples/game)"
"$bin" cost -f examples/game | head -1
echo "  (status.costEstimate: $(kubectl -n kappa-demo get elog game-events -o jsonpath='{.status.costEstimate}'))"

cat <<TXT

The operator runs in the background (pid $(cat .stack/operator.pid)). Look around:
  source .stack/env
  kubectl -n kappa-demo get mv                     # phase, backfill progress, readiness
  $bin watch live-games -n kappa-demo --url ws://127.0.0.1:$push_port --token-file .stack/watch-token   # live changes
  kappa-operator cost -f examples/game             # the cost table ($bin)
  kubectl -n kappa-demo describe mv players        # conditions and Events
  kubectl -n kappa-demo get mv game-activity -o yaml   # status.versions: version 1 retained for an hour
  kubectl explain materializedview.spec.projection # the API, documented
  aws dynamodb list-tables                         # the AWS API of the local stack
  tail -f .stack/logs/operator.log
Stop everything with: make stack-down
TXT
