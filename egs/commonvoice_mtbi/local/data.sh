#!/usr/bin/env bash
# Stage 1 for Common Voice: data/<set>/{wav.scp,text,utt2spk,spk2utt} for each --sets name.
# A set name starts with its split: train_en -> train (validated minus dev and test),
# dev_en -> dev.tsv, test_en -> test.tsv. With COMMONVOICE empty in db.sh, the synthetic
# mini corpus (mp3 clips, real tsv header) is built and used.
set -euo pipefail
# shellcheck source=../utils/lib.sh
. utils/lib.sh

sets="train_en dev_en test_en"
nj=4
allow_upsample=false
mini_dir=downloads/mini_commonvoice   # where the mini corpus is built
mini_train=2000                       # mini corpus sizes (utterances)
mini_dev=200
mini_test=200
mini_seed=0
help_message="Usage: $0 [--sets \"<names>\"] [--nj N] [--allow_upsample true|false] [--mini_dir DIR]
       [--mini_train N --mini_dev N --mini_test N] [--mini_seed N]"

. utils/parse_options.sh
. ./db.sh

if [ -z "${COMMONVOICE}" ]; then
    log "COMMONVOICE is empty in db.sh: building the synthetic mini corpus in ${mini_dir}"
    COMMONVOICE=$(python -m mtbi.bin.make_mini_corpus --out_dir "${mini_dir}" --layout commonvoice \
        --num_train "${mini_train}" --num_dev "${mini_dev}" --num_test "${mini_test}" \
        --seed "${mini_seed}" --nj "${nj}")
fi

for dset in ${sets}; do
    split=${dset%%_*}
    log "data/${dset} <- ${COMMONVOICE}/${split}"
    python -m mtbi.bin.prepare_data --corpus commonvoice --root "${COMMONVOICE}" --parts "${split}" \
        --out_dir "data/${dset}" --allow_upsample "${allow_upsample}"
done
