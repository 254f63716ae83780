#!/usr/bin/env bash
# Create or refresh the repo's .venv with the pinned schemathesis
# (tests/schemathesis/requirements.txt). Idempotent: does nothing when the
# installed packages already match the pins.
set -euo pipefail
cd "$(dirname "$0")/../.."
requirements=tests/schemathesis/requirements.txt
stamp=.venv/.schemathesis-requirements
if [ -x .venv/bin/schemathesis ] && [ -f "$stamp" ] && cmp -s "$requirements" "$stamp"; then
  exit 0
fi
echo "schemathesis: preparing .venv from $requirements"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check --require-virtualenv -r "$requirements"
cp "$requirements" "$stamp"
