# kappa-operator: the two commands that matter are `make demo` and `make test`.
SHELL := bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/kappa-operator/target
export CARGO_TERM_COLOR ?= never

.PHONY: demo test bench stack-up stack-down stack-status tools build crds lint image image-test install-plugin

demo: ## Bring the local stack up and run the operator against it, end to end.
	hack/demo.sh

test: ## Format check, clippy, unit and integration tests on the local stack (started if needed).
	hack/test.sh

bench: ## Benchmarks (cargo bench) on the local stack (started if needed), printed as ratios to their goals.
	hack/bench.sh

stack-up: ## Start etcd, kube-apiserver, kube-controller-manager and the AWS API; write .stack/env.
	hack/stack.sh up

stack-down: ## Stop what stack-up started (by pid file).
	hack/stack.sh down

stack-status:
	@hack/stack.sh status

tools: ## Build or find the pinned kube-apiserver, etcd, kubectl, helm, moto_server, crane, promtool, actionlint, zig.
	hack/stack.sh tools
	hack/tools.sh install

build:
	cargo build --bins

PREFIX ?= $(HOME)/.local
install-plugin: ## Install kappa-operator and the kubectl plugin kubectl-kappa (a link to it) in $(PREFIX)/bin.
	cargo build --release --locked --bin kappa-operator
	install -D -m 0755 "$(CARGO_TARGET_DIR)/release/kappa-operator" "$(PREFIX)/bin/kappa-operator"
	ln -sf kappa-operator "$(PREFIX)/bin/kubectl-kappa"
	@case ":$$PATH:" in *":$(PREFIX)/bin:"*) ;; *) echo "add $(PREFIX)/bin to PATH for kubectl to find kubectl-kappa";; esac
	@echo "installed $(PREFIX)/bin/kappa-operator and $(PREFIX)/bin/kubectl-kappa: try \`kubectl kappa --help\`"

crds: ## Regenerate crds/ from the Rust types, the chart's copy and docs/api-reference.md.
	cargo run -q --bin kappa-operator -- crds > crds/kappa.dev_crds.yaml
	cp crds/kappa.dev_crds.yaml charts/kappa-operator/crds/kappa.dev_crds.yaml
	cargo run -q --bin kappa-operator -- crds --reference > docs/api-reference.md

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

image: ## The OCI image in dist/image (release build for glibc 2.34, assembled by crane; no container daemon).
	hack/image.sh

image-test: image ## `make image`, then the release image's tests (runs in it, glibc 2.34 at most, Lambda zip < 50 MB).
	cargo test --test image -- --include-ignored
