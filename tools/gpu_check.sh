#!/usr/bin/env bash
# GPU check without trained weights (tools/bench/gpu_check.py says what and how): a bf16 matmul
# baseline, SpeechLLM training steps of random-init models of real shapes (MFU against that
# matmul), generation answers/s, peak GPU memory; then the DDP step under torchrun (NCCL, one
# GPU). Prints one table and writes every figure as JSON to --out.
#
#   tools/gpu_check.sh --out gpu_check.json                       # one GPU, a few minutes
#   tools/gpu_check.sh --out gpu_check.json --device cpu --tiny   # the CPU check of CI, seconds
#
# Needs torch and transformers, not an installed mtbi: the repository goes on PYTHONPATH. The
# Python is $PYTHON, else tools/venv/bin/python when there is one, else python3. Exit status 1
# when a measurement failed for another reason than running out of GPU memory.
set -euo pipefail
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"

usage() {
    echo "usage: $0 --out FILE.json [--device cuda|cpu] [--tiny]" >&2
    exit 2
}

out=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || usage; out="$2"; shift 2 ;;
        -h|--help) usage ;;
        *) args+=("$1"); shift ;;
    esac
done
[ -n "${out}" ] || usage

python="${PYTHON:-}"
if [ -z "${python}" ]; then
    if [ -x "${root}/tools/venv/bin/python" ]; then python="${root}/tools/venv/bin/python"; else python=python3; fi
fi
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"
bench="${root}/tools/bench"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

status=0
"${python}" "${bench}/gpu_check.py" measure "${args[@]}" --out "${work}/measure.json" || status=1
[ -f "${work}/measure.json" ] || exit 1
# DDP in its own process group, as stage 6 runs it. A hung NCCL must not eat the run's time
# limit, and when this part fails the table still comes.
timeout 300 "${python}" -m torch.distributed.run --standalone --nproc_per_node 1 \
    "${bench}/gpu_check.py" ddp "${args[@]}" --out "${work}/ddp.json" || status=1
"${python}" "${bench}/gpu_check_report.py" "${work}/measure.json" "${work}/ddp.json" --out "${out}"
exit "${status}"
