#!/usr/bin/env bash
# The local stack: etcd + kube-apiserver (+ kube-controller-manager) + moto_server, all on 127.0.0.1.
#
#   hack/stack.sh tools   build or find the pinned binaries (cached under $KAPPA_CACHE)
#   hack/stack.sh up      start everything, wait until it answers, write $KAPPA_STACK_DIR/env
#   hack/stack.sh down    stop only the processes this script started (pid files), keep nothing running
#   hack/stack.sh status  say what runs
#
# Binaries are built from their Go modules with the machine's Go (GOTOOLCHAIN=local) through the wrapper
# module in hack/tools/kube, and cached by version so a second run starts in seconds.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KUBE_VERSION=v1.35.4
ETCD_VERSION=v3.6.5 # what k8s.io/kubernetes $KUBE_VERSION requires; see hack/tools/kube/go.mod
HELM_VERSION=v3.19.2
MOTO_VERSION=5.2.5
AWSCLI_VERSION=1.45.11

KAPPA_CACHE=${KAPPA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kappa-operator}
BIN=$KAPPA_CACHE/bin
VENV=$KAPPA_CACHE/venv-moto-$MOTO_VERSION
STACK=${KAPPA_STACK_DIR:-$REPO/.stack}
export GOTOOLCHAIN=local
export GOFLAGS=-mod=mod
export GOMODCACHE=${GOMODCACHE:-$HOME/.cache/go-mod}
export GOCACHE=${GOCACHE:-$HOME/.cache/go-build}

say() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
kube_ldflags() {
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local v
  for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s ' "$v" "$KUBE_VERSION" "$v" "$v" "$minor"
  done
  printf -- '-s -w'
}

build_kube_tools() {
  local want=() name
  for name in kube-apiserver kube-controller-manager kubectl; do
    [ -x "$BIN/$name-$KUBE_VERSION" ] || want+=("$name")
  done
  [ -x "$BIN/etcd-$ETCD_VERSION" ] || want+=(etcd)
  [ ${#want[@]} -eq 0 ] && return 0
  command -v go >/dev/null || die "Go is needed to build ${want[*]}; install Go 1.25 or newer."
  say "building ${want[*]} from Go modules (Kubernetes $KUBE_VERSION, etcd $ETCD_VERSION)."
  say "the first build takes 10-25 minutes on 2 cores; later runs reuse $BIN."
  local out; out=$(mktemp -d)
  local pkgs=()
  for name in "${want[@]}"; do
    case $name in
      etcd) pkgs+=(go.etcd.io/etcd/server/v3) ;;
      *) pkgs+=("k8s.io/kubernetes/cmd/$name") ;;
    esac
  done
  (cd "$REPO/hack/tools/kube" && go build -trimpath -ldflags "$(kube_ldflags)" -o "$out/" "${pkgs[@]}") \
    || die "go build failed for ${pkgs[*]}"
  mkdir -p "$BIN"
  for name in "${want[@]}"; do
    case $name in
      etcd) mv "$out/v3" "$BIN/etcd-$ETCD_VERSION" 2>/dev/null || mv "$out/server" "$BIN/etcd-$ETCD_VERSION" \
              || mv "$out/etcd" "$BIN/etcd-$ETCD_VERSION" ;;
      *) mv "$out/$name" "$BIN/$name-$KUBE_VERSION" ;;
    esac
  done
  rm -rf "$out"
}

build_helm() {
  [ -x "$BIN/helm-$HELM_VERSION" ] && return 0
  say "building helm $HELM_VERSION from its Go module (about 3 minutes the first time)."
  local out; out=$(mktemp -d)
  GOBIN=$out go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" || die "go install helm $HELM_VERSION failed"
  mkdir -p "$BIN" && mv "$out/helm" "$BIN/helm-$HELM_VERSION" && rm -rf "$out"
}

install_moto() {
  [ -x "$VENV/bin/moto_server" ] && [ -x "$VENV/bin/aws" ] && return 0
  say "installing moto[server]==$MOTO_VERSION and awscli==$AWSCLI_VERSION into $VENV (about a minute)."
  python3 -m venv "$VENV" || die "python3 -m venv failed; install python3-venv."
  "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" "awscli==$AWSCLI_VERSION" \
    || die "pip install moto[server] failed"
}

# Stable names on PATH for scripts and tests: $KAPPA_CACHE/path/{kubectl,etcd,...}.
link_tools() {
  local p=$KAPPA_CACHE/path
  mkdir -p "$p"
  ln -sf "$BIN/kube-apiserver-$KUBE_VERSION" "$p/kube-apiserver"
  ln -sf "$BIN/kube-controller-manager-$KUBE_VERSION" "$p/kube-controller-manager"
  ln -sf "$BIN/kubectl-$KUBE_VERSION" "$p/kubectl"
  ln -sf "$BIN/etcd-$ETCD_VERSION" "$p/etcd"
  ln -sf "$BIN/helm-$HELM_VERSION" "$p/helm"
  ln -sf "$VENV/bin/moto_server" "$p/moto_server"
  ln -sf "$VENV/bin/aws" "$p/aws"
}

cmd_tools() {
  build_kube_tools
  build_helm
  install_moto
  link_tools
}

# ---------------------------------------------------------------- up / down
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

running() { [ -f "$STACK/$1.pid" ] && kill -0 "$(cat "$STACK/$1.pid")" 2>/dev/null; }

start() { # name, then the command; output to $STACK/logs/name.log
  local name=$1; shift
  "$@" >"$STACK/logs/$name.log" 2>&1 &
  echo $! >"$STACK/$name.pid"
}

fail_with_log() {
  say "$1 did not become ready. Last lines of $STACK/logs/$1.log:"
  tail -n 30 "$STACK/logs/$1.log" >&2 || true
  cmd_down
  exit 1
}

wait_for() { # name, seconds, probe command...
  local name=$1 secs=$2; shift 2
  local i
  for ((i = 0; i < secs * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    running "$name" || fail_with_log "$name"
    sleep 0.25
  done
  fail_with_log "$name"
}

make_pki() {
  local d=$STACK/pki
  [ -f "$d/admin.crt" ] && return 0
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=kappa-local-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >san.ext
    printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' >client.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out apiserver.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=kappa-admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile client.ext -out admin.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout kcm.key -out kcm.csr -subj "/O=system:masters/CN=system:kube-controller-manager" 2>/dev/null
    openssl x509 -req -in kcm.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile client.ext -out kcm.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  ) || die "openssl failed to make the local PKI in $d"
}

b64() { base64 -w0 <"$1"; }

write_kubeconfig() { # file, user, cert, key
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kappa-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(b64 "$STACK/pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$3")
    client-key-data: $(b64 "$4")
contexts:
- name: kappa-local
  context: {cluster: kappa-local, user: $2}
current-context: kappa-local
EOF
}

cmd_up() {
  if running kube-apiserver && running etcd && running moto && running export-shim && [ -f "$STACK/env" ]; then
    say "already up; env in $STACK/env"
    cat "$STACK/env"
    return 0
  fi
  cmd_down >/dev/null 2>&1 || true
  cmd_tools
  local p=$KAPPA_CACHE/path
  rm -rf "$STACK"
  mkdir -p "$STACK/logs"
  make_pki

  ETCD_PORT=$(free_port); ETCD_PEER=$(free_port); API_PORT=$(free_port); MOTO_PORT=$(free_port)
  KCM_PORT=$(free_port); HARNESS_PORT=$(free_port)

  start etcd "$p/etcd" --name kappa --data-dir "$STACK/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "kappa=http://127.0.0.1:$ETCD_PEER"
  # moto_server plus the API Gateway v2 operations moto lacks, and local Lambda execution (see the
  # scripts). Functions' stand-in bootstrap execs the operator binary named by $STACK/lambda-binary (tests
  # write it), else KAPPA_LOCAL_LAMBDA_BINARY, else $CARGO_TARGET_DIR/debug/kappa-operator.
  KAPPA_STACK_DIR=$STACK KAPPA_LOCAL_HARNESS_PORT=$HARNESS_PORT \
    KAPPA_LOCAL_LAMBDA_BINARY=${KAPPA_LOCAL_LAMBDA_BINARY:-${CARGO_TARGET_DIR:-$HOME/.cache/kappa-operator/target}/debug/kappa-operator} \
    start moto "$VENV/bin/python" "$REPO/hack/moto-server.py" -H 127.0.0.1 -p "$MOTO_PORT"
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  start kube-apiserver "$p/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --tls-cert-file "$STACK/pki/apiserver.crt" --tls-private-key-file "$STACK/pki/apiserver.key" \
    --client-ca-file "$STACK/pki/ca.crt" \
    --authorization-mode Node,RBAC --anonymous-auth=false \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$STACK/pki/sa.pub" --service-account-signing-key-file "$STACK/pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 --endpoint-reconciler-type none \
    --disable-admission-plugins ServiceAccount \
    --cert-dir "$STACK/pki/generated"
  write_kubeconfig "$STACK/kubeconfig" kappa-admin "$STACK/pki/admin.crt" "$STACK/pki/admin.key"
  write_kubeconfig "$STACK/kcm.kubeconfig" system:kube-controller-manager "$STACK/pki/kcm.crt" "$STACK/pki/kcm.key"
  wait_for kube-apiserver 90 "$p/kubectl" --kubeconfig "$STACK/kubeconfig" get --raw /readyz

  # The controller manager (in system:masters: a local stack needs no finer split) gives the cluster
  # namespace deletion, garbage collection and the Job controller
  # (no scheduler or kubelet runs, so pods are never started).
  start kube-controller-manager "$p/kube-controller-manager" \
    --kubeconfig "$STACK/kcm.kubeconfig" --authentication-kubeconfig "$STACK/kcm.kubeconfig" \
    --authorization-kubeconfig "$STACK/kcm.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --cert-dir "$STACK/pki/kcm-generated" \
    --leader-elect=false --use-service-account-credentials=false \
    --service-account-private-key-file "$STACK/pki/sa.key" --root-ca-file "$STACK/pki/ca.crt" \
    --controllers namespace-controller,garbage-collector-controller,job-controller
  wait_for kube-controller-manager 60 curl -skf "https://127.0.0.1:$KCM_PORT/healthz"

  cat >"$STACK/env" <<EOF
export KUBECONFIG=$STACK/kubeconfig
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export KAPPA_S3_PATH_STYLE=true
export KAPPA_LOCAL_EXECUTE_API=http://127.0.0.1:$HARNESS_PORT
export PATH=$KAPPA_CACHE/path:\$PATH
EOF
  # shellcheck disable=SC1091
  (. "$STACK/env" && wait_for moto 60 aws dynamodb list-tables)
  # moto completes exports but not in AWS's layout: the shim writes AWS's manifests and data files.
  # It signs as `export-shim`: the emulator reports exports COMPLETED only to it until they are laid out.
  # shellcheck disable=SC1091
  (. "$STACK/env" && AWS_ACCESS_KEY_ID=export-shim start export-shim "$VENV/bin/python" "$REPO/hack/moto-export-shim.py")
  say "up: kube-apiserver $KUBE_VERSION on https://127.0.0.1:$API_PORT, AWS API on http://127.0.0.1:$MOTO_PORT"
  say "use it with: source $STACK/env"
  cat "$STACK/env"
}

cmd_down() {
  local name pid stopped=0
  for name in operator export-shim kube-controller-manager kube-apiserver moto etcd; do
    [ -f "$STACK/$name.pid" ] || continue
    pid=$(cat "$STACK/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$pid" 2>/dev/null || true
      stopped=$((stopped + 1))
    fi
    rm -f "$STACK/$name.pid"
  done
  say "down: stopped $stopped process(es)"
}

cmd_status() {
  local name
  for name in etcd kube-apiserver kube-controller-manager moto export-shim; do
    if running "$name"; then echo "$name: running (pid $(cat "$STACK/$name.pid"))"; else echo "$name: stopped"; fi
  done
}

case ${1:-} in
  tools) cmd_tools ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: hack/stack.sh tools|up|down|status" ;;
esac
