#!/usr/bin/env bash
# Installs the environment (tools/install.sh) and runs the tests; extra arguments go to pytest.
# The tests come in tiers (markers in setup.cfg; test/conftest.py deselects the slow and recipe
# tiers unless --all or -m is given):
#   ./test/run.sh            the default tier: unit tests and in-process entry points (2 min on 2 cores)
#   ./test/run.sh -m slow    training and model runs in subprocesses, DDP, preemption signals, the
#                            smol weights, the real-config stand-ins (14 min)
#   ./test/run.sh -m recipe  one run of stages 1-8 of the tiny LibriSpeech recipe and the tests on
#                            it: the recipe's outputs, kill-and-resume of each stage (27 min)
#   ./test/run.sh --all      every tier, as .ci/run runs it
# Other pytest arguments pass through, e.g. ./test/run.sh -k features, ./test/run.sh -m "slow or recipe" -x.
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
"${root}/tools/install.sh" --smol  # the smol weights let the GGUF conversion test run
cd "${root}"
exec tools/venv/bin/python -m pytest test "$@"
