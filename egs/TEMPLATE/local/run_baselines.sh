#!/usr/bin/env bash
# The paper's baseline comparison in one command: trains asr_sft, blsp, mtbi and mtbi_interleave
# (the train_<tag>.yaml configs of --config_set) with three seeds each, scores them and the
# teacher on text (the upper bound), then writes their comparison table (mean ± std over the
# seeds, intervals and paired tests over the test items, stamped with the commit and machine that
# made them) into this recipe's RESULTS.md. Run it from the recipe dir; options go to run.sh, e.g.
# local/run_baselines.sh --config_set smol --ngpu 4
set -euo pipefail
# shellcheck source=../utils/lib.sh
. utils/lib.sh
record_command "$0" "$@"  # the stamps of the results tables name it

./run.sh --seeds 3 --compare_opts "--markdown RESULTS.md" "$@"
