#!/usr/bin/env bash
# Lint: ruff (settings in ruff.toml) on the Python of mtbi/, tools/ and test/, and ShellCheck
# (settings in .shellcheckrc) on the shell scripts. .ci/run runs it before the tests; both tools
# come with `pip install -e .[test]` (tools/install.sh).
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "${root}"
bin=tools/venv/bin

"${bin}/ruff" check mtbi tools test
# The recipes' own scripts (their links to TEMPLATE are the same files; not the run_stage<N>.sh
# that runs write into exp*/) and the project's.
mapfile -t scripts < <(find egs -name '*.sh' -not -type l -not -path 'egs/*/exp*/*' | sort)
"${bin}/shellcheck" "${scripts[@]}" tools/install.sh tools/lint.sh tools/gpu_check.sh test/run.sh .ci/run
echo "lint: ruff and shellcheck passed (${#scripts[@]} recipe scripts)"
