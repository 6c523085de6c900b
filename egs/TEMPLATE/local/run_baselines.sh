#!/usr/bin/env bash
# The paper's baseline comparison in one command: trains asr_sft, blsp, mtbi and mtbi_interleave
# (the train_<tag>.yaml configs of --config_set) with three seeds each, scores them and the
# teacher on text (the upper bound), then writes their comparison table (mean ± std over the
# seeds, intervals and paired tests over the test items) into this recipe's README.md. Run it from
# the recipe dir; options go to run.sh, e.g. local/run_baselines.sh --config_set smol --ngpu 4
set -euo pipefail

./run.sh --seeds 3 --compare_opts "--readme README.md" "$@"
