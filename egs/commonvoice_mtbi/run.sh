#!/usr/bin/env bash
# Common Voice (English) MTBI recipe. Without a corpus path in db.sh it runs on the synthetic
# mini corpus. Options go to mtbi.sh; see ./mtbi.sh --help.
set -euo pipefail

lang=en
train_set=train_${lang}
valid_set=dev_${lang}
test_sets="test_${lang}"

. ./db.sh
# The mini corpus is benchmarked on 100 of its 200 test utterances (2300 questions per system) so
# that ./run.sh stays within minutes on 2 CPU cores; a real corpus uses its whole test set.
[ -z "${COMMONVOICE}" ] && bench_opts="--max_utts 100" || bench_opts=

./mtbi.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --bench_opts "${bench_opts}" \
    "$@"
