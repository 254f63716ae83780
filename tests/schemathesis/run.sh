#!/usr/bin/env bash
# Schemathesis against the live server (part of `make test`).
#
# Starts the release binary with a temporary config (the libvirt engine, one
# host `local` on libvirt's test driver), and runs every
# operation of GET /api/openapi.json with a fixed seed and example count and
# the checks: no 5xx, answers conform to the documented schema, status code
# and content type. Prints schemathesis' summary; exits non-zero on any
# failure. Then stops the server (by its pid). hooks.py keeps the admin
# token valid and the fixtures in place.
#
# Environment: SCHEMATHESIS_MAX_EXAMPLES (default 40), SCHEMATHESIS_SEED
# (default 20260501), SCHEMATHESIS_EXTRA (more schemathesis options).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

binary=$root/target/release/openidcs
plugin=$root/target/wasm32-wasip2/release/openidcs_plugin_libvirt.wasm
for file in "$binary" "$plugin"; do
  [ -f "$file" ] || { echo "schemathesis: $file is missing: run \`make build\` first" >&2; exit 1; }
done
tests/scripts/python-venv.sh

max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-40}
seed=${SCHEMATHESIS_SEED:-20260501}
work=$(mktemp -d -t openidcs-schemathesis.XXXXXX)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/openidcs.toml" <<TOML
[server]
data_dir = "data"
plain_http = true

# Schemathesis sends many requests; no throttling of the few refused ones.
[auth]
max_failures = 1000000

[[plugin]]
name = "libvirt"
path = "$plugin"
grants = ["libvirt", "nat", "proxy", "log"]
memory_mb = 64
timeout_ms = 30000

[[host]]
name = "local"
type = "libvirt"

[host.config]
server_addr = "test:///default"
filter_name = ""
system_path = "/default-pool"
network_nat = "default"
ports_start = 20000
ports_close = 20999
public_addr = ["127.0.0.1"]

[host.config.ipaddr_maps.lan]
vers = "ipv4"
type = "nat"
gate = "192.168.122.1"
mask = "255.255.255.0"
from = "192.168.122.100"
nums = 100
TOML

RUST_LOG=${RUST_LOG:-warn} "$binary" serve --config "$work/openidcs.toml" --listen 127.0.0.1:0 \
  >"$work/server.out" 2>"$work/server.err" &
server_pid=$!

base=""
for _ in $(seq 1 600); do
  base=$(sed -n 's/^openidcs listening on //p' "$work/server.out")
  [ -n "$base" ] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.2
done
if [ -z "$base" ]; then
  echo "schemathesis: the server did not start:" >&2
  cat "$work/server.out" "$work/server.err" >&2
  exit 1
fi
token=$(sed -n 's/^admin token (shown once, store it now): //p' "$work/server.out")
[ -n "$token" ] || { echo "schemathesis: no admin token in the server's output" >&2; exit 1; }
echo "schemathesis: openidcs at $base (pid $server_pid)"

# /api/system/events is a stream that never ends, which a request/response
# fuzzer cannot read to its end: tests/tests/events.rs reads it as a client.
# The fixtures the documented examples name (host `local`, VM `vm1`) are
# made and kept by hooks.py.
status=0
# Run from the temporary directory: schemathesis and hypothesis keep caches in the working directory.
cd "$work"
OPENIDCS_BASE=$base OPENIDCS_TOKEN=$token OPENIDCS_BINARY=$binary OPENIDCS_CONFIG=$work/openidcs.toml \
  PYTHONPATH=$root/tests/schemathesis SCHEMATHESIS_HOOKS=hooks \
  "$root/.venv/bin/schemathesis" run "$base/api/openapi.json" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --max-examples "$max_examples" \
  --seed "$seed" \
  --workers 1 \
  --generation-database none \
  --request-timeout 60 \
  --exclude-path /api/system/events \
  --no-color \
  ${SCHEMATHESIS_EXTRA:-} || status=$?

if [ "$status" != 0 ]; then
  echo "schemathesis: FAILED (exit $status); server log:" >&2
  tail -n 50 "$work/server.err" >&2
fi
exit "$status"
