#!/usr/bin/env bash
# Create or refresh the repo's .venv with the pinned Python tools: schemathesis
# for `make test` (tests/schemathesis/requirements.txt) and componentize-py
# for the Python engine example (examples/python-engine/requirements.txt).
# Idempotent: does nothing when the installed packages already match the pins.
set -euo pipefail
cd "$(dirname "$0")/../.."
requirements=(tests/schemathesis/requirements.txt examples/python-engine/requirements.txt)
stamp=.venv/.requirements
if [ -x .venv/bin/schemathesis ] && [ -x .venv/bin/componentize-py ] && [ -f "$stamp" ] \
   && cat "${requirements[@]}" | cmp -s - "$stamp"; then
  exit 0
fi
echo "python tools: preparing .venv from ${requirements[*]}"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check --require-virtualenv \
  -r "${requirements[0]}" -r "${requirements[1]}"
cat "${requirements[@]}" > "$stamp"
