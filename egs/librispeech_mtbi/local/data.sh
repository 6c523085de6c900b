#!/usr/bin/env bash
# Stage 1 for LibriSpeech: data/<set>/{wav.scp,text,utt2spk,spk2utt} for each --sets name.
# Set names map to parts: train_clean_100 -> train-clean-100, ..., train_960 -> all train
# parts. With LIBRISPEECH empty in db.sh, the synthetic mini corpus is built and used.
set -euo pipefail
# shellcheck source=../utils/lib.sh
. utils/lib.sh

sets="train_clean_100 dev_clean test_clean"
nj=4
allow_upsample=false
mini_dir=downloads/mini_librispeech   # where the mini corpus is built
mini_train=2000                       # mini corpus sizes (utterances)
mini_dev=200
mini_test=200
mini_seed=0
help_message="Usage: $0 [--sets \"<names>\"] [--nj N] [--allow_upsample true|false] [--mini_dir DIR]
       [--mini_train N --mini_dev N --mini_test N] [--mini_seed N]"

. utils/parse_options.sh
. ./db.sh

if [ -z "${LIBRISPEECH}" ]; then
    log "LIBRISPEECH is empty in db.sh: building the synthetic mini corpus in ${mini_dir}"
    LIBRISPEECH=$(python -m mtbi.bin.make_mini_corpus --out_dir "${mini_dir}" --layout librispeech \
        --num_train "${mini_train}" --num_dev "${mini_dev}" --num_test "${mini_test}" \
        --seed "${mini_seed}" --nj "${nj}")
fi

for dset in ${sets}; do
    case "${dset}" in
        train_960) parts=train-clean-100,train-clean-360,train-other-500 ;;
        *) parts=${dset//_/-} ;;
    esac
    log "data/${dset} <- ${LIBRISPEECH}/{${parts}}"
    python -m mtbi.bin.prepare_data --corpus librispeech --root "${LIBRISPEECH}" --parts "${parts}" \
        --out_dir "data/${dset}" --allow_upsample "${allow_upsample}"
done
