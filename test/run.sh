#!/usr/bin/env bash
# Installs the environment (tools/install.sh) and runs the test suite. Extra arguments go to
# pytest, e.g. `./test/run.sh -m "not slow"` or `./test/run.sh -k features`.
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
"${root}/tools/install.sh" --smol  # the smol weights let the GGUF conversion test run
cd "${root}"
exec tools/venv/bin/python -m pytest test "$@"
