#!/usr/bin/env bash
# Common Voice (English) MTBI recipe. Without a corpus path in db.sh it runs on the synthetic
# mini corpus. Options go to mtbi.sh; see ./mtbi.sh --help.
set -euo pipefail
# shellcheck source=utils/lib.sh
. utils/lib.sh
record_command "$0" "$@"  # the stamps of the results tables name it

lang=en
train_set=train_${lang}
valid_set=dev_${lang}
test_sets="test_${lang}"

. ./db.sh
# On the mini corpus, local/mini_opts.sh sizes the run for 2 CPU cores (tiny: within 30 minutes).
mini_opts=()
[ -z "${COMMONVOICE}" ] && . local/mini_opts.sh "$@"

./mtbi.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    "${mini_opts[@]}" \
    "$@"
