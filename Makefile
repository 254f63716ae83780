# openidcs: two commands for a newcomer on a fresh Debian 12 machine.
#   make run   set up, build, start the server on the embedded default host
#   make test  set up, build, run every test (libvirt, nftables, nginx included)
# One cargo profile (release) for the server, the tests and the benches, so
# wasmtime is compiled once.

CARGO        ?= cargo
WASM_TARGET  := wasm32-wasip2
APT_PACKAGES := pkg-config libvirt-dev libvirt-clients libvirt-daemon-system qemu-system-x86 \
                nftables nginx-light iproute2 openssl curl novnc chromium \
                python3-venv jq dnsmasq-base openssh-client sshpass docker.io
PLUGINS      := -p openidcs-plugin-libvirt -p openidcs-plugin-oci
TEST_PLUGINS := -p test-component-loop-forever -p test-component-memory-bomb \
                -p test-component-panic -p test-component-nat-ungranted \
                -p test-component-domain-xml -p test-component-http-probe
CONFIG       ?= examples/openidcs.toml
# The engine written in Python (componentize-py, pinned in the .venv).
PYTHON_ENGINE := target/examples/python_engine.wasm
# Host-side packages, always selected together so that cargo resolves the
# same features for `build`, `test` and `bench` and reuses every artifact.
HOST_PACKAGES := --workspace --exclude openidcs-plugin-libvirt --exclude openidcs-plugin-oci \
                 --exclude test-component-loop-forever --exclude test-component-memory-bomb \
                 --exclude test-component-panic --exclude test-component-nat-ungranted \
                 --exclude test-component-domain-xml --exclude test-component-http-probe

.PHONY: setup build plugins server examples run test lint bench clean test-image

# Idempotent: installs only what is missing (apt only as root).
setup:
	@missing=""; for package in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "missing packages:$$missing (run as root, or: sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@# The browser tests (console, panel): playwright-core only (it drives Debian's chromium).
	@[ -d tests/browser/node_modules/playwright-core ] || (cd tests/browser && npm ci --no-audit --no-fund)
	@# The API browser (/api/docs): npm's swagger-ui-dist, served from disk; no install scripts.
	@[ -f host/swagger-ui/node_modules/swagger-ui-dist/swagger-ui-bundle.js ] || { \
	  command -v npm >/dev/null || { echo "npm is missing (Debian: apt-get install npm)"; exit 1; }; \
	  cd host/swagger-ui && npm ci --ignore-scripts --no-audit --no-fund; }
	@# The web panel's charts (/) and terminals: npm's uplot and xterm.js, served from disk; no install scripts.
	@[ -f host/panel/node_modules/uplot/dist/uPlot.esm.js ] && [ -f host/panel/node_modules/@xterm/xterm/lib/xterm.mjs ] || (cd host/panel && npm ci --ignore-scripts --no-audit --no-fund)
	@# Schemathesis (make test) and componentize-py (the Python engine), pinned, in the repo's .venv.
	@tests/scripts/python-venv.sh

plugins: setup
	$(CARGO) build --release --target $(WASM_TARGET) $(PLUGINS) $(TEST_PLUGINS)

# --all-targets: tests and benches see the same features (dev-dependencies
# included), so `make test` and `make bench` reuse every artifact.
server: setup
	$(CARGO) build --release $(HOST_PACKAGES) --all-targets

examples: setup $(PYTHON_ENGINE)

# Built against the frozen 0.1.0 world on purpose: it is the test that
# plugins made before 0.2.0 still load and work.
$(PYTHON_ENGINE): examples/python-engine/app.py wit/since_v0.1.0/engine.wit
	@mkdir -p $(dir $@)
	cd examples/python-engine && ../../.venv/bin/componentize-py -d ../../wit/since_v0.1.0 -w libvirt-engine \
	  componentize app -o ../../$@

build: plugins server examples

run: build
	@echo "starting openidcs with $(CONFIG): it prints its https URL, the certificate fingerprint and, on the first start, the admin token"
	@echo "(later starts: ./target/release/openidcs token reset --config $(CONFIG) prints a new one)"
	./target/release/openidcs serve --config $(CONFIG)

# The libvirt daemons are started for the qemu:///system test and stopped
# after (only those this target started).
test: build
	@tests/scripts/libvirt-daemons.sh start
	@$(CARGO) test --release --no-fail-fast $(HOST_PACKAGES); status=$$?; tests/scripts/libvirt-daemons.sh stop; exit $$status
	@# The engine's operations against its in-memory fake host, natively.
	@$(CARGO) test --release $(PLUGINS)
	@# Every operation of /api/openapi.json against the live server (fixed seed and count).
	@tests/schemathesis/run.sh

# Load figures against a bare axum ceiling, written to docs/benchmarks.md.
bench: build
	@command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk
	HOST_PACKAGES="$(HOST_PACKAGES)" python3 tests/bench/run.py

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release $(HOST_PACKAGES) --all-targets -- -D warnings
	$(CARGO) clippy --release --target $(WASM_TARGET) $(PLUGINS) $(TEST_PLUGINS) -- -D warnings

clean:
	$(CARGO) clean

# A bootable Debian 12 cloud image made from Debian packages (cloud-init,
# openssh, qemu-guest-agent, GRUB), cached under target/test-image and rebuilt
# only when the script changes; for the provisioning tests (root).
test-image:
	tests/scripts/debian-image.sh target/test-image
