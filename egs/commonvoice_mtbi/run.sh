#!/usr/bin/env bash
# Common Voice (English) MTBI recipe. Without a corpus path in db.sh it runs on the synthetic
# mini corpus. Options go to mtbi.sh; see ./mtbi.sh --help.
set -euo pipefail

lang=en
train_set=train_${lang}
valid_set=dev_${lang}
test_sets="test_${lang}"

. ./db.sh
# On the mini corpus, ./run.sh stays within 30 minutes on 2 CPU cores: the benchmark takes 100 of
# the 200 test utterances (2300 questions per system), and two jobs make the targets and two SLLMs
# train (and answer) at once, one thread each.
# A real corpus uses its whole test set and the defaults of mtbi.sh.
[ -z "${COMMONVOICE}" ] && mini_opts=(--bench_opts "--max_utts 100" --gen_nj 2 --system_nj 2) || mini_opts=()

./mtbi.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    "${mini_opts[@]}" \
    "$@"
