# shellcheck shell=bash
# Sourced by mtbi.sh: activates tools/venv, creating it with tools/install.sh when missing.
MTBI_ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)"
if [ ! -f "${MTBI_ROOT}/tools/venv/.mtbi-installed" ]; then
    echo "path.sh: ${MTBI_ROOT}/tools/venv is not set up; running tools/install.sh" >&2
    "${MTBI_ROOT}/tools/install.sh"
fi
# shellcheck disable=SC1091
. "${MTBI_ROOT}/tools/venv/bin/activate"
export MTBI_ROOT
export PATH="${PWD}/utils:${PATH}"
export LC_ALL=C PYTHONUNBUFFERED=1 PYTHONIOENCODING=utf-8
