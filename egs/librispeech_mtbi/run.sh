#!/usr/bin/env bash
# LibriSpeech MTBI recipe. Without a corpus path in db.sh it runs on the synthetic mini corpus.
# Options go to mtbi.sh, e.g. ./run.sh --stage 2 --stop_stage 2 --nj 8; see ./mtbi.sh --help.
set -euo pipefail
# shellcheck source=utils/lib.sh
. utils/lib.sh
record_command "$0" "$@"  # the stamps of the results tables name it

train_set=train_clean_100
valid_set=dev_clean
test_sets="test_clean"

. ./db.sh
# On the mini corpus, local/mini_opts.sh sizes the run for 2 CPU cores (tiny: within 30 minutes).
mini_opts=()
[ -z "${LIBRISPEECH}" ] && . local/mini_opts.sh "$@"

./mtbi.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    "${mini_opts[@]}" \
    "$@"
