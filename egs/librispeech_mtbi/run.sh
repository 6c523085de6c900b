#!/usr/bin/env bash
# LibriSpeech MTBI recipe. Without a corpus path in db.sh it runs on the synthetic mini corpus.
# Options go to mtbi.sh, e.g. ./run.sh --stage 2 --stop_stage 2 --nj 8; see ./mtbi.sh --help.
set -euo pipefail

train_set=train_clean_100
valid_set=dev_clean
test_sets="test_clean"

. ./db.sh
# The mini corpus is benchmarked on 100 of its 200 test utterances (2300 questions per system) so
# that ./run.sh stays within minutes on 2 CPU cores; a real corpus uses its whole test set.
[ -z "${LIBRISPEECH}" ] && bench_opts="--max_utts 100" || bench_opts=

./mtbi.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --bench_opts "${bench_opts}" \
    "$@"
