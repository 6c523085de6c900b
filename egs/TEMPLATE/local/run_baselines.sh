#!/usr/bin/env bash
# The paper's baseline comparison in one command: trains and scores asr_sft, blsp, mtbi and
# mtbi_interleave (stage 6-8 configs conf/train_<tag>.yaml) and the teacher on text (the upper
# bound), then writes their comparison table into this recipe's README.md. Run it from the
# recipe dir; other options go to run.sh, e.g. local/run_baselines.sh --ngpu 4 --stage 6
set -euo pipefail

baselines="conf/train_asr_sft.yaml conf/train_blsp.yaml conf/train_mtbi.yaml conf/train_mtbi_interleave.yaml"
./run.sh --train_confs "${baselines}" --compare_opts "--readme README.md" "$@"
